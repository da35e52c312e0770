"""Study 7: width x data. Every width of the small CNN on every fraction of the training set,
fitted jointly as error(N, D) = a N^-alpha + b D^-beta + c (Rosenfeld et al. 2019; Hoffmann et
al. 2022, Sec. 3.3, eq. (2)), N the parameters and D the training examples; the collector also
predicts the largest N x D from the rest and gives the compute frontier N_opt(C) (Hoffmann et
al. 2022, eq. (4); cnn_jax.joint_fit).

Small scale: widths 0.125 to 1 (5,182 to 333,526 parameters) x 10%, 30% and 100% of
Fashion-MNIST's training split (less its 10% validation share: 5,400 to 54,000 images), 2
epochs each (the cost of a run grows with its D, as C = k N D assumes), evaluated each epoch,
the config's own Adam 1e-3 (not tuned: the arms differ in size, not architecture), 3 seeds: 36
runs. Planned: 2m49s of training, 20m49s with 30 s of start-up a run, which is most of it
(`--plan --images_per_sec=` the committed width table's rates: 19,631, 13,666, 11,391 and 6,174
images/s for widths 0.125 to 1); check with

  python run.py study --study=experiments/width_data.py:small --plan --images_per_sec=...
  python run.py study --study=experiments/width_data.py:small

Paper scale: AlexNet at widths 0.25 to 1 on the same fractions of ImageNet, its own recipe,
one seed (no intervals: the bootstrap needs two seeds at a grid point).
"""

from cnn_jax.study import SMALL_SEEDS, Study

WIDTHS = (0.125, 0.25, 0.5, 1.0)
FRACTIONS = (10, 30, 100)  # percent of the training split
EPOCHS = 2.0


def arms(widths, fractions) -> tuple:
  return tuple((f"width={w},train={f}pct",
                {"model.width": w, "data.train_split": f"train[:{f}%]"})
               for w in widths for f in fractions)


def get_study(scale="small"):
  if scale == "small":
    return Study("width_data_small", arms(WIDTHS, FRACTIONS), config="configs/simple_cnn.py:long",
                 base={"train.epochs": EPOCHS, "train.eval_every_epochs": 1.0},
                 seeds=SMALL_SEEDS, scaling="joint",
                 title=f"Width x data (small CNN, Fashion-MNIST, {EPOCHS:g} epochs per run)")
  return {"paper": Study("width_data_paper", arms((0.25, 0.5, 0.75, 1.0), FRACTIONS),
                         config="configs/alexnet.py:paper", seeds=(0,), scaling="joint",
                         title="Width x data (AlexNet, ImageNet)")}[scale]
