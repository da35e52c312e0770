"""The small Fashion-MNIST CNN (Conv32-Pool-Conv64-Pool-Dense100-Dense10): the main job.

  python run.py summary --config=configs/simple_cnn.py
"""

from cnn_jax import config


def get_config(arg: str | None = None):
  return config.base("simple_cnn", arg or "base")
