"""Study 4: VGG depth, A (11 layers), B (13), D (16), E (19); and C against D: 1x1 against 3x3
convolutions at the same depth (Simonyan & Zisserman 2015, Table 3: error falls with depth,
and C is worse than D).

  python run.py study --study=experiments/vgg_depth.py:small
"""

from cnn_jax.study import Study

SMALL = {"train.epochs": 1.0, "data.train_split": "train[:25%]", "train.eval_every_epochs": 0.5}


def get_study(scale="small"):
  small = scale == "small"
  arms = tuple((v, {"config": f"configs/vgg.py:{'small_' if small else ''}{v}"})
               for v in ("A", "B", "C", "D", "E"))
  return {"small": Study("vgg_depth_small", arms, base=SMALL, seeds=(0, 1),
                         title="VGG depth A, B, C, D, E (Fashion-MNIST 32x32, 1/4 width)"),
          "paper": Study("vgg_depth_paper", arms, seeds=(0,),
                         title="VGG depth A, B, C, D, E (ImageNet)")}[scale]
