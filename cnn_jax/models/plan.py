"""The execution plan: how a built network's layers are run, as a function of the model
config (`model.lowering`, `model.rewrites`), with the values of the layers applied one by one.

The layers (layers.py) and their order (sequential.py) are the papers'. The builder makes a
`Plan` from the config and gives it to the network, which runs its layers through it:

  - lowering 'xla' runs each layer as it is written (XLA's convolution, bias add and
    reduce_window): the fast route on GPUs and TPUs;
  - lowering 'cpu' runs convolutions and max-pooling through the CPU route's kernels
    (lowering.py, winograd.py) and, where its rewrites say, runs conv -> ReLU -> max-pool
    groups as one fused kernel (fusions.py);
  - 'auto' is 'cpu' on XLA's CPU backend and 'xla' elsewhere (`resolve`).

`model.rewrites` is 'all', 'none' or a comma-separated list of REWRITES (each described in
lowering.py, fusions.py and winograd.py), the CPU route's optional pieces;
`benchmarks/lowering_ab.py --rewrite=NAME` times the train step with one of them on and off.
A call that asks for the outputs of named layers (`model(x, taps=(...))`) gets the values the
layers give one by one: no group is fused across a tapped output (`Plan.groups`).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jax

from cnn_jax.errors import ConfigError
from cnn_jax.models import fusions as F
from cnn_jax.models import layers as L
from cnn_jax.models import lenet_layers as LL
from cnn_jax.models import lowering as K

LOWERINGS = ("auto", "xla", "cpu")
REWRITES = ("pool_first", "shallow_conv", "overlapping_pool", "relu_in_reduction",
            "whole_input_dot", "column_input_grad", "winograd")


def resolve(lowering: str) -> str:
  """'auto' -> 'cpu' on the CPU backend, 'xla' on GPU and TPU."""
  if lowering not in LOWERINGS:
    raise ValueError(f"unknown lowering {lowering!r}; use one of {LOWERINGS}")
  if lowering == "auto":
    return "cpu" if jax.default_backend() == "cpu" else "xla"
  return lowering


def parse_rewrites(value: str) -> tuple[str, ...]:
  """'all', 'none', or names from REWRITES separated by commas; sorted."""
  if value == "all":
    return tuple(sorted(REWRITES))
  if value in ("none", ""):
    return ()
  names = {n.strip() for n in value.split(",")}
  unknown = sorted(names - set(REWRITES))
  if unknown:
    raise ValueError(f"unknown rewrites {unknown}")
  return tuple(sorted(names))


def validate(m) -> None:
  """Checks the model config's `lowering` and `rewrites`; raises ConfigError naming the key."""
  if m.lowering not in LOWERINGS:
    raise ConfigError(f"model.lowering={m.lowering!r} is not allowed; use one of "
                      f"{list(LOWERINGS)}")
  rewrites = m.get("rewrites", "all")
  try:
    if not isinstance(rewrites, str):
      raise ValueError
    parse_rewrites(rewrites)
  except ValueError:
    raise ConfigError(f"model.rewrites={rewrites!r} is not allowed; use 'all', 'none' or "
                      f"names from {list(REWRITES)} separated by commas") from None


def from_config(m) -> "Plan":
  """The plan for the model config `m`: its lowering resolved, its rewrites parsed (none on
  the 'xla' route, which has no rewrites)."""
  route = resolve(m.lowering)
  rewrites = parse_rewrites(m.get("rewrites", "all")) if route == "cpu" else ()
  return Plan(route, rewrites)


LAYER, CONV_RELU_MAX_POOL = "layer", "conv_relu_max_pool"


@dataclasses.dataclass(frozen=True)
class Plan:
  """How layers run: `route` 'xla' or 'cpu' (resolved), and the CPU route's `rewrites`.

  Static (hashable): part of the network's graph definition, not of its state, so the
  parameters are the same under every plan, and a run may resume under another.
  """
  route: str = "xla"
  rewrites: tuple[str, ...] = ()

  @property
  def blocked_norm(self) -> bool:
    """Whether the gradient norm should be summed in blocks (optim.global_norm): on the CPU
    route."""
    return self.route == "cpu"

  def groups(self, layers: Sequence[tuple[str, object]], taps: Sequence[str] = ()):
    """[(kind, names)]: the layers in order, split into what runs as one piece; kind is
    LAYER (one layer) or CONV_RELU_MAX_POOL. A group's output is its last layer's; a layer
    named in `taps` is never inside a group, only at its end."""
    out, i = [], 0
    while i < len(layers):
      kind, size = self._fusion([layer for _, layer in layers[i:i + 3]],
                                [name for name, _ in layers[i:i + 3]], taps)
      out.append((kind, tuple(name for name, _ in layers[i:i + size])))
      i += size
    return out

  def _fusion(self, layers, names, taps) -> tuple[str, int]:
    """(kind, number of layers) of the group that starts with `layers[0]`."""
    if (self.route != "cpu" or "pool_first" not in self.rewrites or len(layers) < 3
        or names[0] in taps or names[1] in taps):
      return LAYER, 1
    conv, act, pool = layers
    if (isinstance(conv, L.Conv) and isinstance(act, L.Activation) and act.name == "relu"
        and isinstance(pool, L.Pool) and pool.kind == "max"):
      g = pool.geometry
      if F.pools_first(g.kernel, g.stride, g.padded, "overlapping_pool" in self.rewrites):
        return CONV_RELU_MAX_POOL, 3
    return LAYER, 1

  def __call__(self, layers: Sequence[tuple[str, object]], x, taps: Sequence[str] = ()):
    """(the last layer's output, {name: output} for the layers named in `taps`)."""
    by_name, tapped = dict(layers), {}
    for kind, names in self.groups(layers, taps):
      members = [by_name[n] for n in names]
      if kind == LAYER:
        x = self._layer(members[0], x)
      else:
        x = self._conv_relu_max_pool(members[0], members[2], x)
      if names[-1] in taps:
        tapped[names[-1]] = x
    return x, tapped

  def _layer(self, layer, x):
    """One layer: as written on the 'xla' route; on the 'cpu' route convolutions and
    max-pooling through lowering.py's kernels."""
    if self.route != "cpu":
      return layer(x)
    if isinstance(layer, (L.Conv, LL.PartialConv)):
      y, bias = self._conv(layer, x)
      if bias is None:
        return y
      # LeNet-5's C3 keeps autodiff's bias gradient: with the matrix product its step took
      # 1.04 of the time (benchmarks/before_after.py --cases=lenet5)
      return K.bias_add(y, bias) if isinstance(layer, L.Conv) else y + bias
    if isinstance(layer, L.Pool) and layer.kind == "max":
      g = layer.geometry
      return K.max_pool(x, g.kernel, g.stride, g.pads(x.shape[1:3]),
                        "overlapping_pool" in self.rewrites)
    return layer(x)

  def _conv(self, conv, x):
    """(the CPU route's convolution without its bias, the bias or None)."""
    x, kernel, bias = conv.operands(x)
    g = conv.geometry
    y = K.conv2d(x, kernel, g.stride, g.pads(x.shape[1:3]), conv.feature_group_count,
                 "whole_input_dot" in self.rewrites, "column_input_grad" in self.rewrites,
                 "winograd" in self.rewrites)
    return y, bias

  def _conv_relu_max_pool(self, conv, pool, x):
    """pool(relu(conv(x))) computed pool-first (fusions.max_pool_bias_relu), a shallow
    convolution inside the pooling (fusions.conv_max_pool_bias_relu)."""
    relu_in_reduction = "relu_in_reduction" in self.rewrites
    p = pool.geometry
    xc, kernel, bias = conv.operands(x)
    g = conv.geometry
    if ("shallow_conv" in self.rewrites and p.kernel == p.stride
        and F.shallow(kernel.shape, g.stride, conv.feature_group_count)):
      return F.conv_max_pool_bias_relu(xc, kernel, bias, g.pads(xc.shape[1:3]), p.kernel,
                                       relu_in_reduction)
    y, bias = self._conv(conv, x)
    return F.max_pool_bias_relu(y, bias, p.kernel, p.stride, relu_in_reduction)
