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

B to E start from the trained A of the same seed (Sec. 3.1: A's first four convolutional layers
and its three FC layers copied, `model.init_from`); each waits for that A, so A's seeds run
first. The layers not copied (and A's own) are He-initialised, not N(0, 0.01) as in the paper,
so that an 11-layer net without normalisation trains within this short budget.

Small scale, a subset of the data: 3 epochs on 30% of the training split less its validation
share (16,200 images, 378 updates of 128), evaluated each epoch on the 6,000 validation images,
one learning rate for every depth (the config's 0.02, cosine; the paper, too, trains every
configuration with one recipe), 3 seeds: 15 runs. Planned (`--plan --images_per_sec=` the
committed depth table's rates: A 1,750, B 1,397, C 1,400, D 1,667, E 875): 9m03s of training,
16m33s with 30 s of start-up a run.
"""

from cnn_jax.study import SMALL as STUDY_SMALL, SMALL_SEEDS, Comparison, Study

# The paper's procedure (Sec. 3.1): B to E start from the trained A of the same seed, its first
# four convolutional layers and its three FC layers copied (model.init_from_layers' default
# preset, vgg_a), the rest He-initialised; A itself from scratch.
SMALL = {**STUDY_SMALL, "data.train_split": "train[:30%]", "train.epochs": 3.0,
         "train.eval_every_epochs": 1.0, "optim.warmup_epochs": 0.25, "model.init": "he"}
FROM_A = {"model.init_from": "{study_dir}/A__seed{seed}"}
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
  arms = tuple((v, {"config": f"configs/vgg.py:{'small_' if small else ''}{v}",
                   **({} if v == "A" else FROM_A)})
               for v in ("A", "B", "C", "D", "E"))
  return {"small": Study("vgg_depth_small", arms, base=SMALL, seeds=SMALL_SEEDS,
                         comparisons=COMPARISONS,
                         title="VGG depth A, B, C, D, E (Fashion-MNIST 32x32, 1/4 width)"),
          "paper": Study("vgg_depth_paper", arms, seeds=(0,), comparisons=COMPARISONS,
                         title="VGG depth A, B, C, D, E (ImageNet)")}[scale]
