"""Study 3: overlapping (3x3 stride 2) against non-overlapping (2x2 stride 2) pooling
(Krizhevsky et al. 2012, Sec. 3.4: overlapping pooling lowers top-1 error by 0.4 points and
top-5 by 0.3).

  python run.py study --study=experiments/pooling.py:small

Small scale: 3 epochs on the whole training split less its validation share (54,000 images,
1,263 updates), optim.lr tuned per arm on SMALL_LR_GRID (0.007, 0.02, 0.06) on validation, 3
seeds: 2 arms x (3 + 3) = 12 runs. Planned: 11m01s of training, 17m01s with 30 s of start-up a
run (`--plan --images_per_sec=2934`, the small AlexNet's mean rate in the committed lrn and stem
tables; both poolings cost about the same).
"""

from cnn_jax.study import SMALL_LR_GRID, Comparison, at_scale, grid

# Small scale: 3 epochs on the whole training split less its validation share (54,000 images),
# evaluated each half epoch; optim.lr tuned per arm on SMALL_LR_GRID.
BUDGET = {"train.epochs": 3.0, "train.eval_every_epochs": 0.5}

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
                  budget=BUDGET, tune=SMALL_LR_GRID, comparisons=COMPARISONS)
