"""The small Fashion-MNIST CNN (Conv32-Pool-Conv64-Pool-Dense100-Dense10): the main job.

  python run.py                                   # trains this config, offline
  python run.py train --config=configs/simple_cnn.py --workdir=workdirs/fmnist
  python run.py train --config=configs/simple_cnn.py:fast --workdir=workdirs/fmnist_fast

Fashion-MNIST is prepared from the copy vendored in cnn_jax/data/vendor (no network needed).

`fast`: the same network (333,526 parameters) with a recipe for time to accuracy, chosen on the
validation split (benchmarks/HISTORY.md, "Fast recipe"): batch 256 at twice the learning rate
(2e-3) after a linear warm-up of half an epoch, label smoothing 0.1, cosine decay over 6
epochs instead of 12. Measured against the default by `python benchmarks/time_to_accuracy.py`.
"""

from cnn_jax import config, data
from configs import common

VARIANTS = ("base", "fast")


def get_config(arg: str | None = None):
  variant = arg or "base"
  if variant not in VARIANTS:
    raise ValueError(f"configs/simple_cnn.py:{variant}: no such variant; use one of "
                     f"{', '.join(VARIANTS)}")
  cfg = config.base("simple_cnn", "base")
  cfg.data.name = "fashion_mnist"
  cfg.data.manual_dir = data.VENDORED_FASHION_MNIST
  cfg.data.preprocess.mean = "channel"
  cfg.data.preprocess.std = "channel"
  if variant == "fast":
    common.adam_cosine(cfg, lr=2e-3, batch_size=256, epochs=6.0)
    cfg.optim.warmup_epochs = 0.5
    cfg.optim.label_smoothing = 0.1
    return cfg
  return common.adam_cosine(cfg, lr=1e-3, batch_size=128, epochs=12.0)
