"""The `data` config group: defaults for every key, and one validation pass.

Defaults suit Fashion-MNIST (rescale to [0, 1], nothing else). The papers' pipelines are
config changes: LeNet-5 `preprocess.pad=2`; AlexNet `resize=256, random_crop=True, flip=True,
mean='pixel', pca_colour=0.1`; VGG `scale_jitter=(256, 512), random_crop=True, flip=True,
mean='channel'`.
"""

from __future__ import annotations

import numbers

import ml_collections

from cnn_jax.errors import ConfigError

MEANS = ("none", "channel", "pixel")
STDS = ("none", "channel")
CHANNELS = (1, 3)  # grey or RGB models
BAD_IMAGES = ("error", "skip")


def defaults() -> ml_collections.ConfigDict:
  """The `data` group with every key at its default (sequences are tuples)."""
  return ml_collections.ConfigDict({
      "name": "fashion_mnist",      # a TFDS dataset name, or 'folder'
      "data_dir": "",               # '' = TFDS's default (~/tensorflow_datasets)
      "manual_dir": "",             # a folder of the dataset's original files, prepared offline
      "folder": "",                 # name='folder': root with one sub-folder per class
      "validation_fraction": 0.1,   # name='folder': the held-out share, used as the eval split
      "bad_images": "error",        # name='folder': unreadable images stop the run ('error')
                                    # or are left out and counted ('skip'); checked at start
      "train_split": "train",       # TFDS split strings; slicing allowed: 'train[:10%]'
      "eval_split": "test",
      "shuffle_buffer": 0,          # 0 = the whole split
      "cache": True,                # keep decoded, un-augmented examples in memory
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


def _int(key, value, low):
  if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
    raise ConfigError(f"data.{key}={value!r} must be an int >= {low}")


def _bool(key, value):
  if not isinstance(value, bool):
    raise ConfigError(f"data.{key}={value!r} must be True or False")


def _str(key, value):
  if not isinstance(value, str):
    raise ConfigError(f"data.{key}={value!r} must be a string")


def _choice(key, value, choices):
  if value not in choices:
    raise ConfigError(f"data.{key}={value!r} is not allowed; use one of {list(choices)}")


def _known_keys(cfg, ref, prefix):
  for key in cfg:
    if key not in ref:
      raise ConfigError(f"data.{prefix}{key} is not a data key; use one of {sorted(ref)}")


def validate(cfg: ml_collections.ConfigDict, image_shape) -> ml_collections.ConfigDict:
  """Checks every key of the `data` group against the model's (H, W, C); raises ConfigError
  naming the first bad key."""
  ref = defaults()
  _known_keys(cfg, ref, "")
  _known_keys(cfg.preprocess, ref.preprocess, "preprocess.")
  h, w, c = image_shape
  if c not in CHANNELS:
    raise ConfigError(f"model.input_shape={tuple(image_shape)!r} has {c} channels; the data "
                      "pipeline gives 1 (grey) or 3 (RGB)")
  for key in ("name", "data_dir", "manual_dir", "folder", "train_split", "eval_split"):
    _str(key, cfg[key])
  if not cfg.name:
    raise ConfigError("data.name='' is empty; use a TFDS dataset name or 'folder'")
  if cfg.name == "folder" and not cfg.folder:
    raise ConfigError("data.folder='' is empty; with data.name='folder' set it to a root "
                      "with one sub-folder per class")
  if not cfg.train_split or not cfg.eval_split:
    raise ConfigError(f"data.train_split={cfg.train_split!r}, data.eval_split="
                      f"{cfg.eval_split!r}: both must name a split, e.g. 'train' and 'test'")
  f = cfg.validation_fraction
  if isinstance(f, bool) or not isinstance(f, numbers.Real) or not 0.0 <= f < 1.0:
    raise ConfigError(f"data.validation_fraction={f!r} must be in [0, 1), e.g. 0.1")
  _choice("bad_images", cfg.bad_images, BAD_IMAGES)
  _int("shuffle_buffer", cfg.shuffle_buffer, 0)
  _bool("cache", cfg.cache)
  _int("threads", cfg.threads, 0)

  p = cfg.preprocess
  _int("preprocess.pad", p.pad, 0)
  _int("preprocess.resize", p.resize, 0)
  _int("preprocess.crop_padding", p.crop_padding, 0)
  _int("preprocess.stats_samples", p.stats_samples, 1)
  for key in ("random_crop", "flip", "rescale"):
    _bool(f"preprocess.{key}", p[key])
  _choice("preprocess.mean", p.mean, MEANS)
  _choice("preprocess.std", p.std, STDS)
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
  if isinstance(a, bool) or not isinstance(a, numbers.Real) or a < 0:
    raise ConfigError(f"data.preprocess.pca_colour={a!r} must be a float >= 0 (AlexNet: 0.1)")
  if a and c != 3:
    raise ConfigError(f"data.preprocess.pca_colour={a!r} needs 3 channels, the model has {c}; "
                      "set it to 0.0")
  return cfg
