"""The small Fashion-MNIST CNN (Conv32-Pool-Conv64-Pool-Dense100-Dense10): the main job.

  python run.py                                   # trains this config, offline
  python run.py train --config=configs/simple_cnn.py --workdir=workdirs/fmnist

Fashion-MNIST is prepared from the copy vendored in cnn_jax/data/vendor (no network needed).
"""

from cnn_jax import config, data
from configs import common


def get_config(arg: str | None = None):
  cfg = config.base("simple_cnn", arg or "base")
  cfg.data.name = "fashion_mnist"
  cfg.data.manual_dir = data.VENDORED_FASHION_MNIST
  cfg.data.preprocess.mean = "channel"
  cfg.data.preprocess.std = "channel"
  return common.adam_cosine(cfg, lr=1e-3, batch_size=128, epochs=12.0)
