"""Study 5: width scaling. Every convolution's maps and hidden units multiplied by w; the error
is fitted as a power law in the parameter count, error(N) = a N^-b + c.

  python run.py study --study=experiments/width.py:small    # the small CNN on Fashion-MNIST
  python run.py study --study=experiments/width.py:paper --slurm   # VGG D on ImageNet
"""

from cnn_jax.study import SMALL, SMALL_SEEDS, Study, grid


def get_study(scale="small"):
  if scale == "small":
    return Study("width_small", grid(**{"model.width": (0.125, 0.25, 0.5, 1.0, 2.0)}),
                 config="configs/simple_cnn.py:long", base=SMALL, seeds=SMALL_SEEDS,
                 scaling="params",
                 title="Width scaling (small CNN, Fashion-MNIST)")
  return {"paper": Study("width_paper", grid(**{"model.width": (0.25, 0.5, 0.75, 1.0, 1.5)}),
                         config="configs/vgg.py:D", seeds=(0,), scaling="params",
                         title="Width scaling (VGG D, ImageNet)")}[scale]
