"""Study 3: overlapping (3x3 stride 2) against non-overlapping (2x2 stride 2) pooling
(Krizhevsky et al. 2012, Sec. 3.4: overlapping pooling lowers top-1 error by 0.4 points).

  python run.py study --study=experiments/pooling.py:small
"""

from cnn_jax.study import at_scale, grid


def get_study(scale="small"):
  return at_scale(scale, "pooling", grid(**{"model.pooling": ("overlapping", "non_overlapping")}),
                  ("configs/alexnet.py:small", "configs/alexnet.py:paper"),
                  "Overlapping against non-overlapping pooling, AlexNet")
