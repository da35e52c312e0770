"""Study 3: overlapping (3x3 stride 2) against non-overlapping (2x2 stride 2) pooling
(Krizhevsky et al. 2012, Sec. 3.4: overlapping pooling lowers top-1 error by 0.4 points and
top-5 by 0.3).

  python run.py study --study=experiments/pooling.py:small
"""

from cnn_jax.study import Comparison, at_scale, grid

SOURCE = "Krizhevsky et al. 2012, Sec. 3.4: overlapping pooling reduces top-1 and top-5 error " \
         "rates by 0.4% and 0.3%"
COMPARISONS = tuple(
    Comparison(a="pooling=overlapping", b="pooling=non_overlapping", metric=metric,
               claim="lower", size=size, source=SOURCE)
    for metric, size in (("top1_error", 0.4), ("top5_error", 0.3)))


def get_study(scale="small"):
  return at_scale(scale, "pooling", grid(**{"model.pooling": ("overlapping", "non_overlapping")}),
                  ("configs/alexnet.py:small", "configs/alexnet.py:paper"),
                  "Overlapping against non-overlapping pooling, AlexNet",
                  comparisons=COMPARISONS)
