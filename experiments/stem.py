"""Study 2: AlexNet's 11x11 stride-4 stem against stacked 3x3 convolutions of the same
receptive field and stride (`model.stem=stacked3x3`: 3x3 convolutions with strides 1, 1, 2, 2).

The claim checked is VGG's (Simonyan & Zisserman 2015, Sec. 2.3): a stack of small filters in
place of one large one has more rectifications, "which makes the decision function more
discriminative", and fewer parameters, so the stacked stem should give the lower error. The
paper states no size for it.

  python run.py study --study=experiments/stem.py:small
"""

from cnn_jax.study import Comparison, at_scale, grid

COMPARISONS = (
    Comparison(a="stem=stacked3x3", b="stem=paper", metric="top1_error", claim="lower",
               source="Simonyan & Zisserman 2015, Sec. 2.3: stacked 3x3 filters in place of "
                      "a large one make the decision function more discriminative"),
)


def get_study(scale="small"):
  return at_scale(scale, "stem", grid(**{"model.stem": ("paper", "stacked3x3")}),
                  ("configs/alexnet.py:small", "configs/alexnet.py:paper"),
                  "11x11/4 stem against stacked 3x3, AlexNet", comparisons=COMPARISONS)
