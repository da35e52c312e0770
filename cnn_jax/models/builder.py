"""From a family's spec table and the model config to an NNX `Sequential`.

Order of work: knobs transform the table (stem, pooling, normalisation, width), activations
and the head are added, then each layer is instantiated with its input shape, which the
previous layer's output gives (by `nnx.eval_shape`, so the shapes are the code's own). The
network runs its layers through the execution plan the config chooses (plan.py).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from cnn_jax.errors import ConfigError
from cnn_jax.models import knobs
from cnn_jax.models import layers as L
from cnn_jax.models import lenet_layers as LL
from cnn_jax.models import plan as plan_
from cnn_jax.models import spec as S
from cnn_jax.models.sequential import Sequential

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def layer_specs(family: S.Family, cfg) -> tuple[S.LayerSpec, ...]:
  """The full layer list after every knob in `cfg` (a model ConfigDict) is applied."""
  specs = family.features
  if cfg.stem == "stacked3x3":
    specs = knobs.stacked_stem(specs)
  specs = knobs.pooling(specs, cfg.pooling)
  specs = knobs.norm(specs, cfg.norm)
  specs, head = knobs.width(specs, family.head, cfg.width)
  activation = family.activation if cfg.activation == "paper" else cfg.activation
  if cfg.output != "paper":
    head = dataclasses.replace(head, output=cfg.output)
  specs = knobs.expand_features(specs, activation, batchnorm=cfg.norm == "batchnorm")
  specs += knobs.head_layers(head, cfg.head, cfg.num_classes, activation, cfg.dropout)
  if cfg.init != "paper":
    specs = tuple(_override_init(s, cfg.init) for s in specs)
  return specs


def _override_init(s, init: str):
  if isinstance(s, (S.ConvSpec, S.DenseSpec, S.PartialConvSpec)):
    return dataclasses.replace(s, kernel_init=init, bias_init="zeros")
  return s


def window(s: S.LayerSpec) -> L.Window | None:
  """A spec's spatial window (the geometry its layer will have), for finding the smallest
  input the table accepts."""
  if isinstance(s, S.ConvSpec) and s.kernel is not None:
    return L.Window.of(s.kernel, s.stride, s.padding)
  if isinstance(s, S.PartialConvSpec):
    return L.Window.of(s.kernel, 1, s.padding)
  if isinstance(s, (S.PoolSpec, S.SubsamplingSpec)):
    return L.Window.of(s.window, s.stride, getattr(s, "padding", "VALID"))
  return None


def smallest_input(windows) -> tuple[int, int]:
  """Smallest (H, W) for which every window in order has at least one output position."""
  need = [1, 1]
  for w in reversed([w for w in windows if isinstance(w, L.Window)]):
    for axis in range(2):
      k, st = w.kernel[axis], w.stride[axis]
      if w.padding == "SAME":
        need[axis] = (need[axis] - 1) * st + 1
      else:
        pad = 0 if w.padding == "VALID" else sum(w.padding[axis])
        need[axis] = max(1, (need[axis] - 1) * st + k - pad)
  return need[0], need[1]


def instantiate(s: S.LayerSpec, in_shape: tuple[int, ...], dtype, rngs: nnx.Rngs):
  """One spec to one NNX layer, given the shape (without batch) of its input."""
  channels = in_shape[-1]
  init = L.initializer
  if isinstance(s, S.ConvSpec):
    kernel = in_shape[:2] if s.kernel is None else s.kernel
    return L.Conv(channels, s.features, L.pair(kernel), L.pair(s.stride),
                  padding=L.explicit_padding(s.padding),
                  feature_group_count=s.groups, kernel_init=init(s.kernel_init),
                  bias_init=init(s.bias_init), dtype=dtype, rngs=rngs)
  if isinstance(s, S.PartialConvSpec):
    return LL.PartialConv(channels, s.table, s.kernel, padding=s.padding,
                          kernel_init=init(s.kernel_init), bias_init=init(s.bias_init),
                          dtype=dtype, rngs=rngs)
  if isinstance(s, S.SubsamplingSpec):
    return LL.Subsampling(channels, s.window, s.stride, init=init(s.init), dtype=dtype,
                          rngs=rngs)
  if isinstance(s, S.PoolSpec):
    return L.Pool(s.window, s.stride, s.kind, s.padding)
  if isinstance(s, S.LRNSpec):
    return L.LRN(s.size, s.k, s.alpha, s.beta, s.groups)
  if isinstance(s, S.DenseSpec):
    return L.Dense(channels, s.features, kernel_init=init(s.kernel_init),
                   bias_init=init(s.bias_init), dtype=dtype, rngs=rngs)
  if isinstance(s, S.RBFSpec):
    return LL.RBF(channels, s.features)
  if isinstance(s, S.ActSpec):
    return L.Activation(s.fn)
  if isinstance(s, S.BatchNormSpec):
    return L.BatchNorm(channels, momentum=0.9, epsilon=1e-5, dtype=dtype, rngs=rngs)
  if isinstance(s, S.DropoutSpec):
    return L.Dropout(s.rate, rngs=rngs)
  if isinstance(s, S.FlattenSpec):
    return L.Flatten()
  if isinstance(s, S.GlobalAvgPoolSpec):
    return L.GlobalAvgPool()
  raise TypeError(f"no layer for spec {s!r}")


def output_shape(layer: nnx.Module, in_shape: tuple[int, ...], dtype=jnp.float32):
  """The layer's output shape (without batch) for one input of `in_shape`, by tracing it."""
  x = jax.ShapeDtypeStruct((1, *in_shape), dtype)
  return tuple(nnx.eval_shape(lambda m, v: m(v), layer, x).shape[1:])


def assemble(family: S.Family, cfg, rngs: nnx.Rngs) -> Sequential:
  """Builds the network `family` describes, with the knobs of the model config `cfg`."""
  specs = layer_specs(family, cfg)
  shape = tuple(int(d) for d in cfg.input_shape)
  dtype = DTYPES[cfg.dtype]
  built = []
  for s in specs:
    layer = instantiate(s, shape, dtype, rngs)
    out = output_shape(layer, shape)
    if len(out) == 3 and min(out[:2]) < 1:
      h, w = smallest_input(window(t) for t in specs)
      raise ConfigError(
          f"model.input_shape={tuple(cfg.input_shape)} is too small for "
          f"{family.name} '{family.variant}': layer '{s.name}' gets a {shape[0]}x{shape[1]} map "
          f"and outputs nothing; use at least {h}x{w} (or a smaller stem/pooling)")
    built.append((s.name, layer))
    shape = out
  return Sequential(built, cfg.input_shape, family.name, family.variant,
                    plan=plan_.from_config(cfg))
