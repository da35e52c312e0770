"""torchvision's AlexNet and VGG 11/13/16/19 (and _bn) from a local state_dict file (.pth).

torchvision names its layers by position: `features.<i>` (Conv2d, BatchNorm2d, ReLU,
MaxPool2d) and `classifier.<i>` (Dropout, Linear, ReLU), with an AdaptiveAvgPool2d between
them (6x6 for AlexNet, 7x7 for VGG). The convolutions in order become the model's (OIHW to
HWIO), each BatchNorm2d the `<conv>_bn` after it (weight, bias, running_mean, running_var to
scale, bias, mean, var; both use eps 1e-5), the Linear layers fc6, fc7, fc8 ((out, in) to
(in, out)). The first Linear reads the pooled map flattened channel-major (NCHW); its
kernel is rewritten for cnn_jax's NHWC flatten of the model's own last map, with the
adaptive pooling folded in, so the imported model gives torchvision's logits at any input
size the model accepts (at 224x224 the pooling is the identity).

torch is imported here only, when such a file is loaded (the `interop` extra).
"""

from __future__ import annotations

import re

import numpy as np

from cnn_jax.errors import UserError, one_line
from cnn_jax.interop import Conv, Source, adaptive_pool_matrix

VGG_DEPTHS = {8: ("vgg11", "A"), 10: ("vgg13", "B"), 13: ("vgg16", "D"), 16: ("vgg19", "E")}
KEY = re.compile(r"^(features|classifier)\.(\d+)\.(weight|bias|running_mean|running_var)$")


def read_state_dict(path: str) -> dict[str, np.ndarray]:
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise UserError(f"model.init_from={path!r}: reading a .pth needs PyTorch; "
                    "pip install -e '.[interop]'") from None
  try:
    sd = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as e:  # noqa: BLE001 - not a state_dict torch can read
    raise UserError(f"model.init_from={path!r} is not a readable PyTorch file "
                    f"({one_line(e, 120)}); save the model's state_dict() with torch.save")\
        from None
  for wrapper in ("state_dict", "model"):
    if isinstance(sd, dict) and isinstance(sd.get(wrapper), dict):
      sd = sd[wrapper]
  if not isinstance(sd, dict):
    raise UserError(f"model.init_from={path!r} holds a {type(sd).__name__}, not a state_dict; "
                    "save model.state_dict() with torch.save")
  return {k.removeprefix("module."): v.detach().cpu().numpy().astype(np.float32)
          for k, v in sd.items() if hasattr(v, "detach") and v.dtype.is_floating_point}


def parse(sd: dict[str, np.ndarray], path: str) -> Source:
  layers: dict[tuple[str, int], dict] = {}
  for key, value in sd.items():
    m = KEY.match(key)
    if m:
      layers.setdefault((m[1], int(m[2])), {})[m[3]] = value
  convs, denses, last = [], [], None
  for (part, _), p in sorted(layers.items()):
    w = p.get("weight")
    if part == "features" and w is not None and w.ndim == 4:
      last = Conv(w.transpose(2, 3, 1, 0), p.get("bias", np.zeros(w.shape[0], np.float32)))
      convs.append(last)
    elif part == "features" and "running_mean" in p and last is not None:
      last.bn = {"scale": p["weight"], "bias": p["bias"], "mean": p["running_mean"],
                 "var": p["running_var"]}
    elif part == "classifier" and w is not None and w.ndim == 2:
      denses.append((w.T, p["bias"]))
  if not convs or not denses:
    shown = ", ".join(sorted({k.split(".")[0] for k in sd})[:6])
    raise UserError(f"model.init_from={path!r} is not a torchvision AlexNet or VGG state_dict "
                    f"(no features.<i> and classifier.<i> layers; its keys start {shown}); "
                    "import another network's weights with model.init_from_rules from a "
                    ".npz")
  bn = "_bn" if any(c.bn for c in convs) else ""
  if len(convs) == 5 and convs[0].kernel.shape[0] == 11:
    what, suggestion, grid = "alexnet", "configs/alexnet.py:torchvision", 6
  elif len(convs) in VGG_DEPTHS:
    name, variant = VGG_DEPTHS[len(convs)]
    what, suggestion, grid = name + bn, f"configs/vgg.py:{variant}", 7
    if bn:
      suggestion += " with --config.model.norm=batchnorm"
  else:
    what, suggestion, grid = f"a network of {len(convs)} convolutions", "", 7
  return Source(f"torchvision {what}", convs, denses, _first_fc(grid), suggestion)


def _first_fc(grid: int):
  def convert(kernel: np.ndarray, fmap: tuple[int, int, int]) -> np.ndarray:
    """(C*grid*grid, out) rows in (c, i, j) order -> (H, W, C, out) for the model's map."""
    h, w, c = fmap
    if kernel.shape[0] != c * grid * grid:
      return kernel  # another width: transfer.py's shape check names both shapes
    k = kernel.reshape(c, grid, grid, kernel.shape[1]).astype(np.float64)
    ph, pw = adaptive_pool_matrix(h, grid), adaptive_pool_matrix(w, grid)
    return np.einsum("cijo,ih,jw->hwco", k, ph, pw).astype(np.float32)
  return convert


def load(path: str, tgt) -> dict[str, np.ndarray]:
  from cnn_jax import interop  # pylint: disable=g-import-not-at-top
  return interop.onto(parse(read_state_dict(path), path), tgt, path)
