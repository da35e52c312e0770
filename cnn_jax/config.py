"""The run config's schema: defaults for every key, and one validation pass at start.

Config files under configs/ start from `base(...)` and change what their experiment needs;
`validate` then checks every value once, with messages that name the key and the fix.
"""

from __future__ import annotations


import ml_collections

from cnn_jax import schema, transfer
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
      "init_from": "",          # a run (work directory or checkpoint) to copy layers from
      "init_from_layers": "vgg_a",  # which: a preset (transfer.PRESETS) or a path regex
      "init_from_rules": (),    # or 'src_regex=>dst' rules over the source's paths
      "init_from_shapes": "error",  # error | skip: a parameter whose shape does not fit
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
      "steps": 0,                 # ... or in updates, if > 0 ...
      "flops": 0.0,               # ... or in training FLOPs (3 x MACs x images), if > 0
      "eval_every_epochs": 1.0,   # evaluation interval in epochs ...
      "eval_every_steps": 0,      # ... or in updates, if > 0
      "log_every_steps": 50,      # metrics are fetched from the device this often
      "skip_nonfinite": False,    # skip (and count) steps whose loss or gradient is not
                                  # finite, instead of stopping the run
      "profile_steps": (),        # (first, last): a jax.profiler trace of steps first+1 to
                                  # last in <workdir>/profile; () = off
  })


def base(name: str, variant: str, **model_overrides) -> ml_collections.ConfigDict:
  """A run config with every group at its default; config files change what they need."""
  from cnn_jax import checkpoint_config as checkpoint  # the group, without Orbax
  from cnn_jax import data, optim, parallel, protocols
  cfg = ml_collections.ConfigDict()
  cfg.model = model_config(name, variant, **model_overrides)
  cfg.data = data.defaults()
  cfg.optim = optim.defaults()
  cfg.train = train_config()
  cfg.checkpoint = checkpoint.defaults()
  cfg.mesh = parallel.defaults()
  cfg.eval = protocols.defaults()  # how run.py eval tests a checkpoint (protocols.py)
  cfg.seed = 0  # parameters, data order, augmentation and dropout all derive from it
  return cfg


def model_rules() -> dict:
  return {
      "name": schema.Choice(FAMILIES),
      "variant": schema.Str(nonempty=True),
      "num_classes": schema.at_least(2, "classes; a classifier needs two", integer=True),
      "norm": schema.Choice(knobs.NORMS),
      "stem": schema.Choice(knobs.STEMS),
      "pooling": schema.Choice(knobs.POOLINGS),
      "head": schema.Choice(knobs.HEADS),
      "width": schema.positive("e.g. 0.5 or 2.0"),
      "dropout": schema.fraction("AlexNet and VGG: 0.5"),
      "activation": schema.Choice(("paper", *ACTIVATIONS)),
      "output": schema.Choice(("paper", "dense", "rbf")),
      "init": schema.Str(nonempty=True),
      "dtype": schema.Choice(DTYPES),
      "init_from": schema.Str(),
      "init_from_layers": schema.Str(nonempty=True, hint="e.g. vgg_a or 'conv1_1/'"),
      "init_from_shapes": schema.Choice(transfer.SHAPE_POLICIES),
  }


TRAIN_RULES = {
    "batch_size": schema.at_least(1, "examples per update", integer=True),
    "eval_batch_size": schema.at_least(1, integer=True),
    "epochs": schema.at_least(0, "or set train.steps"),
    "steps": schema.at_least(0, "0 = use train.epochs", integer=True),
    "flops": schema.at_least(0, "0 = use train.steps or train.epochs"),
    "eval_every_epochs": schema.at_least(0, "or set train.eval_every_steps"),
    "eval_every_steps": schema.at_least(0, "0 = use train.eval_every_epochs", integer=True),
    "log_every_steps": schema.at_least(1, integer=True),
    "skip_nonfinite": schema.Bool(),
}
SEED = schema.at_least(0, "e.g. 0", integer=True)


def total_steps(t: ml_collections.ConfigDict, steps_per_epoch: int, macs: int) -> int:
  """The run's length in updates: from `train.flops` (training FLOPs, counted as 3 x MACs per
  image for the forward and backward passes, as Kaplan et al. 2020 Sec. 2.1), else
  `train.steps`, else `train.epochs`; at least one."""
  if t.flops > 0:
    return max(1, int(round(t.flops / (3 * macs * t.batch_size))))
  return t.steps or max(1, int(round(t.epochs * steps_per_epoch)))


def validate(cfg: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Checks every key of the config once; raises ConfigError naming the first bad one."""
  m = cfg.model
  schema.check_value("model.name", m.name, schema.Choice(FAMILIES))
  model_family(m.name, m.variant)  # checks the variant
  schema.check_keys(m, model_config(m.name, m.variant), "model.")
  schema.check_finite(cfg)
  shape = m.input_shape
  if (not isinstance(shape, (tuple, list)) or len(shape) != 3
      or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape)):
    raise ConfigError(f"model.input_shape={shape!r} must be three positive ints (H, W, C), "
                      "e.g. --config.model.input_shape='(224, 224, 3)'")
  schema.check("model.", m, model_rules())
  plan.validate(m)  # model.lowering and model.rewrites
  if m.init != "paper":
    try:
      initializer(m.init)
    except ValueError:
      raise ConfigError(f"model.init={m.init!r} is not an initialiser; use paper, he, glorot, "
                        "lecun, lecun98, zeros, normal:<std> or constant:<value>") from None
  transfer.validate(m)  # init_from, init_from_layers, init_from_rules, init_from_shapes
  if "train" in cfg:
    _validate_training(cfg)
  return cfg


def check_batch_split(cfg, data_devices: int = 1) -> None:
  """The global batch must split over the `data` devices, each share into the micro-batches."""
  parts = data_devices * cfg.optim.accumulate_steps
  if cfg.train.batch_size % parts:
    raise ConfigError(
        f"train.batch_size={cfg.train.batch_size} must split evenly"
        + (f" over the {data_devices} devices of mesh axis 'data'" if data_devices > 1 else "")
        + (f" into optim.accumulate_steps={cfg.optim.accumulate_steps} micro-batches"
           if cfg.optim.accumulate_steps > 1 else "")
        + f"; use a multiple of {parts}")


def _validate_training(cfg) -> None:
  from cnn_jax import checkpoint_config as checkpoint  # the group, without Orbax
  from cnn_jax import data, optim, parallel, protocols
  reference = base(cfg.model.name, cfg.model.variant)
  for group in reference:
    if group not in cfg:
      raise ConfigError(f"the config has no {group!r} group; start it from config.base(...)")
  schema.check_keys(cfg, reference)  # every group, recursively
  data.validate(cfg.data, image_shape=tuple(cfg.model.input_shape))
  optim.validate(cfg.optim)
  checkpoint.validate(cfg.checkpoint)
  parallel.validate(cfg.mesh)
  protocols.validate(cfg)
  schema.check("train.", cfg.train, TRAIN_RULES)
  schema.check_value("seed", cfg.seed, SEED)
  t = cfg.train
  if not (t.epochs > 0 or t.steps > 0 or t.flops > 0):
    raise ConfigError(f"train.epochs={t.epochs!r} must be positive (or set train.steps or "
                      "train.flops)")
  if not (t.eval_every_epochs > 0 or t.eval_every_steps > 0):
    raise ConfigError(f"train.eval_every_epochs={t.eval_every_epochs!r} must be positive "
                      "(or set train.eval_every_steps)")
  check_batch_split(cfg)
  p = t.profile_steps
  if not (isinstance(p, tuple) and (p == () or (
      len(p) == 2 and all(schema.at_least(0, integer=True).ok(x) for x in p) and p[0] < p[1]))):
    raise ConfigError(f"train.profile_steps={p!r} must be () or two step counts (first, last) "
                      "with first < last, e.g. '(100, 110)'")
