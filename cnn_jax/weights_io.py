"""Flat parameter dictionaries, {'conv1_1/kernel': array, ...}, read from and written to disk.

The names are the model's own parameter paths, which are the papers' layer names (AlexNet's
conv1 ... fc8, VGG's conv1_1 ... conv5_4, fc6 ... fc8; a batch-normalised layer's statistics
are `<conv>_bn/mean` and `<conv>_bn/var`); dropout's random streams are left out.

Read: a cnn_jax checkpoint (a work directory, its checkpoints/ folder, or one step's folder),
or a file this module wrote (`.npz`, `.safetensors`). Write: `.npz` (numpy alone) or
`.safetensors` (the `safetensors` package, in the `interop` extra), written to a temporary
name first, so a failure leaves nothing behind.
"""

from __future__ import annotations

import os
import re

import jax
import numpy as np

from cnn_jax.errors import UserError, one_line

FILE_FORMATS = (".npz", ".safetensors")


def step_dir(path: str, key: str = "model.init_from") -> str:
  """The newest complete step folder of a work directory or checkpoints folder, or `path`
  itself if it is one step's folder."""
  if not os.path.exists(path):
    raise UserError(f"{key}={path!r} does not exist; name a work directory, its "
                    "checkpoints/ folder, one step's folder or a weights file")
  if os.path.isdir(os.path.join(path, "state")):
    return path
  folder = os.path.join(path, "checkpoints") if os.path.isdir(
      os.path.join(path, "checkpoints")) else path
  steps = sorted((int(d) for d in os.listdir(folder) if d.isdigit()), reverse=True) \
      if os.path.isdir(folder) else []
  if not steps:
    raise UserError(f"{key}={path!r} holds no checkpoint; name a work directory, "
                    "its checkpoints/ folder or one step's folder")
  return os.path.join(folder, str(steps[0]))


def flat(tree, as_array: bool = True) -> dict[str, np.ndarray]:
  """{'conv1/kernel': array}: the leaves of a (restored or live) params/rest tree by path,
  without dropout's RNG streams."""
  out = {}
  for keys, value in jax.tree_util.tree_flatten_with_path(tree)[0]:
    names = [str(getattr(k, "key", getattr(k, "name", k))) for k in keys]
    names = [n for n in names if n not in ("value", ".value")]
    if "rngs" in names:
      continue
    out["/".join(names)] = np.asarray(value) if as_array else value
  return out


def read_checkpoint(path: str, key: str = "model.init_from") -> dict[str, np.ndarray]:
  """The parameters and batch-norm statistics saved in the checkpoint at `path`."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  step = step_dir(path, key)
  try:
    state = ocp.StandardCheckpointer().restore(os.path.abspath(os.path.join(step, "state")))
  except Exception as e:  # noqa: BLE001 - whatever the reason, it cannot be read
    raise UserError(f"{key}={path!r}: the checkpoint {step} is unreadable "
                    f"({one_line(e, 120)}); name another one") from None
  out = flat(state.get("params", {}))
  stats = flat(state.get("rest", {}))
  out.update({k: v for k, v in stats.items() if v.dtype.kind == "f"})
  return out


def read_file(path: str, key: str = "model.init_from") -> dict[str, np.ndarray]:
  """The arrays of a `.npz` or `.safetensors` file written by `write`."""
  try:
    if path.endswith(".safetensors"):
      from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
      return dict(load_file(path))
    with np.load(path, allow_pickle=False) as f:
      return {k: f[k] for k in f.files}
  except ImportError:
    raise UserError(f"{key}={path!r}: reading .safetensors needs the safetensors package; "
                    "pip install -e '.[interop]'") from None
  except Exception as e:  # noqa: BLE001 - not a readable file of that format
    raise UserError(f"{key}={path!r} is not a readable {os.path.splitext(path)[1]} file "
                    f"({one_line(e, 120)}); name a file written by python -m cnn_jax.export")\
        from None


def write(params: dict[str, np.ndarray], out: str) -> None:
  """`params` to `out` (.npz or .safetensors), atomically."""
  ext = os.path.splitext(out)[1]
  if ext not in FILE_FORMATS:
    raise UserError(f"--out={out!r} must end in {' or '.join(FILE_FORMATS)}")
  folder = os.path.dirname(os.path.abspath(out))
  if not os.path.isdir(folder):
    raise UserError(f"--out={out!r}: the folder {folder} does not exist; create it first")
  arrays = {k: np.ascontiguousarray(v) for k, v in params.items()}
  tmp = os.path.join(folder, f".{os.path.basename(out)}.tmp{os.getpid()}{ext}")
  try:
    if ext == ".safetensors":
      try:
        from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
      except ImportError:
        raise UserError("writing .safetensors needs the safetensors package; "
                        "pip install -e '.[interop]', or write .npz") from None
      save_file(arrays, tmp)
    else:
      with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, out)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def layer_names(params: dict) -> list[str]:
  """The layers of a flat dictionary, in the order their names sort naturally (conv2 before
  conv10)."""
  natural = lambda s: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]
  return sorted({k.rsplit("/", 1)[0] for k in params}, key=natural)
