"""Study 2: AlexNet's 11x11 stride-4 stem against stacked 3x3 convolutions of the same
receptive field and stride (`model.stem=stacked3x3`: 3x3 convolutions with strides 1, 1, 2, 2).

The claim checked is VGG's (Simonyan & Zisserman 2015, Sec. 2.3): a stack of small filters in
place of one large one has more rectifications, "which makes the decision function more
discriminative", and fewer parameters, so the stacked stem should give the lower error. The
paper states no size for it.

  python run.py study --study=experiments/stem.py:small

Small scale: 3 epochs on a quarter of the training split less its validation share (13,500
images, 315 updates) for both stems, optim.lr tuned per arm on SMALL_LR_GRID (0.007, 0.02, 0.06)
on validation, 3 seeds: 12 runs. Planned: 11m51s of training, 17m51s with 30 s of start-up a
run (`--plan --images_per_sec=` the committed stem table's rates: 2,934 for the 11x11 stem, 385
for the stacked one, which costs 7x the MACs and most of the time).
"""

from cnn_jax.study import SMALL_LR_GRID, Comparison, at_scale, grid

# Small scale: the same epochs for both stems, as the paper compares them (not compute-matched:
# the stacked stem costs 7x the MACs), 3 epochs on a quarter of the training split less its
# validation share (13,500 images), evaluated each epoch (an evaluation reads the 6,000
# validation images: about a sixth more time for the stacked stem); optim.lr tuned per arm.
BUDGET = {"train.epochs": 3.0, "data.train_split": "train[:25%]",
          "train.eval_every_epochs": 1.0}

COMPARISONS = (
    Comparison(a="stem=stacked3x3", b="stem=paper", metric="top1_error", claim="lower",
               source="Simonyan & Zisserman 2015, Sec. 2.3: stacked 3x3 filters in place of "
                      "a large one make the decision function more discriminative"),
)


def get_study(scale="small"):
  return at_scale(scale, "stem", grid(**{"model.stem": ("paper", "stacked3x3")}),
                  ("configs/alexnet.py:small", "configs/alexnet.py:paper"),
                  "11x11/4 stem against stacked 3x3, AlexNet", budget=BUDGET,
                  tune=SMALL_LR_GRID, comparisons=COMPARISONS)
