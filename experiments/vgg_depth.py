"""Study 4: VGG depth, A (11 layers), B (13), D (16), E (19); and C against D: 1x1 against 3x3
convolutions at the same depth (Simonyan & Zisserman 2015, Table 3: error falls with depth,
and C is worse than D).

  python run.py study --study=experiments/vgg_depth.py:small
"""

from cnn_jax.study import SMALL as STUDY_SMALL, Study

# The study's small budget (2 epochs on a quarter of the training set), with He initialisation
# and a short warm-up standing in for the paper's pre-training of B-E from A (Sec. 3.1): with
# Glorot and this few steps, B to E stay at chance.
SMALL = {**STUDY_SMALL, "model.init": "he", "optim.warmup_epochs": 0.25}


def get_study(scale="small"):
  small = scale == "small"
  arms = tuple((v, {"config": f"configs/vgg.py:{'small_' if small else ''}{v}"})
               for v in ("A", "B", "C", "D", "E"))
  return {"small": Study("vgg_depth_small", arms, base=SMALL, seeds=(0, 1),
                         title="VGG depth A, B, C, D, E (Fashion-MNIST 32x32, 1/4 width)"),
          "paper": Study("vgg_depth_paper", arms, seeds=(0,),
                         title="VGG depth A, B, C, D, E (ImageNet)")}[scale]
