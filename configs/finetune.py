"""Transfer from the main job's small CNN to an image folder of new classes.

Variants (both: the backbone conv1, conv2, fc1 copied from `model.init_from`, a new fc2 head
for the folder's classes, `model.init_from_layers=backbone`):
  features   feature extraction: the backbone frozen (optim.freeze), only the head trained
  full       full fine-tuning: every layer trained, the backbone at 0.1x the head's
             learning rate (optim.lr_multipliers)

  python experiments/make_png_folder.py --out=workdirs/fmnist_png     # shirt, coat, pullover
  python run.py train --config=configs/finetune.py:features --workdir=workdirs/ft_features
  python run.py train --config=configs/finetune.py:full --workdir=workdirs/ft_full

The source defaults to the main job's work directory (python run.py trains it); point
--config.model.init_from elsewhere, and --config.data.folder / data.test_folder at any folder
with one sub-folder per class (--config.model.num_classes to match).
"""

from cnn_jax import config
from configs import common

BACKBONE = "^(conv1|conv2|fc1)/"


def get_config(arg: str | None = None):
  variant = arg or "features"
  if variant not in ("features", "full"):
    raise ValueError(f"unknown variant {variant!r}; use features or full")
  cfg = config.base("simple_cnn", "base", num_classes=3,
                    init_from="workdirs/simple_cnn_fashion_mnist",
                    init_from_layers="backbone")
  cfg.data.name = "folder"
  cfg.data.folder = "workdirs/fmnist_png/train"
  cfg.data.test_folder = "workdirs/fmnist_png/test"
  cfg.data.preprocess.mean = "channel"
  cfg.data.preprocess.std = "channel"
  common.adam_cosine(cfg, lr=1e-3, batch_size=64, epochs=4.0)
  if variant == "features":
    cfg.optim.freeze = BACKBONE
  else:
    cfg.optim.lr_multipliers = (BACKBONE + "=0.1",)
  return cfg
