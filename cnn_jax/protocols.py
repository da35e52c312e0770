"""The papers' test protocols, as pure functions of a model and a batch of whole images, and
the `eval` config group that chooses one (run by `evaluation.py`).

  center      the shorter side resized to Q, one central crop (the training pipeline's own
              evaluation at the config's Q).
  ten_crop    AlexNet Sec. 4.1: "the four corner patches and the center patch as well as their
              horizontal reflections (hence ten patches in all), and averaging the predictions
              made by the network's softmax layer on the ten patches".
  multi_crop  VGG Sec. 3.2 and 4.3: a regular grid of crops (`eval.grid` x `eval.grid`, 5 x 5)
              and their flips, 50 per scale, softmax averaged.
  dense       VGG Sec. 3.2: the FC layers as convolutions (models/fc_conv.py) over the whole
              image rescaled to Q; "the class score map is spatially averaged (sum-pooled)"
              (the conv head's `score_average`), and the soft-max posteriors of the image and
              its horizontal flip are averaged.
  dense+multi_crop   VGG Table 5: the two protocols' posteriors averaged.

With several scales (`eval.scales`, VGG Table 4: Q in {S-32, S, S+32} or {256, 384, 512}) the
posteriors are averaged over the scales; with an ensemble (`eval.ensemble`, Table 6, and
AlexNet's averaged CNNs) over the checkpoints. The views of one batch (all crops, or an image
and its flip) are stacked on the batch axis and go through the network in one call.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import ml_collections

from cnn_jax import schema
from cnn_jax.errors import ConfigError

KINDS = ("center", "ten_crop", "multi_crop", "dense")
PROTOCOLS = (*KINDS, "dense+multi_crop")
FLIPPED = {"center": False, "ten_crop": True, "multi_crop": True}


def defaults() -> ml_collections.ConfigDict:
  """The `eval` group: how `run.py eval` tests a checkpoint (training always evaluates
  `center` at the config's Q)."""
  return ml_collections.ConfigDict({
      "protocol": "center",  # center | ten_crop | multi_crop | dense | dense+multi_crop
      "scales": (),          # the test scales Q (shorter side); () = the config's own
                             # (data.preprocess.resize, the middle of scale_jitter, or the
                             # images' size)
      "grid": 5,             # multi_crop: a grid x grid of crops per scale (VGG: 5)
      "ensemble": (),        # other work directories whose softmax outputs are averaged in
      "batch_size": 0,       # images per call; 0 = train.eval_batch_size
  })


RULES = {
    "protocol": schema.Choice(PROTOCOLS),
    "grid": schema.at_least(1, "VGG Sec. 4.3: 5", integer=True),
    "batch_size": schema.at_least(0, "0 = train.eval_batch_size", integer=True),
}


def is_default(e) -> bool:
  """Whether the `eval` group asks for nothing but today's evaluation (center at the config's
  Q, one checkpoint)."""
  return e.protocol == "center" and not e.scales and not e.ensemble


def validate(cfg) -> None:
  """Checks the `eval` group of the run config `cfg` against its model; raises ConfigError
  naming the key and the fix."""
  e = cfg.eval
  schema.check_keys(e, defaults(), "eval.")
  schema.check("eval.", e, RULES)
  h, w = cfg.model.input_shape[:2]
  side = max(h, w)
  s = e.scales
  if not isinstance(s, tuple) or not all(isinstance(q, int) and not isinstance(q, bool)
                                         for q in s):
    raise ConfigError(f"eval.scales={s!r} must be a tuple of ints, e.g. '({side}, "
                      f"{side * 3 // 2})'; () for the config's own")
  small = [q for q in s if q < side]
  if small:
    raise ConfigError(f"eval.scales={s!r}: Q={small[0]} is smaller than the model's {h}x{w} "
                      f"input; use scales of at least {side}")
  if len(set(s)) != len(s):
    raise ConfigError(f"eval.scales={s!r} repeats a scale; give each once")
  if not isinstance(e.ensemble, tuple) or not all(isinstance(d, str) for d in e.ensemble):
    raise ConfigError(f"eval.ensemble={e.ensemble!r} must be a tuple of work directories, e.g. "
                      "\"('workdirs/vgg_d', 'workdirs/vgg_e')\"")
  for d in e.ensemble:
    checkpoints = os.path.join(d, "checkpoints")
    if not os.path.isdir(d):
      raise ConfigError(f"eval.ensemble: {d!r} does not exist; name the work directories of "
                        "trained runs")
    if not (os.path.isdir(checkpoints) and any(x.isdigit() for x in os.listdir(checkpoints))):
      raise ConfigError(f"eval.ensemble: {d!r} holds no checkpoint (no {checkpoints}/<step>); "
                        "train it first, or leave it out")


def components(protocol: str) -> tuple[str, ...]:
  return tuple(protocol.split("+"))


def row(kind: str, labels) -> str:
  """A result's name: 'dense Q=256,384,512'."""
  return f"{kind} Q={','.join(str(q) for q in labels)}"


# -- the views of a batch ----------------------------------------------------------------------
def crop_offsets(kind: str, hw, size, grid: int = 5) -> list[tuple[int, int]]:
  """(top, left) of each crop of `size` (H, W) in an image of `hw` (h, w), unflipped:
  'center' one; 'ten_crop' the four corners then the centre (AlexNet Sec. 4.1); 'multi_crop'
  a grid x grid of evenly spaced crops from corner to corner, row by row (VGG Sec. 4.3)."""
  (h, w), (ch, cw) = hw, size
  dy, dx = h - ch, w - cw
  if dy < 0 or dx < 0:
    raise ValueError(f"a {h}x{w} image is smaller than the {ch}x{cw} crop")
  if kind == "center":
    return [(dy // 2, dx // 2)]
  if kind == "ten_crop":
    return [(0, 0), (0, dx), (dy, 0), (dy, dx), (dy // 2, dx // 2)]
  if kind == "multi_crop":
    spaced = (lambda d: [i * d // (grid - 1) for i in range(grid)]) if grid > 1 else (
        lambda d: [d // 2])
    return [(y, x) for y in spaced(dy) for x in spaced(dx)]
  raise ValueError(f"no crops for {kind!r}")


def views_per_image(kind: str, grid: int = 5) -> int:
  return {"center": 1, "ten_crop": 10, "multi_crop": 2 * grid * grid, "dense": 2}[kind]


def crops(x, kind: str, size, grid: int = 5):
  """(B, V, H, W, C): the crops of `kind` of every image in `x` (B, h, w, C), then (ten_crop,
  multi_crop) the same crops mirrored, in that order. The views are stacked behind the batch
  axis, so a batch split over devices stays split, each device cutting its own images'."""
  ch, cw = size
  out = [x[:, y:y + ch, c:c + cw] for y, c in crop_offsets(kind, x.shape[1:3], size, grid)]
  if FLIPPED[kind]:
    out += [v[:, :, ::-1] for v in out]
  return jnp.stack(out, axis=1)


def mean_softmax(model, views):
  """The softmax of `model` on every view (B, V, ...), averaged over the V views: (B, K). The
  B x V views go through the network as one batch."""
  b, v = views.shape[:2]
  logits = model(views.reshape(b * v, *views.shape[2:]))
  return jax.nn.softmax(logits.astype(jnp.float32), axis=-1).reshape(b, v, -1).mean(1)


def dense_views(x, flip: bool = True):
  """(B, V, h, w, C): the whole images and (with `flip`) their mirror images."""
  return jnp.stack([x, x[:, :, ::-1]], axis=1) if flip else x[:, None]


def posteriors(model, dense_model, x, kind: str, size, grid: int = 5):
  """(B, K): protocol `kind`'s averaged softmax for the images `x` (B, h, w, C), rescaled and
  normalised; `dense_model` is the network with its FC layers as convolutions (for 'dense')."""
  if kind == "dense":
    return mean_softmax(dense_model, dense_views(x))
  return mean_softmax(model, crops(x, kind, size, grid))


def combine(probs: dict, protocol: str, labels) -> dict:
  """{row name: (B, K)}: each component of `protocol` at each scale (probs' keys are
  'kind@label'), averaged over the scales, and (dense+multi_crop) the components averaged."""
  out = {}
  for kind in components(protocol):
    for q in labels:
      out[row(kind, [q])] = probs[f"{kind}@{q}"]
    out[row(kind, labels)] = sum(probs[f"{kind}@{q}"] for q in labels) / len(labels)
  if len(components(protocol)) > 1:
    out[row(protocol, labels)] = sum(out[row(k, labels)] for k in components(protocol)) / len(
        components(protocol))
  return out


def sums(p, labels, mask) -> dict:
  """Sums over the real examples of the averaged posterior `p` (B, K): the label among the
  top 1 and top 5, its negative log-probability, and the count."""
  from cnn_jax.steps import topk_correct  # pylint: disable=g-import-not-at-top
  picked = jnp.take_along_axis(p, labels[:, None], axis=-1)[:, 0]
  return {"loss": jnp.sum(-jnp.log(jnp.maximum(picked, 1e-30)) * mask),
          "top1": jnp.sum(topk_correct(p, labels, 1) * mask),
          "top5": jnp.sum(topk_correct(p, labels, 5) * mask), "count": jnp.sum(mask)}
