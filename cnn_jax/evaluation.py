"""`run.py eval` with a test protocol (protocols.py): a checkpoint, or an ensemble of them,
tested on the eval (validation) and test splits, sharded over the mesh as training is.

The input pipeline gives each image rescaled so its shorter side is Q, for every Q of
`eval.scales`, normalised as the run's training pipeline normalises (its mean and standard
deviation); the crops, flips and the dense pass are cut on the device, inside one compiled
call per batch (`Member.posteriors`). Where the dataset's images vary in size the whole image
at Q is its central Q x Q square (AlexNet Sec. 2 takes that square too; VGG's dense pass and
crop grid run over the whole rectangle, which this simplification leaves out). An FC-head
checkpoint is evaluated densely through its kernels reshaped to the conv head's
(models/fc_conv.py), on load.

Each result goes to `<workdir>/eval_<step>_<protocol>_<Q,...>[_ensemble<n>].json`, with every
component at every scale under `rows`; the defaults (center at the config's Q, no ensemble)
are the plain evaluation, written to `eval_<step>.json` as before.
"""

from __future__ import annotations

import functools
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tensorflow as tf
from flax import nnx

from cnn_jax import config, models, parallel, protocols
from cnn_jax import workdir as workdirs
from cnn_jax.data import preprocess
from cnn_jax.errors import ConfigError, UserError
from cnn_jax.models import fc_conv

IMAGE_KEYS = ("data.name", "data.folder", "data.test_folder", "data.eval_split",
              "data.test_split", "data.validation_fraction", "data.split_seed",
              "model.num_classes")  # what ensemble members must share: the same images


def default_scale(p, source_shape) -> int | None:
  """The Q the config's preprocessing tests at: data.preprocess.resize, the middle of
  scale_jitter (VGG Sec. 3.2), or the images' own shorter side (after padding); None where
  the images vary in size and nothing resizes them."""
  if p.resize:
    return int(p.resize)
  if p.scale_jitter:
    return (p.scale_jitter[0] + p.scale_jitter[1]) // 2
  shape = preprocess.precrop_shape(p, source_shape) if source_shape else None
  return min(shape) if shape else None


class Views:
  """uint8 images (B, h, w, C) -> {'q<Q>': float32 (B, h_Q, w_Q, C)}: each image with its
  shorter side resized to Q, for each Q, and normalised as the training pipeline does (the
  mean image resized with it). Images of one size give (h_Q, w_Q) the whole rescaled image;
  of varying sizes its central Q x Q square, one image at a time."""

  def __init__(self, prep: preprocess.Preprocessor, scales, source_shape):
    self.prep, self.scales = prep, tuple(int(q) for q in scales)
    fixed = source_shape is not None and None not in tuple(source_shape[:2])
    self.batched = fixed
    c = prep.c
    self.shapes = {}
    for q in self.scales:
      if fixed:
        p = ml_collections.ConfigDict({"pad": prep.p.pad, "resize": q, "scale_jitter": ()})
        self.shapes[f"q{q}"] = (*preprocess.precrop_shape(p, source_shape), c)
      else:
        self.shapes[f"q{q}"] = (q, q, c)

  def _one(self, images, q: int):
    prep, st = self.prep, self.prep.stats
    x = tf.cast(images, tf.float32) * prep.scale
    if prep.p.pad:
      x = tf.pad(x, [[0, 0], [prep.p.pad] * 2, [prep.p.pad] * 2, [0, 0]])
    x = preprocess.resize_shorter(x, q)
    h, w, _ = self.shapes[f"q{q}"]
    if not self.batched:
      x = tf.image.resize_with_crop_or_pad(x, h, w)
    if prep.mean_mode == "pixel":
      mean = tf.constant(st["mean_image"], tf.float32)
      if tuple(mean.shape[:2]) != (h, w):
        mean = tf.image.resize(mean[None], (h, w), method="bilinear", antialias=True)[0]
      x = x - mean
    elif prep.mean_mode == "channel":
      x = x - tf.constant(st["mean"], tf.float32)
    if prep.p.std == "channel":
      x = x / tf.constant(st["std"], tf.float32)
    x.set_shape([None, h, w, prep.c])
    return x

  def __call__(self, images):
    return {f"q{q}": self._one(images, q) for q in self.scales}


def member_config(path: str, cfg) -> ml_collections.ConfigDict:
  """The run config of the ensemble member trained in `path`, from its config.json, with this
  evaluation's `eval` group (and no ensemble of its own)."""
  recorded = workdirs.recorded_config(path)
  model = (recorded or {}).get("model", {})
  if "name" not in model or "variant" not in model:
    raise UserError(f"eval.ensemble: {path!r} has no readable config.json; name work "
                    "directories of runs trained with run.py train")
  out = config.base(model["name"], model["variant"])
  known = workdirs.flat_config(out)
  for key, value in workdirs.flat_config(recorded).items():
    if key not in known or key.startswith("eval."):
      continue
    *groups, last = key.split(".")
    node = out
    for g in groups:
      node = node[g]
    try:
      node[last] = tuple(value) if isinstance(value, list) else value
    except (TypeError, ValueError) as e:
      raise UserError(f"eval.ensemble: {path}/config.json has {key}={value!r}, which this "
                      f"version does not take ({e}); evaluate that run on its own") from None
  out.eval = ml_collections.ConfigDict(cfg.eval.to_dict())
  out.eval.ensemble = ()
  out.train.eval_batch_size = cfg.train.eval_batch_size
  mine, theirs = workdirs.flat_config(cfg), workdirs.flat_config(out)
  for key in IMAGE_KEYS:
    if mine.get(key) != theirs.get(key):
      raise UserError(f"eval.ensemble: {path} was trained with {key}={theirs.get(key)!r}, this "
                      f"run with {mine.get(key)!r}; an ensemble is tested on the same images: "
                      "name runs of the same dataset and splits")
  return config.validate(out)


class Member:
  """One checkpoint of the ensemble: its run (data pipeline, mesh, restored state) and its
  compiled posteriors step."""

  def __init__(self, cfg, workdir: str, which):
    from cnn_jax import train  # pylint: disable=g-import-not-at-top
    self.run = run = train.Run(cfg, workdir, mode="eval")
    self.workdir = workdir
    try:
      self.step = run.restore(which)
      if not self.step:
        raise train._no_checkpoint(workdir)  # pylint: disable=protected-access
      self._prepare(cfg)
    except BaseException:
      run.close()
      raise

  def _prepare(self, cfg) -> None:
    e, m, ds = cfg.eval, cfg.model, self.run.ds
    self.kinds = protocols.components(e.protocol)
    q0 = default_scale(cfg.data.preprocess, ds.source_shape)
    if e.scales or self.kinds != ("center",):
      if not (e.scales or q0):
        raise ConfigError(f"eval.protocol={e.protocol!r} needs a scale: {cfg.data.name} images "
                          "vary in size and data.preprocess.resize is 0; set eval.scales, "
                          f"e.g. '({max(m.input_shape[:2])},)'")
      scales = e.scales or (q0,)
      self.views = Views(ds.preprocessor, scales, ds.source_shape)
      self.keys = {str(q): f"q{q}" for q in scales}
    else:  # the pipeline's own evaluation: already the central crop at the config's Q
      self.views = None
      self.keys = {str(q0) if q0 else "native": "image"}
    self.labels = tuple(self.keys)
    abstract = models.view(models.abstract(m), train=False)
    graph = nnx.graphdef(abstract)
    state = self.run.state
    self.params, self.rest, self.dense_params, dense_graph = state.params, state.rest, (), None
    if "dense" in self.kinds:
      if m.head == "fc":  # VGG Sec. 3.2: the FC layers converted to convolutions, on load
        dense_cfg = fc_conv.conv_head_config(m)
        dense_graph, like, _ = nnx.split(models.view(models.abstract(dense_cfg), train=False),
                                         nnx.Param, ...)
        layout = parallel.Layout.of(cfg.mesh, self.run.mesh, like)
        with jax.set_mesh(self.run.mesh):
          self.dense_params = jax.jit(lambda p: fc_conv.fc_to_conv(p, like),
                                      out_shardings=layout.shardings(like))(state.params)
      else:  # 'conv' and 'gap' heads take any input size as they are
        dense_graph, self.dense_params = graph, state.params
    size = tuple(int(d) for d in m.input_shape[:2])
    self.posteriors = jax.jit(functools.partial(
        _posteriors, graph, dense_graph, self.kinds, tuple(self.keys.items()), size, e.grid))

  def batches(self, split: str):
    return self.run.ds.eval_batches(split, self.views)


def _posteriors(graph, dense_graph, kinds, keys, size, grid, params, rest, dense_params, batch):
  """{'kind@Q': (B, K)} for every protocol component and scale of one batch."""
  model = nnx.merge(graph, params, rest)
  dense = nnx.merge(dense_graph, dense_params, rest) if dense_graph is not None else None
  return {f"{kind}@{label}": protocols.posteriors(model, dense, batch[key], kind, size, grid)
          for kind in kinds for label, key in keys}


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _row_sums(protocol, labels, members, probs, label, mask):
  rows = protocols.combine(jax.tree.map(lambda p: p / members, probs), protocol, labels)
  return {name: protocols.sums(p, label, mask) for name, p in rows.items()}


def _split(members: list[Member], split: str, protocol: str) -> dict:
  """{row: {split_top1, split_top5, split_loss}} of the members' averaged posteriors."""
  first = members[0]
  totals = None
  for batches in zip(*(m.batches(split) for m in members)):
    if any(not np.array_equal(b["label"], batches[0]["label"]) for b in batches[1:]):
      raise UserError("eval.ensemble: the members' pipelines give different images (their "
                      "labels differ); name runs of the same dataset, splits and split seed")
    probs = None
    for m, b in zip(members, batches):
      g = parallel.global_batch(b, m.run.batch_sharding)
      p = m.posteriors(m.params, m.rest, m.dense_params, g)
      probs = p if probs is None else jax.tree.map(jnp.add, probs, p)
    # every device's views done before the sums' all-reduce: on a loaded CPU the simulated
    # devices' threads otherwise wait in it past XLA's 40 s rendezvous limit and abort
    jax.block_until_ready(probs)
    g = parallel.global_batch({k: batches[0][k] for k in ("label", "mask")},
                              first.run.batch_sharding)
    out = _row_sums(protocol, first.labels, len(members), probs, g["label"], g["mask"])
    totals = out if totals is None else jax.tree.map(jnp.add, totals, out)
  totals = jax.device_get(totals)
  result = {}
  for name, s in totals.items():
    n = max(float(s["count"]), 1.0)
    result[name] = {f"{split}_top1": float(s["top1"]) / n, f"{split}_top5": float(s["top5"]) / n,
                    f"{split}_loss": float(s["loss"]) / n}
  return result


def file_name(step: int, protocol: str, labels, members: int) -> str:
  return (f"eval_{step}_{protocol}_{'-'.join(labels)}"
          + (f"_ensemble{members}" if members > 1 else "") + ".json")


def evaluate(cfg, workdir: str, which="latest") -> dict:
  """Tests the checkpoint `which` ('latest', 'best' or a step) of `workdir`, with the members
  of `eval.ensemble` (each its 'latest' or 'best' as `which` says; a step number is the
  primary's), by `eval.protocol` at `eval.scales`; writes the result beside the run and returns
  it without its rows."""
  e = cfg.eval
  if protocols.is_default(e):
    from cnn_jax import train  # pylint: disable=g-import-not-at-top
    return train.evaluate(cfg, workdir, which)
  cfg = ml_collections.ConfigDict(cfg.to_dict())
  if e.batch_size:
    cfg.train.eval_batch_size = e.batch_size
  member_which = which if which in ("latest", "best") else "latest"
  plan = [(cfg, workdir, which)] + [(member_config(d, cfg), d, member_which)
                                    for d in e.ensemble]
  members = []
  try:
    for mcfg, d, w in plan:
      members.append(Member(mcfg, d, w))
    first = members[0]
    if any(m.labels != first.labels for m in members):
      raise UserError("eval.scales=() stands for each member's own Q, and they differ "
                      f"({[m.labels for m in members]}); set eval.scales")
    splits = ["eval"] + (["test"] if first.run.ds.has_test else [])
    rows = {}
    with jax.set_mesh(first.run.mesh):
      for split in splits:
        for name, metrics in _split(members, split, e.protocol).items():
          rows.setdefault(name, {}).update(metrics)
    main = rows[protocols.row(e.protocol, first.labels)]
    result = {"step": first.step, "protocol": e.protocol, "scales": list(first.labels),
              **main, "views_per_image": {k: protocols.views_per_image(k, e.grid)
                                          for k in first.kinds}}
    if len(members) > 1:
      result["ensemble"] = [{"workdir": m.workdir, "step": m.step} for m in members]
    path = os.path.join(workdir, file_name(first.step, e.protocol, first.labels, len(members)))
    if first.run.is_main:
      with open(path, "w") as f:
        json.dump({**result, "rows": rows}, f, indent=2)
    return {**result, "file": path}
  finally:
    for m in members:
      m.run.close()

