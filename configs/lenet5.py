"""LeNet-5 (LeCun et al. 1998). Variants: paper (default), modern.

  python run.py summary --config=configs/lenet5.py:paper
"""

from cnn_jax import config


def get_config(arg: str | None = None):
  return config.base("lenet5", arg or "paper")
