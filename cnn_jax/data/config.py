"""The `data` config group: defaults for every key, and one validation pass.

Defaults suit Fashion-MNIST (rescale to [0, 1], nothing else). The papers' pipelines are
config changes: LeNet-5 `preprocess.pad=2`; AlexNet `resize=256, random_crop=True, flip=True,
mean='pixel', pca_colour=0.1`; VGG `scale_jitter=(256, 512), random_crop=True, flip=True,
mean='channel'`.
"""

from __future__ import annotations

import ml_collections

from cnn_jax import schema
from cnn_jax.errors import ConfigError, UserError

MEANS = ("none", "channel", "pixel")
STDS = ("none", "channel")
CHANNELS = (1, 3)  # grey or RGB models
BAD_IMAGES = ("error", "skip")
INPUTS = ("auto", "arrays", "tf.data")


def defaults() -> ml_collections.ConfigDict:
  """The `data` group with every key at its default (sequences are tuples)."""
  return ml_collections.ConfigDict({
      "name": "fashion_mnist",      # a TFDS dataset name, or 'folder'
      "data_dir": "",               # '' = TFDS's default (~/tensorflow_datasets)
      "manual_dir": "",             # a folder of the dataset's original files, prepared offline
      "folder": "",                 # name='folder': root with one sub-folder per class
      "test_folder": "",            # name='folder': a root with the same classes, its 'test'
      "validation_fraction": 0.1,   # share of 'train' held out as 'validation' (splits.py);
                                    # 0 = none, or the dataset's own (ILSVRC-2012)
      "split_seed": 0,              # which examples are held out (the same for every run seed)
      "bad_images": "error",        # name='folder': unreadable images stop the run ('error')
                                    # or are left out and counted ('skip'); checked at start
      "train_split": "train",       # TFDS split strings; slicing allowed: 'train[:10%]'
      "eval_split": "validation",   # evaluated during training: checkpoint, plateau selection
      "test_split": "test",         # evaluated once at the end, on the best checkpoint by
                                    # checkpoint.best_metric; '' = none
      "shuffle_buffer": 0,          # 0 = the whole split
      "cache": True,                # keep decoded, un-augmented examples in memory
      "input": "auto",              # auto | arrays | tf.data: arrays reads a small dataset
                                    # into memory once (a decoded cache, arrays.py) and
                                    # batches it in NumPy, without TensorFlow; auto uses it
                                    # where it applies (array_pipeline.unsupported), else tf.data
      "seed": -1,                   # data order, augmentation draws and a folder's held-out
                                    # split; -1 = the run's `seed` (which also initialises)
      "threads": 0,                 # tf.data's threads; 0 = TensorFlow's choice (a thread
                                    # per core). Fewer leave cores to XLA's train step.
      "preprocess": {               # applied in this order; each step switchable
          "pad": 0,                 # zero pixels on each side (LeNet-5: 28 -> 32 with 2)
          "resize": 0,              # shorter side to this many pixels; 0 = off (AlexNet: 256)
          "scale_jitter": (),       # (S_min, S_max): VGG multi-scale training; () = off
          "random_crop": False,     # random crop at train, central at eval
          "crop_padding": 0,        # zero padding before the random crop (train only)
          "flip": False,            # random horizontal flip at train
          "rescale": True,          # uint8 -> [0, 1]
          "mean": "none",           # none | channel | pixel
          "std": "none",            # none | channel
          "pca_colour": 0.0,        # AlexNet colour augmentation's alpha std; 0 = off
          "stats_samples": 10000,   # training images the mean/std/PCA are estimated from
      },
  })


RULES = {
    "name": schema.Str(nonempty=True, hint="a TFDS dataset name or 'folder'"),
    "data_dir": schema.Str(), "manual_dir": schema.Str(), "folder": schema.Str(),
    "test_folder": schema.Str(),
    "train_split": schema.Str(nonempty=True, hint="e.g. 'train'"),
    "eval_split": schema.Str(nonempty=True, hint="e.g. 'validation'"),
    "test_split": schema.Str(hint="e.g. 'test', or '' for none"),
    "validation_fraction": schema.fraction("e.g. 0.1; 0 = none"),
    "split_seed": schema.at_least(0, "e.g. 0", integer=True),
    "bad_images": schema.Choice(BAD_IMAGES),
    "shuffle_buffer": schema.at_least(0, "0 = the whole split", integer=True),
    "cache": schema.Bool(),
    "input": schema.Choice(INPUTS),
    "threads": schema.at_least(0, "0 = one per core", integer=True),
    "seed": schema.Num(low=0, integer=True, also=(-1,), hint="-1 = the run's seed"),
    "preprocess.pad": schema.at_least(0, integer=True),
    "preprocess.resize": schema.at_least(0, "0 = off", integer=True),
    "preprocess.random_crop": schema.Bool(),
    "preprocess.crop_padding": schema.at_least(0, integer=True),
    "preprocess.flip": schema.Bool(),
    "preprocess.rescale": schema.Bool(),
    "preprocess.mean": schema.Choice(MEANS),
    "preprocess.std": schema.Choice(STDS),
    "preprocess.pca_colour": schema.at_least(0, "AlexNet: 0.1; 0 = off"),
    "preprocess.stats_samples": schema.at_least(1, integer=True),
}


def seed(cfg: ml_collections.ConfigDict, run_seed: int) -> int:
  """The seed of the data order and augmentation: `data.seed`, or the run's if it is -1."""
  return run_seed if cfg.seed == -1 else cfg.seed


def check_batches(global_batch: int, eval_batch: int, process_index: int,
                  process_count: int) -> None:
  """Both batches split evenly over the processes, and the process is one of them."""
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index={process_index} outside [0, {process_count})")
  for name, b in (("global_batch", global_batch), ("eval_batch", eval_batch)):
    if b < process_count or b % process_count:
      raise UserError(f"{name}={b} must be a positive multiple of the {process_count} "
                      "processes; change the batch size")


def validate(cfg: ml_collections.ConfigDict, image_shape) -> ml_collections.ConfigDict:
  """Checks every key of the `data` group against the model's (H, W, C); raises ConfigError
  naming the first bad key."""
  schema.check_keys(cfg, defaults(), "data.")
  schema.check("data.", cfg, RULES)
  h, w, c = image_shape
  if c not in CHANNELS:
    raise ConfigError(f"model.input_shape={tuple(image_shape)!r} has {c} channels; the data "
                      "pipeline gives 1 (grey) or 3 (RGB)")
  if cfg.name == "folder" and not cfg.folder:
    raise ConfigError("data.folder='' is empty; with data.name='folder' set it to a root "
                      "with one sub-folder per class")
  if cfg.test_folder and cfg.name != "folder":
    raise ConfigError(f"data.test_folder={cfg.test_folder!r} is for data.name='folder'; "
                      f"{cfg.name} has its own test split: set data.test_folder=''")
  p = cfg.preprocess
  side = max(h, w)
  if p.resize and p.resize < side:
    raise ConfigError(f"data.preprocess.resize={p.resize} is smaller than the model's "
                      f"{h}x{w} input; use at least {side}, or 0 for off")
  sj = p.scale_jitter
  if not isinstance(sj, tuple):
    raise ConfigError(f"data.preprocess.scale_jitter={sj!r} must be a tuple: () or "
                      "'(S_min, S_max)'")
  if sj:
    if (len(sj) != 2 or not all(isinstance(s, int) and not isinstance(s, bool) for s in sj)
        or not side <= sj[0] <= sj[1]):
      raise ConfigError(f"data.preprocess.scale_jitter={sj!r} must be two ints with "
                        f"{side} <= S_min <= S_max, e.g. '(256, 512)'; () for off")
    if p.resize:
      raise ConfigError("data.preprocess.resize and data.preprocess.scale_jitter are both set; "
                        "set resize=0 or scale_jitter=()")
  if p.crop_padding and not p.random_crop:
    raise ConfigError(f"data.preprocess.crop_padding={p.crop_padding} needs "
                      "data.preprocess.random_crop=True; set one or the other")
  a = p.pca_colour
  if a and c != 3:
    raise ConfigError(f"data.preprocess.pca_colour={a!r} needs 3 channels, the model has {c}; "
                      "set it to 0.0")
  if cfg.input == "arrays":
    from cnn_jax.data import array_pipeline  # pylint: disable=g-import-not-at-top
    why = array_pipeline.unsupported(cfg)
    if why:
      raise ConfigError(f"data.input='arrays' does not take {why}; use data.input='auto' or "
                        "'tf.data'")
  return cfg
