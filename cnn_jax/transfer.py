"""Parameters copied from another run's checkpoint into a freshly initialised model.

VGG's own procedure for its deeper nets (Simonyan & Zisserman 2015, Sec. 3.1): "we began
with training the configuration A, shallow enough to be trained with random initialisation.
Then, when training deeper architectures, we initialised the first four convolutional layers
and the last three fully-connected layers with the layers of net A (the intermediate layers
were initialised randomly)". A's first four convolutions are conv1_1, conv2_1, conv3_1 and
conv3_2; B to E have layers of those names and shapes, so the copy is by name (`vgg_a`).

Config: `model.init_from` names the source: a work directory (its newest checkpoint), its
`checkpoints/` folder, or one step's folder; `model.init_from_layers` is a preset name
(`vgg_a`) or a regex over parameter paths (`conv1_1/kernel`). Every parameter it matches
must exist in the source with the same shape, else one line names both; the others keep
their initial values. The optimiser starts fresh, as the paper's did.
"""

from __future__ import annotations

import os
import re

import jax
import numpy as np

from cnn_jax.errors import UserError

PRESETS = {"vgg_a": r"^(conv1_1|conv2_1|conv3_1|conv3_2|fc6|fc7|fc8)/"}


def pattern(layers: str) -> str:
  return PRESETS.get(layers, layers)


def _step_dir(path: str) -> str:
  """The newest complete step folder of a work directory or checkpoints folder, or `path`
  itself if it is one step's folder."""
  if os.path.isdir(os.path.join(path, "state")):
    return path
  folder = os.path.join(path, "checkpoints") if os.path.isdir(
      os.path.join(path, "checkpoints")) else path
  steps = sorted((int(d) for d in os.listdir(folder) if d.isdigit()), reverse=True) \
      if os.path.isdir(folder) else []
  if not steps:
    raise UserError(f"model.init_from={path!r} holds no checkpoint; name a work directory, "
                    "its checkpoints/ folder or one step's folder")
  return os.path.join(folder, str(steps[0]))


def source_params(path: str) -> dict[str, np.ndarray]:
  """{'conv1_1/kernel': array, ...}: the parameters saved in the checkpoint at `path`."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  step = _step_dir(path)
  try:
    state = ocp.StandardCheckpointer().restore(os.path.join(step, "state"))
  except Exception as e:  # noqa: BLE001 - whatever the reason, it cannot be read
    raise UserError(f"model.init_from={path!r}: the checkpoint {step} is unreadable "
                    f"({type(e).__name__}); name another one") from None
  flat = {}
  for keys, value in jax.tree_util.tree_flatten_with_path(state.get("params", {}))[0]:
    names = [str(getattr(k, "key", k)) for k in keys]
    flat["/".join(names[:-1] if names[-1] == "value" else names)] = np.asarray(value)
  return flat


def copy_into(params, source: dict[str, np.ndarray], regex: str, where: str):
  """`params` (an nnx.State) with every parameter whose path matches `regex` replaced by the
  source's; returns (params, the paths copied)."""
  compiled, copied = re.compile(regex), []

  def one(path, value):
    name = "/".join(str(k.key) for k in path if isinstance(k, jax.tree_util.DictKey))
    if not compiled.search(name):
      return value
    if name not in source:
      raise UserError(f"model.init_from={where!r}: {name} is not in its checkpoint (it has "
                      f"{', '.join(sorted({k.split('/')[0] for k in source}))}); use a "
                      "checkpoint of the right network or narrow model.init_from_layers")
    if tuple(source[name].shape) != tuple(value.shape):
      raise UserError(f"model.init_from={where!r}: {name} is {tuple(source[name].shape)} in "
                      f"its checkpoint but {tuple(value.shape)} in this model; use a "
                      "checkpoint of the same width, or narrow model.init_from_layers")
    copied.append(name)
    return jax.numpy.asarray(source[name], value.dtype)

  params = jax.tree_util.tree_map_with_path(one, params)
  if not copied:
    raise UserError(f"model.init_from_layers={regex!r} matches no parameter of this model")
  return params, copied


def initialise(model_cfg, params):
  """`params` with the layers `model_cfg.init_from_layers` names taken from
  `model_cfg.init_from`; unchanged if that is ''."""
  if not model_cfg.init_from:
    return params, []
  return copy_into(params, source_params(model_cfg.init_from), pattern(model_cfg.init_from_layers),
                   model_cfg.init_from)
