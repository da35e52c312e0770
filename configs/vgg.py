"""VGG (Simonyan & Zisserman 2015), Table 1 configurations A, A-LRN, B, C, D, E.

Variants:
  A, A-LRN, B, C, D, E    ImageNet (imagenet2012) with the paper's recipe (Sec. 3.1): training
      scale jittered in [256, 512], random 224 crops and flips, mean RGB subtracted; SGD,
      momentum 0.9, weight decay 5e-4, dropout 0.5, batch 256, learning rate 0.01 divided by
      10 when validation accuracy stops improving (three times), 74 epochs; evaluation at
      Q = 384 (Sec. 3.2).
  small, small_<config>   the same configuration at 1/4 width on Fashion-MNIST padded to
      32x32; minutes on a CPU (e.g. vgg.py:small_D).

  python run.py train --config=configs/vgg.py:D --workdir=... --config.data.manual_dir=...
"""

from cnn_jax import config
from configs import common


def get_config(arg: str | None = None):
  small, variant = common.split_small(arg or "D", "A")
  cfg = config.base("vgg", variant)
  if small:
    common.small_on_fashion_mnist(cfg, (32, 32, 1), width=0.25)
    cfg.data.preprocess.pad = 2
    return cfg
  common.paper_sgd(common.imagenet(cfg), batch_size=256, epochs=74.0)
  p = cfg.data.preprocess
  p.scale_jitter, p.random_crop, p.flip, p.mean = (256, 512), True, True, "channel"
  return cfg
