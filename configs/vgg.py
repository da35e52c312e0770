"""VGG (Simonyan & Zisserman 2015), Table 1. Variants: A, A-LRN, B, C, D (default), E.

  python run.py summary --config=configs/vgg.py:D
"""

from cnn_jax import config


def get_config(arg: str | None = None):
  return config.base("vgg", arg or "D")
