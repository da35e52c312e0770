"""Study 6: data scaling. The same network and number of updates on growing fractions of the
training set; the error is fitted as a power law in the number of training examples.

  python run.py study --study=experiments/data_scaling.py:small
"""

from cnn_jax.study import SMALL_SEEDS, Study

FRACTIONS = (2, 5, 10, 25, 50, 100)  # percent of the training split


def get_study(scale="small"):
  arms = tuple((f"train={f}pct", {"data.train_split": f"train[:{f}%]"}) for f in FRACTIONS)
  if scale == "small":  # 600 updates of 128 whatever the fraction
    return Study("data_scaling_small", arms, config="configs/simple_cnn.py:long",
                 base={"train.steps": 600, "train.eval_every_steps": 300}, seeds=SMALL_SEEDS,
                 scaling="train_examples", title="Data scaling (small CNN, Fashion-MNIST)")
  return {"paper": Study("data_scaling_paper", arms, config="configs/alexnet.py:paper",
                         seeds=(0,), scaling="train_examples",
                         title="Data scaling (AlexNet, ImageNet)")}[scale]
