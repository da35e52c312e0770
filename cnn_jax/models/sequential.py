"""The one network class every family builds: named layers applied in order."""

from __future__ import annotations

from typing import Iterator

import jax.numpy as jnp
from flax import nnx

from cnn_jax.models import layers as L


class Sequential(nnx.Module):
  """Layers applied in order, each stored as an attribute under its own name.

  Parameter paths therefore read like the papers' layer names (`conv1/kernel`, `fc6/bias`),
  which is what sharding and freezing rules in the config match against.
  """

  def __init__(self, layers: list[tuple[str, nnx.Module]], input_shape: tuple[int, int, int],
               family: str, variant: str):
    self.layer_names = tuple(name for name, _ in layers)
    self.input_shape = tuple(int(d) for d in input_shape)
    self.family = family
    self.variant = variant
    for name, layer in layers:
      setattr(self, name, layer)

  def layers(self) -> Iterator[tuple[str, nnx.Module]]:
    for name in self.layer_names:
      yield name, getattr(self, name)

  def __call__(self, x):
    """x: images (N, H, W, C). Returns float32 logits (N, classes)."""
    layers = [layer for _, layer in self.layers()]
    i = 0
    while i < len(layers):
      if i + 2 < len(layers) and L.pools_first(*layers[i:i + 3]):  # the same values
        x = L.conv_relu_max_pool(layers[i], layers[i + 2], x)
        i += 3
      elif i + 1 < len(layers) and L.relu_as_reduction(*layers[i:i + 2]):
        x = L.conv_relu(layers[i], x)
        i += 2
      else:
        x = layers[i](x)
        i += 1
    return x.astype(jnp.float32)


def view(model: nnx.Module, *, train: bool) -> nnx.Module:
  """The model in training mode (dropout on, batch statistics from the batch) or evaluation
  mode, sharing its parameters (`nnx.view`)."""
  return nnx.view(model, deterministic=not train, use_running_average=not train,
                  raise_if_not_found=False)
