"""Model registry: family name -> spec table; `build(model_config)` -> NNX network."""

from __future__ import annotations

import jax
from flax import nnx

from cnn_jax.errors import ConfigError
from cnn_jax.models import alexnet, lenet, simple_cnn, vgg
from cnn_jax.models.builder import assemble
from cnn_jax.models.sequential import Sequential, view
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


def build(cfg, seed: int = 0) -> Sequential:
  """The network for the model config `cfg` (the `model` group of a run config), with its
  parameters initialised from `seed` (dropout draws from seed + 1).

  Initialisation runs as one compiled program. XLA's CPU backend spends seconds optimising
  threefry random-number code that runs only once, so that program is compiled without
  backend optimisation; the values are the same either way.
  """
  fam = family(cfg.name, cfg.variant)
  graphdef, _ = nnx.split(abstract(cfg))
  state = jax.jit(lambda: nnx.split(assemble(fam, cfg, nnx.Rngs(params=seed,
                                                                dropout=seed + 1)))[1],
                  compiler_options={"xla_backend_optimization_level": 0})()
  return nnx.merge(graphdef, state)


def abstract(cfg) -> Sequential:
  """The network with shapes and dtypes but no parameter values: free at any size."""
  fam = family(cfg.name, cfg.variant)
  return nnx.eval_shape(lambda: assemble(fam, cfg, nnx.Rngs(params=0, dropout=1)))


__all__ = ["FAMILIES", "Sequential", "abstract", "build", "family", "view"]
