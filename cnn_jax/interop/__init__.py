"""Weights from other frameworks mapped onto a cnn_jax model, layer by layer in order.

An importer (torchvision.py, keras.py) reads its file into a `Source`: the convolutions in
network order (kernels already HWIO, each with the batch norm that follows it, if any) and the
FC layers in order (kernels (in, out)), plus how the first FC layer reads the last feature
map. `onto` pairs them with the model's convolutions and Dense layers in order, converts the
first FC layer's kernel to cnn_jax's NHWC flatten, and names everything by the model's
parameter paths; transfer.py then copies what the config selects, under its shape policy.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from cnn_jax.errors import UserError

BN_KEYS = ("scale", "bias", "mean", "var")


@dataclasses.dataclass
class Target:
  """What an importer needs of the model: its weighted layers in order and their shapes."""
  description: str                  # "vgg 'D'"
  convs: list[str]                  # conv layer names in order (conv1_1, ...)
  denses: list[str]                 # Dense layer names in order (fc6, fc7, fc8)
  batchnorm: bool                   # whether every conv is followed by <conv>_bn
  kinds: set[str]                   # every layer kind (Conv, LRN, ...)
  shapes: dict[str, tuple]          # 'conv1_1/kernel' -> shape, batch-norm statistics too
  feature_map: tuple[int, int, int]  # (H, W, C) the first FC layer reads
  averaged: bool = False            # model.head=gap: the map averaged before the first FC


def target(model_cfg) -> Target:
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from cnn_jax import inspect, models, weights_io  # pylint: disable=g-import-not-at-top
  model = models.abstract(model_cfg)
  summary = inspect.summarize(model)
  shapes = {k: tuple(v.shape) for k, v in weights_io.flat(nnx.state(model), as_array=False)
            .items()}
  layers = summary.layers
  fc = lambda l: l.kind == "Dense" or (l.kind == "Conv" and l.name.startswith("fc"))
  convs = [l.name for l in layers if l.kind == "Conv" and not fc(l)]
  denses = [l.name for l in layers if fc(l)]
  first_fc = next((i for i, l in enumerate(layers) if fc(l)), len(layers))
  before = summary.input_shape
  for l in layers[:first_fc]:  # the last map before the FC layers (a flatten keeps it)
    if len(l.output_shape) == 3:
      before = l.output_shape
  return Target(f"{summary.model} '{summary.variant}'", convs, denses,
                any(l.kind == "BatchNorm" for l in layers), {l.kind for l in layers}, shapes,
                tuple(before), any(l.kind == "GlobalAvgPool" for l in layers[:first_fc]))


@dataclasses.dataclass
class Conv:
  kernel: np.ndarray            # (kh, kw, in, out)
  bias: np.ndarray
  bn: dict | None = None        # {'scale', 'bias', 'mean', 'var'} of the norm after it


@dataclasses.dataclass
class Source:
  """A foreign network's weights in network order."""
  what: str                     # "torchvision vgg16_bn", for messages
  convs: list[Conv]
  denses: list[tuple[np.ndarray, np.ndarray]]  # (kernel (in, out), bias)
  # The first FC layer's kernel, given the model's feature map (H, W, C), as a cnn_jax
  # kernel (H, W, C, out); None: its rows are already in NHWC flatten order.
  first_fc: Callable[[np.ndarray, tuple[int, int, int]], np.ndarray] | None = None
  suggestion: str = ""          # the cnn_jax config that matches, for messages


def onto(source: Source, tgt: Target, path: str) -> dict[str, np.ndarray]:
  """{cnn_jax parameter path: array} for every layer of `source`, converted to the model's
  layout; the shapes of the result are the source's (transfer.py compares them)."""
  fix = f"; use {source.suggestion}" if source.suggestion else ""
  if len(source.convs) != len(tgt.convs) or len(source.denses) != len(tgt.denses):
    raise UserError(
        f"model.init_from={path!r} holds {source.what} ({len(source.convs)} convolutions, "
        f"{len(source.denses)} FC layers) but {tgt.description} has {len(tgt.convs)} and "
        f"{len(tgt.denses)}{fix}")
  has_bn = any(c.bn for c in source.convs)
  if has_bn != tgt.batchnorm:
    raise UserError(
        f"model.init_from={path!r} holds {source.what}, "
        + ("with batch norm, but this model has none; add --config.model.norm=batchnorm"
           if has_bn else "without batch norm, but this model has it; use "
           "--config.model.norm=paper"))
  if tgt.averaged and source.first_fc is not None:
    raise UserError(f"model.init_from={path!r} holds {source.what}, whose first FC layer "
                    "reads the whole feature map, but this model averages it first; use "
                    "--config.model.head=fc (or conv)")
  if "LRN" in tgt.kinds:
    raise UserError(f"model.init_from={path!r} holds {source.what}, which has no local "
                    "response normalisation, but this model has; use --config.model.norm="
                    "none (or paper for torchvision's AlexNet config)")
  out = {}
  for name, conv in zip(tgt.convs, source.convs):
    out[f"{name}/kernel"], out[f"{name}/bias"] = conv.kernel, conv.bias
    for key in BN_KEYS if conv.bn else ():
      out[f"{name}_bn/{key}"] = conv.bn[key]
  for i, (name, (kernel, bias)) in enumerate(zip(tgt.denses, source.denses)):
    want = tgt.shapes.get(f"{name}/kernel", kernel.shape)
    if i == 0 and source.first_fc is not None:
      kernel = source.first_fc(kernel, tuple(want[:3]) if len(want) == 4 else tgt.feature_map)
    out[f"{name}/kernel"] = _as(kernel, want)
    out[f"{name}/bias"] = bias
  return {k: np.asarray(v, np.float32) for k, v in out.items()}


def _as(kernel: np.ndarray, want: tuple) -> np.ndarray:
  """`kernel` in the model's shape where it is the same numbers (a flatten (H*W*C, out) and
  a conv head's (H, W, C, out), a 1x1 conv's (1, 1, in, out) and (in, out))."""
  if kernel.size == int(np.prod(want)) and kernel.shape[-1] == want[-1]:
    return kernel.reshape(want)
  return kernel.reshape(-1, kernel.shape[-1]) if kernel.ndim == 4 and len(want) == 2 else kernel


def adaptive_pool_matrix(size: int, out: int) -> np.ndarray:
  """(out, size): PyTorch's adaptive average pooling along one axis as a matrix (bin i
  averages floor(i*size/out) to ceil((i+1)*size/out))."""
  m = np.zeros((out, size), np.float64)
  for i in range(out):
    lo, hi = (i * size) // out, -((-(i + 1) * size) // out)
    m[i, lo:hi] = 1.0 / (hi - lo)
  return m
