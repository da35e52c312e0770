"""Per-layer shapes, parameters, multiply-accumulates and receptive fields, from the model.

Everything here is read off a built `Sequential` (an abstract one from `models.abstract` costs no
memory): output shapes by tracing each layer, parameters by counting its `nnx.Param` leaves,
MACs by each layer's own `macs`, and the receptive field and effective stride by composing the
layers' windows (Araujo, Norris and Sim 2019, "Computing receptive fields of convolutional
neural networks", Eqs. 1-2: r_out = r_in + (k - 1) j_in, j_out = j_in s). Receptive fields
count padding, as theirs do.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import nnx

from cnn_jax import models
from cnn_jax.models import builder
from cnn_jax.models import layers as L


@dataclasses.dataclass(frozen=True)
class LayerInfo:
  name: str
  kind: str
  output_shape: tuple[int, ...]
  params: int
  macs: int
  receptive_field: tuple[int, int]
  effective_stride: tuple[int, int]


@dataclasses.dataclass(frozen=True)
class Summary:
  model: str
  variant: str
  input_shape: tuple[int, int, int]
  params: int
  macs: int
  constants: int  # non-trainable scalars (batch-norm statistics, LeNet's RBF codes)
  smallest_input: tuple[int, int]
  layers: tuple[LayerInfo, ...]

  def to_json(self) -> dict:
    d = dataclasses.asdict(self)
    return d


def summarize(model: models.Sequential, input_shape=None) -> Summary:
  """The table for `model` applied to one image of `input_shape` (default: its build size)."""
  shape = tuple(input_shape or model.input_shape)
  rf, jump = [1, 1], [1, 1]
  rows = []
  for name, layer in model.layers():
    out = builder.output_shape(layer, shape)
    geometry = layer.geometry
    if isinstance(geometry, L.Window):
      for a in range(2):
        rf[a] += (geometry.kernel[a] - 1) * jump[a]
        jump[a] *= geometry.stride[a]
    elif geometry == L.GLOBAL and len(shape) == 3:  # sees every position of its input
      for a in range(2):
        rf[a] += (shape[a] - 1) * jump[a]
        jump[a] *= shape[a]
    macs = layer.macs(out) if hasattr(layer, "macs") else 0
    rows.append(LayerInfo(name, type(layer).__name__, out, L.weight_count(layer), int(macs),
                          tuple(rf), tuple(jump)))
    shape = out
  return Summary(
      model=model.family, variant=model.variant, input_shape=tuple(input_shape or
                                                                   model.input_shape),
      params=sum(r.params for r in rows), macs=sum(r.macs for r in rows),
      constants=L.weight_count(model, nnx.Not(nnx.Param)) - _rng_scalars(model),
      smallest_input=builder.smallest_input(layer.geometry for _, layer in model.layers()),
      layers=tuple(rows))


def _rng_scalars(model) -> int:
  """Scalars held by RNG streams (keys and counters), which are not model constants."""
  leaves = jax.tree.leaves(nnx.state(model, nnx.RngState))
  return int(sum(math.prod(x.shape) for x in leaves))


def human(n: int) -> str:
  """7609090048 -> '7.609G'."""
  for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
    if n >= scale:
      return f"{n / scale:.3f}{unit}"
  return str(n)


def _hw(v) -> str:
  return str(v[0]) if v[0] == v[1] else f"{v[0]}x{v[1]}"


def format_table(s: Summary) -> str:
  """The summary as an aligned text table with totals."""
  header = ("layer", "kind", "output", "params", "MACs", "RF", "stride")
  body = [(r.name, r.kind, "x".join(map(str, r.output_shape)), f"{r.params:,}", human(r.macs),
           _hw(r.receptive_field), _hw(r.effective_stride)) for r in s.layers]
  total = ("total", "", "", f"{s.params:,}", human(s.macs), "", "")
  widths = [max(len(row[i]) for row in [header, *body, total]) for i in range(len(header))]
  right = {3, 4, 5, 6}

  def line(row):
    return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                     for i, (c, w) in enumerate(zip(row, widths)))

  rule = "-" * len(line(header))
  lines = [f"{s.model} '{s.variant}' at {'x'.join(map(str, s.input_shape))}", line(header), rule,
           *map(line, body), rule, line(total),
           f"params {s.params:,} trainable, {s.constants:,} non-trainable; "
           f"MACs {s.macs:,} per image; smallest input {s.smallest_input[0]}x"
           f"{s.smallest_input[1]}"]
  return "\n".join(lines)


def xla_flops(layer, input_shape, dtype=jnp.float32) -> float:
  """XLA's own count of floating-point operations for one image through `layer`."""
  graphdef, state = nnx.split(layer)

  def apply(state, x):
    return nnx.merge(graphdef, state)(x)

  x = jax.ShapeDtypeStruct((1, *input_shape), dtype)
  cost = jax.jit(apply).lower(state, x).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost.get("flops", 0.0))
