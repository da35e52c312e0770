"""The one network class every family builds: named layers applied in order."""

from __future__ import annotations

from typing import Iterator, Sequence

import jax.numpy as jnp
from flax import nnx


class Sequential(nnx.Module):
  """Layers applied in order, each stored as an attribute under its own name.

  Parameter paths therefore read like the papers' layer names (`conv1/kernel`, `fc6/bias`),
  which is what sharding and freezing rules in the config match against.

  `plan` says how the layers are executed (models/plan.py, chosen by the builder from the
  model config); the values are those of the layers applied one by one. Without a plan they
  are applied one by one.
  """

  def __init__(self, layers: list[tuple[str, nnx.Module]], input_shape: tuple[int, int, int],
               family: str, variant: str, plan=None):
    self.layer_names = tuple(name for name, _ in layers)
    self.input_shape = tuple(int(d) for d in input_shape)
    self.family = family
    self.variant = variant
    self.plan = plan
    for name, layer in layers:
      setattr(self, name, layer)

  def layers(self) -> Iterator[tuple[str, nnx.Module]]:
    for name in self.layer_names:
      yield name, getattr(self, name)

  def __call__(self, x, taps: Sequence[str] = ()):
    """x: images (N, H, W, C). Returns float32 logits (N, classes).

    With `taps` (layer names, e.g. ("conv3", "conv3_relu")), returns (logits, {name: that
    layer's output}), in the compute dtype, as the layers applied one by one give them (like
    timm's `features_only`).
    """
    taps = tuple(taps)
    unknown = sorted(set(taps) - set(self.layer_names))
    if unknown:
      raise ValueError(f"no layers named {unknown} in {self.family} '{self.variant}'")
    if self.plan is None:
      x, tapped = apply_in_order(self.layers(), x, taps)
    else:
      x, tapped = self.plan(list(self.layers()), x, taps)
    logits = x.astype(jnp.float32)
    return (logits, tapped) if taps else logits


def apply_in_order(layers, x, taps: Sequence[str] = ()):
  """(the last layer's output, {name: output} for the layers named in `taps`)."""
  tapped = {}
  for name, layer in layers:
    x = layer(x)
    if name in taps:
      tapped[name] = x
  return x, tapped


def view(model: nnx.Module, *, train: bool) -> nnx.Module:
  """The model in training mode (dropout on, batch statistics from the batch) or evaluation
  mode, sharing its parameters (`nnx.view`)."""
  return nnx.view(model, deterministic=not train, use_running_average=not train,
                  raise_if_not_found=False)
