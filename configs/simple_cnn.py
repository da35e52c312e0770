"""The small Fashion-MNIST CNN (Conv32-Pool-Conv64-Pool-Dense100-Dense10): the main job.

  python run.py                                   # trains this config, offline
  python run.py train --config=configs/simple_cnn.py --workdir=workdirs/fmnist
  python run.py train --config=configs/simple_cnn.py:long --workdir=workdirs/fmnist_long

Fashion-MNIST is prepared from the copy vendored in cnn_jax/data/vendor (no network needed).

The default recipe (`base`, also named `fast`) is chosen for time to accuracy on the validation
split (benchmarks/HISTORY.md, "Fast recipe"): Adam at 3e-3 after a linear warm-up of half an
epoch, cosine decay to zero over 6 epochs, batch 64 (on a CPU the step's images/s do not grow
with the batch, so the smaller batch takes more updates for the same time), label smoothing
0.1 (Szegedy et al. 2016, Sec. 7). `long`: the earlier default, batch 128, Adam 1e-3, cosine
over 12 epochs, no smoothing; the small-scale studies of this network keep it, so that their
committed tables re-run unchanged. `python benchmarks/time_to_accuracy.py` measures the two.
"""

from cnn_jax import config, data
from configs import common

VARIANTS = ("base", "fast", "long")


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
  if variant == "long":
    return common.adam_cosine(cfg, lr=1e-3, batch_size=128, epochs=12.0)
  common.adam_cosine(cfg, lr=3e-3, batch_size=64, epochs=6.0)
  cfg.optim.warmup_epochs = 0.5
  cfg.optim.label_smoothing = 0.1
  return cfg
