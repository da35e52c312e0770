"""Stacked groups (cnn_jax/stacked.py): several runs in one program, each ending bitwise
equal to the same run trained alone, with its own complete work directory and resume."""

import os
import shutil
import signal

import numpy as np
import pytest
from PIL import Image

from cnn_jax import collect, config, metrics, preemption, stacked, train
from cnn_jax.errors import UserError
from helpers import load_config


@pytest.fixture(scope="module")
def images(tmp_path_factory):
  """Two classes of noise as image folders, 32 a class to train on (8 held out for
  validation) and 8 to test on."""
  root = tmp_path_factory.mktemp("images")
  rng = np.random.default_rng(0)
  for split, n in (("train", 32), ("test", 8)):
    for label, (lo, hi) in enumerate([(0, 150), (100, 255)]):
      os.makedirs(root / split / f"class{label}")
      for i in range(n):
        Image.fromarray(rng.integers(lo, hi, (28, 28), dtype=np.uint8), "L").save(
            root / split / f"class{label}" / f"{i}.png")
  return root


def tiny(images, seed=0, steps=6, **overrides):
  """The small CNN at width 0.125 for a few steps of 16 (48 training images: 3 steps an
  epoch), evaluated and saved every 2."""
  cfg = load_config("simple_cnn.py", "base")
  cfg.seed = seed
  cfg.model.width = 0.125
  cfg.model.num_classes = 2
  cfg.data.name = "folder"
  cfg.data.folder = str(images / "train")
  cfg.data.test_folder = str(images / "test")
  cfg.data.validation_fraction = 0.25
  cfg.data.manual_dir = ""
  cfg.train.batch_size = 16
  cfg.train.eval_batch_size = 8
  cfg.train.steps = steps
  cfg.train.eval_every_steps = 2
  cfg.train.log_every_steps = 1
  cfg.mesh.data = 1
  for key, value in overrides.items():
    group, name = key.split(".")
    cfg[group][name] = value
  return config.validate(cfg)


def records(workdir):
  return metrics.read_jsonl(os.path.join(workdir, "metrics.jsonl"))


def untimed(rows):
  """metrics.jsonl without what depends on the clock."""
  drop = {"images_per_sec", "time", "wall_time_s", "train_s", "stacked_runs"}
  return [{k: v for k, v in r.items() if k not in drop} for r in rows]


CONFIGS = ({"seed": 0}, {"seed": 1}, {"seed": 2, "optim.lr": 3e-3})


def configs(images):
  return [tiny(images, c["seed"], **{k: v for k, v in c.items() if k != "seed"})
          for c in CONFIGS]


@pytest.fixture(scope="module")
def alone(tmp_path_factory, images):
  """Each run of CONFIGS trained by itself: its final record and untimed log."""
  root = tmp_path_factory.mktemp("alone")
  out = []
  for i, cfg in enumerate(configs(images)):
    final = train.train(cfg, str(root / f"run{i}"))
    out.append((final, untimed(records(root / f"run{i}"))))
  return out


@pytest.mark.parametrize("program", stacked.PROGRAMS)
def test_a_stacked_group_equals_its_runs_trained_alone_bit_for_bit(images, tmp_path, alone,
                                                                  program):
  dirs = [str(tmp_path / f"run{i}") for i in range(len(CONFIGS))]
  finals = stacked.train_group(configs(images), dirs, program=program)
  for (want, want_rows), final, wd in zip(alone, finals, dirs):
    assert final["params_sha256"] == want["params_sha256"]
    for key in ("eval_top1", "eval_loss", "test_top1", "test_loss", "best_step", "step"):
      assert final[key] == want[key], key
    assert untimed(records(wd)) == want_rows  # every log line, evaluation and the final one
    for name in ("config.json", "curves.png", "tensorboard"):
      assert os.path.exists(os.path.join(wd, name))
    assert sorted(int(s) for s in os.listdir(os.path.join(wd, "checkpoints"))) == [2, 4, 6]
  # The runs differ (seeds, a learning rate): equality above is not of one run thrice.
  assert len({f["params_sha256"] for f in finals}) == len(CONFIGS)
  # Each final record says it was one of a group: the collector's cost of a run is its share.
  assert [records(wd)[-1]["stacked_runs"] for wd in dirs] == [3, 3, 3]
  row = {"records": [{"images_per_sec": 9.0}, {"images_per_sec": 10.0}],
         "final": {"stacked_runs": 3, "wall_time_s": 30.0}}
  assert collect._group_rate(row) == 30.0  # pylint: disable=protected-access
  assert collect._per_run(30.0, row["final"]) == 10.0  # pylint: disable=protected-access
  # Started again, a finished group reports the results and trains nothing.
  again = stacked.train_group(configs(images), dirs)
  assert [a["params_sha256"] for a in again] == [f["params_sha256"] for f in finals]


def test_a_stopped_group_resumes_each_run_from_its_own_checkpoint(images, tmp_path,
                                                                 alone):
  dirs = [str(tmp_path / f"run{i}") for i in range(len(CONFIGS))]
  runs = [train.Run(cfg, wd) for cfg, wd in zip(configs(images), dirs)]
  group = stacked.Group(runs, program="tuple")
  program, calls = group.program, [0]

  def stop_in_the_third(members):  # SIGTERM during the 3rd group step
    step = program(members)

    def wrapped(states, batches):
      calls[0] += 1
      if calls[0] == 3:
        os.kill(os.getpid(), signal.SIGTERM)
      return step(states, batches)
    return wrapped
  group.program = stop_in_the_third
  with pytest.raises(preemption.Interrupted) as e:
    group.train()
  assert e.value.step == 3 and e.value.exit_status == 128 + signal.SIGTERM
  assert [r.ckpt.latest_step() for r in runs] == [3, 3, 3]
  assert not any(r.get("final") for wd in dirs for r in records(wd))
  # As if a SIGKILL had caught the group between two runs' saves: the second run one
  # checkpoint behind (the laggard trains alone to the others' step, then all together).
  behind = os.path.join(dirs[1], "checkpoints")
  for step in os.listdir(behind):
    if int(step) == 3:
      shutil.rmtree(os.path.join(behind, step))
  finals = stacked.train_group(configs(images), dirs)
  for (want, want_rows), final, wd in zip(alone, finals, dirs):
    assert final["params_sha256"] == want["params_sha256"]
    assert untimed(records(wd)) == want_rows


def test_groups_stack_only_runs_that_differ_in_stackable_values(images):
  base = stacked.flat(tiny(images, 0))
  configs = {"a": base, "b": {**base, "seed": 1, "optim.lr": 0.5},
             "wide": {**base, "model.width": 0.25},
             "c": {**base, "seed": 2, "data.seed": 7}}
  assert stacked.groups(configs) == [["a", "b", "c"], ["wide"]]
  assert stacked.groups(configs, size=2) == [["a", "b"], ["wide"], ["c"]]
  why = stacked.reason(base, configs["wide"])
  assert "model.width (0.125 against 0.25)" in why and "seed" in why
  assert stacked.reason(base, {**base, "train.batch_size": 32}).startswith(
      "they differ in train.batch_size")


def test_a_group_refuses_runs_that_cannot_stack(images, tmp_path):
  a = train.Run(tiny(images, 0), str(tmp_path / "a"))
  b = train.Run(tiny(images, 0, **{"model.width": 0.25}), str(tmp_path / "b"))
  c = train.Run(tiny(images, 1, steps=4), str(tmp_path / "c"))
  try:
    with pytest.raises(UserError, match="model.width"):
      stacked.Group([a, b])
    with pytest.raises(UserError, match="train.steps"):
      stacked.Group([a, c])
  finally:
    for run in (a, b, c):
      run.close()


def test_parse_run_reads_run_py_train_arguments(tmp_path):
  cfg, workdir = stacked.parse_run(["--config=configs/simple_cnn.py", f"--workdir={tmp_path}",
                                    "--config.seed=3", "--config.optim.lr=0.002",
                                    "--config.model.input_shape=(28, 28, 1)"])
  assert (cfg.seed, cfg.optim.lr, workdir) == (3, 0.002, str(tmp_path))
  with pytest.raises(UserError, match="no_such"):
    stacked.parse_run(["--config=configs/simple_cnn.py", "--workdir=x",
                       "--config.no_such=1"])


def test_a_study_trains_its_seeds_as_one_group_through_the_cli(images, tmp_path, capsys):
  from cnn_jax import runlog, study, study_runner
  base = {"model.width": 0.125, "model.num_classes": 2, "data.name": "folder",
          "data.folder": str(images / "train"), "data.test_folder": str(images / "test"),
          "data.validation_fraction": 0.25, "data.manual_dir": "", "train.batch_size": 16,
          "train.eval_batch_size": 8, "train.steps": 6, "train.eval_every_steps": 2,
          "train.log_every_steps": 1, "mesh.data": 1}
  s = study.Study("t", (("a", {}),), base=base, seeds=(0, 1))  # configs/simple_cnn.py: stacks
  runs_dir = tmp_path / "runs"
  assert study_runner.run_local(s, str(runs_dir), poll=0.1) == []
  assert "started a__seed0, a__seed1 (one stacked group)" in capsys.readouterr().out
  # the same runs, each alone in its own `run.py train` child: the runner's children share one
  # environment (XLA's flags from startup.configure), which this test process need not have
  separate = study.Study("t", (("a", {}),), base=base, seeds=(0, 1), stack=False)
  alone_dir = tmp_path / "alone"
  assert study_runner.run_local(separate, str(alone_dir), poll=0.1) == []
  assert "one stacked group" not in capsys.readouterr().out
  for seed in (0, 1):
    final = runlog.final(str(runs_dir / f"a__seed{seed}"))
    assert final["params_sha256"] == runlog.final(str(alone_dir / f"a__seed{seed}"))[
        "params_sha256"]
  assert "its output is in" in (runs_dir / "a__seed1" / "log.txt").read_text()
