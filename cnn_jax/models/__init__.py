"""Model registry: family name -> spec table; `build(model_config)` -> NNX network."""

from __future__ import annotations

from flax import nnx

from cnn_jax.errors import ConfigError
from cnn_jax.models import alexnet, lenet, simple_cnn, vgg
from cnn_jax.models.builder import assemble
from cnn_jax.models.sequential import Sequential
from cnn_jax.models.spec import Family

FAMILIES = {
    "simple_cnn": simple_cnn,
    "lenet5": lenet,
    "alexnet": alexnet,
    "vgg": vgg,
}


def family(name: str, variant: str) -> Family:
  """The spec table of `name` (a key of FAMILIES) in `variant`."""
  if name not in FAMILIES:
    raise ConfigError(f"model.name={name!r} is not a model; use one of {sorted(FAMILIES)}")
  module = FAMILIES[name]
  if variant not in module.VARIANTS:
    raise ConfigError(f"model.variant={variant!r} is not a variant of {name}; "
                      f"use one of {list(module.VARIANTS)}")
  return module.family(variant)


def build(cfg, rngs: nnx.Rngs | None = None) -> Sequential:
  """Builds the network for the model config `cfg` (the `model` group of a run config)."""
  rngs = rngs if rngs is not None else nnx.Rngs(params=0, dropout=1)
  return assemble(family(cfg.name, cfg.variant), cfg, rngs)


__all__ = ["FAMILIES", "Sequential", "build", "family"]
