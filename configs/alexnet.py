"""AlexNet (Krizhevsky et al. 2012). Variants: paper (two towers, default), one_tower,
torchvision.

  python run.py summary --config=configs/alexnet.py:paper
"""

from cnn_jax import config


def get_config(arg: str | None = None):
  return config.base("alexnet", arg or "paper")
