"""Study 2: AlexNet's 11x11 stride-4 stem against stacked 3x3 convolutions of the same
receptive field and stride (`model.stem=stacked3x3`: 3x3 convolutions with strides 1, 1, 2, 2).

  python run.py study --study=experiments/stem.py:small
"""

from cnn_jax.study import at_scale, grid


def get_study(scale="small"):
  return at_scale(scale, "stem", grid(**{"model.stem": ("paper", "stacked3x3")}),
                  ("configs/alexnet.py:small", "configs/alexnet.py:paper"),
                  "11x11/4 stem against stacked 3x3, AlexNet")
