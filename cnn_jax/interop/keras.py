"""Keras's VGG16 and VGG19 (keras.applications) from a local `.h5` or `.keras` file.

Read with h5py alone (no Keras needed): a legacy `.h5` (a saved model's `model_weights/`
group, or a weights file such as keras.applications' downloaded
`vgg16_weights_tf_dim_ordering_tf_kernels.h5`, one group per layer name in the order of
its `layer_names` attribute), or Keras 3's `.keras` archive and `.weights.h5` (`layers/conv2d`,
`conv2d_1`, ..., `dense`, `dense_1`, ..., numbered in network order, `vars/0` the kernel and
`vars/1` the bias). Keras is channels-last like cnn_jax: kernels are already HWIO and
(in, out), and the flatten before fc1 is in NHWC order, so the layers copy as they are;
block<b>_conv<k> become conv<b>_<k>, fc1, fc2 and predictions become fc6, fc7, fc8.
"""

from __future__ import annotations

import io
import re
import zipfile

import numpy as np

from cnn_jax.errors import UserError, one_line
from cnn_jax.interop import Conv, Source

DEPTHS = {13: ("VGG16", "configs/vgg.py:D"), 16: ("VGG19", "configs/vgg.py:E")}


def _open(path: str):
  import h5py  # pylint: disable=g-import-not-at-top
  try:
    if path.endswith(".keras"):
      with zipfile.ZipFile(path) as z:
        return h5py.File(io.BytesIO(z.read("model.weights.h5")), "r")
    return h5py.File(path, "r")
  except Exception as e:  # noqa: BLE001 - not a Keras file
    raise UserError(f"model.init_from={path!r} is not a readable Keras file "
                    f"({one_line(e, 120)}); save the model with model.save(...)") from None


def _keras3(group) -> list[tuple[str, list[np.ndarray]]]:
  """[(kind, [kernel, bias])] of a Keras 3 weights file's top-level layers, in order."""
  def order(name):
    m = re.match(r"^(conv2d|dense)(?:_(\d+))?$", name)
    return (m[1], int(m[2] or 0)) if m else None
  named = sorted((order(n), n) for n in group if order(n))
  out = []
  for (kind, _), name in named:
    vars_ = group[name].get("vars", {})
    out.append((kind, [np.asarray(vars_[str(i)]) for i in range(len(vars_))]))
  return out


def _legacy(group) -> list[tuple[str, list[np.ndarray]]]:
  names = [n.decode() if isinstance(n, bytes) else n
           for n in group.attrs.get("layer_names", list(group))]
  out = []
  for name in names:
    arrays = {}
    group[name].visititems(lambda k, v: arrays.__setitem__(k, np.asarray(v))
                           if hasattr(v, "shape") else None)
    kernel = [v for k, v in arrays.items() if "kernel" in k.rsplit("/", 1)[-1]]
    bias = [v for k, v in arrays.items() if "bias" in k.rsplit("/", 1)[-1]]
    if kernel and kernel[0].ndim in (2, 4):
      out.append(("conv2d" if kernel[0].ndim == 4 else "dense", [kernel[0], *bias[:1]]))
  return out


def parse(path: str) -> Source:
  with _open(path) as f:
    if "layers" in f:
      layers = _keras3(f["layers"])
    else:
      layers = _legacy(f["model_weights"] if "model_weights" in f else f)
  convs = [Conv(w[0], w[1] if len(w) > 1 else np.zeros(w[0].shape[-1], np.float32))
           for kind, w in layers if kind == "conv2d"]
  denses = [(w[0], w[1] if len(w) > 1 else np.zeros(w[0].shape[-1], np.float32))
            for kind, w in layers if kind == "dense"]
  if not convs or not denses:
    raise UserError(f"model.init_from={path!r} holds no Keras Conv2D and Dense weights; "
                    "name a keras.applications VGG16 or VGG19 saved with model.save(...)")
  what, suggestion = DEPTHS.get(len(convs), (f"a network of {len(convs)} convolutions", ""))
  return Source(f"Keras {what}", convs, denses, None, suggestion)


def load(path: str, tgt) -> dict[str, np.ndarray]:
  from cnn_jax import interop  # pylint: disable=g-import-not-at-top
  return interop.onto(parse(path), tgt, path)
