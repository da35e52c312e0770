"""AlexNet (Krizhevsky et al. 2012).

Variants:
  paper, one_tower, torchvision   ImageNet (imagenet2012) with the paper's recipe (Sec. 4-5):
      256 shorter side, random 227 crops and flips, PCA colour augmentation (0.1), mean image
      subtracted; SGD, momentum 0.9, weight decay 5e-4, batch 128, learning rate 0.01 divided
      by 10 when validation accuracy stops improving (three times), 90 epochs.
  small, small_<variant>          the same network at 1/8 width on Fashion-MNIST resized to
      67x67 (the smallest input AlexNet's layers accept), He initialisation; minutes on a CPU.

  python run.py train --config=configs/alexnet.py:paper --workdir=... \\
      --config.data.data_dir=... --config.data.manual_dir=PATH_TO_IMAGENET_TARS
"""

from cnn_jax import config
from configs import common


def get_config(arg: str | None = None):
  small, variant = common.split_small(arg or "paper", "paper")
  cfg = config.base("alexnet", variant)
  if small:
    common.small_on_fashion_mnist(cfg, (67, 67, 1), width=0.125)
    cfg.data.preprocess.resize = 67
    cfg.model.init = "he"
    return cfg
  common.paper_sgd(common.imagenet(cfg), batch_size=128, epochs=90.0)
  p = cfg.data.preprocess
  p.resize, p.random_crop, p.flip, p.pca_colour, p.mean = 256, True, True, 0.1, "pixel"
  return cfg
