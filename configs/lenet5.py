"""LeNet-5 (LeCun et al. 1998) on MNIST, digits zero-padded from 28x28 to 32x32 (Sec. II.A).

Variants: paper (default; scaled tanh, trainable subsampling, Table I's C3, RBF outputs) and
modern (ReLU, max-pooling, dense C3 and output). The paper trained 20 passes with stochastic
diagonal Levenberg-Marquardt; here Adam with a cosine schedule over 20 epochs.

  python run.py train --config=configs/lenet5.py:paper --workdir=workdirs/lenet5 \\
      --config.data.manual_dir=PATH_TO_MNIST_FILES    # offline; omit to let TFDS download
"""

from cnn_jax import config
from configs import common


def get_config(arg: str | None = None):
  cfg = config.base("lenet5", arg or "paper")
  cfg.data.name = "mnist"
  cfg.data.preprocess.pad = 2
  # Sec. II.A: inputs scaled to mean 0 and variance about 1 (background -0.1, ink 1.175).
  cfg.data.preprocess.mean = "channel"
  cfg.data.preprocess.std = "channel"
  return common.adam_cosine(cfg, lr=1e-3, batch_size=64, epochs=20.0)
