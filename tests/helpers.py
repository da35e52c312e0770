"""Small helpers shared by the tests."""

import jax
import jax.numpy as jnp
from flax import nnx

from cnn_jax import config, inspect, models

ALL_CONFIGS = ([("simple_cnn", "base"), ("lenet5", "paper"), ("lenet5", "modern"),
                ("alexnet", "paper"), ("alexnet", "one_tower"), ("alexnet", "torchvision")]
               + [("vgg", v) for v in models.vgg.VARIANTS])


def model_cfg(name, variant, **overrides):
  return config.validate(config.base(name, variant, **overrides)).model


def summary(name, variant, **overrides):
  return inspect.summarize(models.abstract(model_cfg(name, variant, **overrides)))


def layer(summary_, name):
  return next(r for r in summary_.layers if r.name == name)


def abstract_logits(cfg, batch=2):
  model = models.abstract(cfg)
  x = jax.ShapeDtypeStruct((batch, *cfg.input_shape), jnp.float32)
  return nnx.eval_shape(lambda m, v: m(v), model, x)


@nnx.jit
def apply(model, x):
  """model(x), compiled (much faster than op-by-op for whole networks)."""
  return model(x)


def build_and_apply(cfg, x, seed=0):
  """Builds the model and applies it (evaluation mode) to x; returns (logits, model)."""
  model = models.build(cfg, seed)
  return apply(models.view(model, train=False), x), model



def load_config(file, arg=None):
  """get_config(arg) of configs/<file>, as run.py's --config=configs/<file>:<arg> loads it."""
  import importlib.util
  import os
  path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs",
                      file)
  spec = importlib.util.spec_from_file_location(f"config_{file[:-3]}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)
