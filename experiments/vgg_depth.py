"""Study 4: VGG depth, A (11 layers), B (13), D (16), E (19); and C against D: 1x1 against 3x3
convolutions at the same depth.

The claims checked (Simonyan & Zisserman 2015, Sec. 4.1 and Table 3, top-1 error): "the
classification error decreases with the increased ConvNet depth: from 11 layers in A to 19
layers in E" (B below A, D below B, E below A); "the configuration C (which contains three 1x1
conv. layers) performs worse than the configuration D, which uses 3x3 conv. layers throughout";
and "the error rate of our architecture saturates when the depth reaches 19 layers" (Table 3,
S = 256: D 27.0%, E 27.3%), checked as D and E the same within SAME_MARGIN = 1.0 point (the
margin of experiments/lrn.py). The text gives directions, not sizes, so none are claimed.

  python run.py study --study=experiments/vgg_depth.py:small
"""

from cnn_jax.study import SMALL as STUDY_SMALL, SMALL_SEEDS, Comparison, Study

# The study's small budget (2 epochs on a quarter of the training set), with He initialisation
# and a short warm-up standing in for the paper's pre-training of B-E from A (Sec. 3.1): with
# Glorot and this few steps, B to E stay at chance.
SMALL = {**STUDY_SMALL, "model.init": "he", "optim.warmup_epochs": 0.25}
SAME_MARGIN = 1.0
DEPTH = "Simonyan & Zisserman 2015, Sec. 4.1: error decreases with depth from A to E"
COMPARISONS = (
    Comparison(a="B", b="A", claim="lower", source=DEPTH),
    Comparison(a="D", b="B", claim="lower", source=DEPTH),
    Comparison(a="E", b="A", claim="lower", source=DEPTH),
    Comparison(a="D", b="C", claim="lower",
               source="Simonyan & Zisserman 2015, Sec. 4.1, Table 3: C (1x1 convolutions) is "
                      "worse than D (3x3 throughout)"),
    Comparison(a="E", b="D", claim="same", size=SAME_MARGIN,
               source="Simonyan & Zisserman 2015, Sec. 4.1: the error saturates at 19 layers "
                      f"(equivalence margin {SAME_MARGIN:g} point, chosen here)"),
)


def get_study(scale="small"):
  small = scale == "small"
  arms = tuple((v, {"config": f"configs/vgg.py:{'small_' if small else ''}{v}"})
               for v in ("A", "B", "C", "D", "E"))
  return {"small": Study("vgg_depth_small", arms, base=SMALL, seeds=SMALL_SEEDS,
                         comparisons=COMPARISONS,
                         title="VGG depth A, B, C, D, E (Fashion-MNIST 32x32, 1/4 width)"),
          "paper": Study("vgg_depth_paper", arms, seeds=(0,), comparisons=COMPARISONS,
                         title="VGG depth A, B, C, D, E (ImageNet)")}[scale]
