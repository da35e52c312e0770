"""The run config's schema: defaults for every key, and one validation pass at start.

Config files under configs/ start from `base(...)` and change what their experiment needs;
`validate` then checks every value once, with messages that name the key and the fix.
"""

from __future__ import annotations

import ml_collections

from cnn_jax.errors import ConfigError
from cnn_jax.models import FAMILIES, knobs
from cnn_jax.models import family as model_family
from cnn_jax.models.builder import DTYPES
from cnn_jax.models import plan
from cnn_jax.models.layers import ACTIVATIONS, initializer


def model_config(name: str, variant: str, **overrides) -> ml_collections.ConfigDict:
  """The `model` group: the family's paper settings, then `overrides`."""
  fam = model_family(name, variant)
  cfg = ml_collections.ConfigDict({
      "name": name,
      "variant": variant,
      "input_shape": tuple(fam.input_shape),  # (H, W, C); a tuple so --config overrides work
      "num_classes": fam.num_classes,
      "norm": "paper",          # paper | none | lrn | batchnorm
      "stem": "paper",          # paper | stacked3x3
      "pooling": "paper",       # paper | overlapping | non_overlapping
      "head": "fc",             # fc | gap | conv
      "width": 1.0,             # multiplies conv maps and hidden FC units
      "dropout": 0.5 if len(fam.head.hidden) > 1 else 0.0,  # on the hidden FC layers
      "activation": "paper",    # paper | relu | tanh | scaled_tanh | ...
      "output": "paper",        # paper | dense | rbf
      "init": "paper",          # paper | he | glorot | lecun | lecun98 | normal:<std>
      "dtype": "float32",       # compute dtype; parameters stay float32
      "lowering": "auto",       # auto | xla | cpu: how the layers are executed
                                # (models/plan.py); auto = cpu on the CPU backend
      "rewrites": "all",        # all | none | comma-separated names of the cpu route's
                                # rewrites (models/plan.py REWRITES)
  })
  cfg.update(overrides)
  return cfg


def train_config() -> ml_collections.ConfigDict:
  """The `train` group: how long, in what batches, how often to log and evaluate."""
  return ml_collections.ConfigDict({
      "batch_size": 128,          # global batch per update
      "eval_batch_size": 500,
      "epochs": 10.0,             # training length in epochs ...
      "steps": 0,                 # ... or in updates, if > 0
      "eval_every_epochs": 1.0,   # evaluation interval in epochs ...
      "eval_every_steps": 0,      # ... or in updates, if > 0
      "log_every_steps": 50,      # metrics are fetched from the device this often
      "skip_nonfinite": False,    # skip (and count) steps whose loss or gradient is not
                                  # finite, instead of stopping the run
  })


def base(name: str, variant: str, **model_overrides) -> ml_collections.ConfigDict:
  """A run config with every group at its default; config files change what they need."""
  from cnn_jax import checkpoint, data, optim, parallel
  cfg = ml_collections.ConfigDict()
  cfg.model = model_config(name, variant, **model_overrides)
  cfg.data = data.defaults()
  cfg.optim = optim.defaults()
  cfg.train = train_config()
  cfg.checkpoint = checkpoint.defaults()
  cfg.mesh = parallel.defaults()
  cfg.seed = 0  # parameters, data order, augmentation and dropout all derive from it
  return cfg


def _choice(key, value, choices):
  if value not in choices:
    raise ConfigError(f"{key}={value!r} is not allowed; use one of {list(choices)}")


def validate(cfg: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Checks every key of the config once; raises ConfigError naming the first bad one."""
  m = cfg.model
  _choice("model.name", m.name, FAMILIES)
  model_family(m.name, m.variant)  # checks the variant
  shape = m.input_shape
  if (not isinstance(shape, (tuple, list)) or len(shape) != 3
      or not all(isinstance(d, int) and d > 0 for d in shape)):
    raise ConfigError(f"model.input_shape={shape!r} must be three positive ints (H, W, C), "
                      "e.g. --config.model.input_shape='(224, 224, 3)'")
  if not isinstance(m.num_classes, int) or m.num_classes < 1:
    raise ConfigError(f"model.num_classes={m.num_classes!r} must be a positive int")
  _choice("model.norm", m.norm, knobs.NORMS)
  _choice("model.stem", m.stem, knobs.STEMS)
  _choice("model.pooling", m.pooling, knobs.POOLINGS)
  _choice("model.head", m.head, knobs.HEADS)
  _choice("model.activation", m.activation, ("paper", *ACTIVATIONS))
  _choice("model.output", m.output, ("paper", "dense", "rbf"))
  _choice("model.dtype", m.dtype, DTYPES)
  plan.validate(m)
  if not m.width > 0:
    raise ConfigError(f"model.width={m.width!r} must be positive, e.g. 0.5 or 2.0")
  if not 0.0 <= m.dropout < 1.0:
    raise ConfigError(f"model.dropout={m.dropout!r} must be in [0, 1)")
  if m.init != "paper":
    try:
      initializer(m.init)
    except ValueError:
      raise ConfigError(f"model.init={m.init!r} is not an initialiser; use paper, he, glorot, "
                        "lecun, lecun98, zeros, normal:<std> or constant:<value>") from None
  if "train" in cfg:
    _validate_training(cfg)
  return cfg


def _validate_training(cfg) -> None:
  from cnn_jax import checkpoint, data, optim, parallel
  data.validate(cfg.data, image_shape=tuple(cfg.model.input_shape))
  optim.validate(cfg.optim)
  checkpoint.validate(cfg.checkpoint)
  parallel.validate(cfg.mesh)
  t = cfg.train
  for key in ("batch_size", "eval_batch_size", "log_every_steps"):
    if not (isinstance(t[key], int) and t[key] >= 1):
      raise ConfigError(f"train.{key}={t[key]!r} must be a positive int")
  for key in ("steps", "eval_every_steps"):
    if not (isinstance(t[key], int) and t[key] >= 0):
      raise ConfigError(f"train.{key}={t[key]!r} must be an int >= 0 (0 = use epochs)")
  if not (t.epochs > 0 or t.steps > 0):
    raise ConfigError(f"train.epochs={t.epochs!r} must be positive (or set train.steps)")
  if not (t.eval_every_epochs > 0 or t.eval_every_steps > 0):
    raise ConfigError(f"train.eval_every_epochs={t.eval_every_epochs!r} must be positive")
  if t.batch_size % cfg.optim.accumulate_steps:
    raise ConfigError(f"train.batch_size={t.batch_size} must be divisible by "
                      f"optim.accumulate_steps={cfg.optim.accumulate_steps}")
  if not isinstance(t.skip_nonfinite, bool):
    raise ConfigError(f"train.skip_nonfinite={t.skip_nonfinite!r} must be True or False")
  if not isinstance(cfg.seed, int):
    raise ConfigError(f"seed={cfg.seed!r} must be an int")
