"""Parameters copied from a checkpoint or a weights file into a freshly initialised model.

VGG's own procedure for its deeper nets (Simonyan & Zisserman 2015, Sec. 3.1): "we began
with training the configuration A, shallow enough to be trained with random initialisation.
Then, when training deeper architectures, we initialised the first four convolutional layers
and the last three fully-connected layers with the layers of net A (the intermediate layers
were initialised randomly)". A's first four convolutions are conv1_1, conv2_1, conv3_1 and
conv3_2; B to E have layers of those names and shapes, so the copy is by name (`vgg_a`).

Config (the `model` group):
- `init_from`: the source. A work directory (its newest checkpoint), its `checkpoints/`
  folder or one step's folder; a `.npz` / `.safetensors` file (`python -m cnn_jax.export`);
  torchvision's AlexNet or VGG state_dict (`.pth`, interop/torchvision.py); Keras's VGG16 or
  VGG19 (`.h5`, `.keras`, interop/keras.py).
- `init_from_layers`: which of the model's parameters to take, by the same name: a preset
  (`vgg_a`; `all`; `backbone`, every layer but the classifier, the last weighted layer, which
  stays initialised: a new head for a new number of classes, timm's reset_classifier) or a
  regex over parameter paths (`conv1_1/kernel`). Every parameter it selects must be in the
  source.
- `init_from_rules`: instead, a tuple of `'src_regex=>dst'` rules over the source's paths
  (the first that matches a source path wins; `dst` as in re.sub, `\\1` included; without
  `=>` the path stays the same): `('conv(\\d)/=>conv\\1_1/',)`. Each rule must match at
  least one source parameter.
- `init_from_shapes`: `error` (a shape that does not fit stops the run, naming both shapes)
  or `skip` (that parameter keeps its initial value, with a warning).
Batch-norm statistics come with their layer. The optimiser starts fresh, as the paper's did.
"""

from __future__ import annotations

import os
import re

import jax
import numpy as np
from absl import logging

from cnn_jax import weights_io
from cnn_jax.errors import ConfigError, UserError

PRESETS = {"vgg_a": r"^(conv1_1|conv2_1|conv3_1|conv3_2|fc6|fc7|fc8)/", "all": r".",
           "backbone": None}  # backbone: every layer but the model's last weighted one
SHAPE_POLICIES = ("error", "skip")
TORCH, KERAS = (".pth", ".pt"), (".h5", ".keras")


def pattern(layers: str, head: str | None = None) -> str:
  """The regex of a preset or a regex; `backbone` needs the classifier's name `head`."""
  if layers == "backbone":
    return rf"^(?!{re.escape(head)}/)" if head else r"."
  return PRESETS.get(layers, layers)


def parse_rule(rule: str) -> tuple[re.Pattern, str | None]:
  src, arrow, dst = rule.partition("=>")
  try:
    return re.compile(src.strip()), (dst.strip() if arrow else None)
  except re.error as e:
    raise ConfigError(f"model.init_from_rules: {rule!r} is not 'src_regex=>dst' with a "
                      f"regular expression ({e})") from None


def validate(m) -> None:
  """The init_from keys of the model group (config.validate calls it)."""
  try:
    re.compile(pattern(m.init_from_layers))
  except re.error as e:
    raise ConfigError(f"model.init_from_layers={m.init_from_layers!r} is neither a preset "
                      f"({', '.join(PRESETS)}) nor a regular expression ({e})") from None
  rules = m.get("init_from_rules", ())
  if not isinstance(rules, (tuple, list)) or not all(isinstance(r, str) for r in rules):
    raise ConfigError(f"model.init_from_rules={rules!r} must be a tuple of 'src_regex=>dst' "
                      "strings, e.g. \"('conv1/=>conv1_1/',)\"")
  for rule in rules:
    parse_rule(rule)
  if m.get("init_from_shapes", "error") not in SHAPE_POLICIES:
    raise ConfigError(f"model.init_from_shapes={m.init_from_shapes!r} must be one of "
                      f"{', '.join(SHAPE_POLICIES)}")
  path = m.init_from
  if not path:
    return
  if os.path.isfile(path) and not path.endswith(TORCH + KERAS + weights_io.FILE_FORMATS):
    raise ConfigError(f"model.init_from={path!r} is a file of unknown kind; name a work "
                      "directory, or a .npz, .safetensors, .pth, .h5 or .keras file")
  if not os.path.exists(path):
    raise ConfigError(f"model.init_from={path!r} does not exist; name a work directory, "
                      "its checkpoints/ folder, one step's folder or a weights file")


def read(path: str, model_cfg=None) -> dict[str, np.ndarray]:
  """The source's parameters under the model's names (a foreign file is mapped onto the
  model of `model_cfg`)."""
  if os.path.isfile(path) and path.endswith(TORCH + KERAS):
    from cnn_jax import interop  # pylint: disable=g-import-not-at-top
    tgt = interop.target(model_cfg)
    if path.endswith(TORCH):
      from cnn_jax.interop import torchvision  # pylint: disable=g-import-not-at-top
      return torchvision.load(path, tgt)
    from cnn_jax.interop import keras  # pylint: disable=g-import-not-at-top
    return keras.load(path, tgt)
  if os.path.isfile(path):
    return weights_io.read_file(path)
  return weights_io.read_checkpoint(path)


source_params = read  # the name tests and studies know


def _names(tree) -> list[str]:
  return list(weights_io.flat(tree))


def plan(target: dict[str, tuple], source: dict[str, np.ndarray], model_cfg, head=None):
  """{target path: source array} of everything the config selects, and the skipped
  [(path, why)]; raises UserError for what the shape policy or a selection refuses."""
  where, policy = model_cfg.init_from, model_cfg.get("init_from_shapes", "error")
  chosen, skipped = {}, []
  rules = [parse_rule(r) for r in model_cfg.get("init_from_rules", ())]
  if rules:
    used = [0] * len(rules)
    for src in source:
      for i, (regex, dst) in enumerate(rules):
        if regex.search(src):
          used[i] += 1
          name = src if dst is None else regex.sub(dst, src, count=1)
          if name not in target:
            if policy == "error":
              raise UserError(f"model.init_from_rules: {model_cfg.init_from_rules[i]!r} maps "
                              f"{src} to {name}, which this model lacks; fix the rule or set "
                              "model.init_from_shapes=skip")
            skipped.append((name, "not in this model"))
          else:
            chosen[name] = source[src]
          break
    for i, n in enumerate(used):
      if not n:
        raise UserError(f"model.init_from_rules: {model_cfg.init_from_rules[i]!r} matches no "
                        f"parameter of {where} (it has {', '.join(weights_io.layer_names(source))}"
                        "); fix the rule")
  else:
    regex = re.compile(pattern(model_cfg.init_from_layers, head))
    for name in target:
      if not regex.search(name):
        continue
      if name not in source:
        raise UserError(f"model.init_from={where!r}: {name} is not in its checkpoint (it has "
                        f"{', '.join(weights_io.layer_names(source))}); use a "
                        "checkpoint of the right network or narrow model.init_from_layers")
      chosen[name] = source[name]
    if not chosen:
      raise UserError(f"model.init_from_layers={model_cfg.init_from_layers!r} matches no "
                      "parameter of this model")
  for name in list(chosen):
    if tuple(chosen[name].shape) != tuple(target[name]):
      if policy == "error":
        raise UserError(f"model.init_from={where!r}: {name} is {tuple(chosen[name].shape)} in "
                        f"its checkpoint but {tuple(target[name])} in this model; use a "
                        "checkpoint of the same width, narrow model.init_from_layers or set "
                        "model.init_from_shapes=skip")
      skipped.append((name, f"{tuple(chosen.pop(name).shape)} there, {tuple(target[name])} here"))
  if not chosen:
    raise UserError(f"model.init_from={where!r}: no parameter fits this model; check "
                    "model.init_from_rules, model.init_from_layers and the model's width")
  return chosen, skipped


def _replace(tree, chosen: dict[str, np.ndarray]):
  def one(path, value):
    names = [str(getattr(k, "key", k)) for k in path]
    name = "/".join(n for n in names if n not in ("value", ".value"))
    return jax.numpy.asarray(chosen[name], value.dtype) if name in chosen else value
  return jax.tree_util.tree_map_with_path(one, tree)


def head_of(model_cfg) -> str:
  """The model's classifier: its last weighted layer (fc8, output, fc2)."""
  from cnn_jax import inspect, models  # pylint: disable=g-import-not-at-top
  return [l.name for l in inspect.summarize(models.abstract(model_cfg)).layers if l.params][-1]


def initialise(model_cfg, params, rest=None):
  """(params, rest, the paths copied) with what the config selects taken from
  `model_cfg.init_from`; unchanged if that is ''."""
  if not model_cfg.init_from:
    return params, rest, []
  trees = {"params": params, "rest": rest if rest is not None else {}}
  target = {}
  for tree in trees.values():
    target.update({k: tuple(v.shape) for k, v in weights_io.flat(tree, as_array=False).items()})
  head = head_of(model_cfg) if model_cfg.init_from_layers == "backbone" else None
  chosen, skipped = plan(target, read(model_cfg.init_from, model_cfg), model_cfg, head)
  for name, why in skipped:
    logging.warning("model.init_from: %s skipped (%s); it keeps its initial value", name, why)
    print(f"warning: model.init_from: {name} skipped ({why}); it keeps its initial value",
          flush=True)
  out = {k: _replace(t, chosen) for k, t in trees.items()}
  return out["params"], (out["rest"] if rest is not None else None), sorted(chosen)
