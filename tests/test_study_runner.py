"""The study runner with a stand-in trainer (tests/fake_train.py): per-arm tuning on validation
and its resumption, runs that start from other runs (order, and failure in one line), and the
thread counts each child of --processes=k gets."""

import json
import os
import sys

import pytest

from cnn_jax import collect, study, study_runner, tuning, xla_options
from cnn_jax.errors import UserError

FAKE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fake_train.py")
GRID = {"optim.lr": (0.007, 0.02, 0.06)}


@pytest.fixture
def fake(monkeypatch, tmp_path):
  """study.command runs fake_train.py; returns the log of starts and ends."""
  log = tmp_path / "fake.log"
  monkeypatch.setenv("FAKE_LOG", str(log))
  monkeypatch.delenv("FAKE_FAIL", raising=False)
  monkeypatch.setattr(study, "command", lambda run, wd: [
      sys.executable, FAKE, f"--workdir={wd}",
      *[f"--config.{k}={v}" for k, v in run["overrides"].items()]])
  monkeypatch.setattr(study_runner, "STACKED_CONFIGS", ())  # stacking: its own test
  monkeypatch.setattr(study_runner, "group_command", lambda members, threads: [
      sys.executable, FAKE, "--group", json.dumps([
          study.train_args(study_runner.with_threads(run, wd, threads), wd)
          for run, wd in members])])
  return log


def events(log):
  """{run name: (start, end or None)} from the fake trainer's log."""
  out = {}
  for line in log.read_text().splitlines():
    kind, name, t = line.split()
    start, end = out.get(name, (None, None))
    out[name] = (float(t), end) if kind == "start" else (start, float(t))
  return out


def read(path):
  with open(path) as f:
    return json.load(f)


def test_tuning_selects_on_validation_and_runs_the_seeds_with_it(fake, tmp_path, capsys):
  # Arm a's validation top-1 peaks at lr 0.02, b's at 0.06; both arms' test top-1 at 0.007.
  s = study.Study("t", (("a", {"model.peak": 0.02}), ("b", {"model.peak": 0.06})), seeds=(0, 1),
                  tune=GRID, tune_seed=5)
  runs_dir = str(tmp_path / "runs")
  assert study_runner.run_local(s, runs_dir, processes=2, poll=0.02) == []
  out = capsys.readouterr().out
  assert "10 runs: 0 finished already, 10 to run, 2 at a time" in out
  assert "tuned a: lr=0.02" in out and "tuned b: lr=0.06" in out
  saved = read(os.path.join(runs_dir, tuning.TUNED))
  assert {v: a["chosen"] for v, a in saved["arms"].items()} == {
      "a": {"optim.lr": 0.02}, "b": {"optim.lr": 0.06}}
  assert saved["seed"] == 5 and len(saved["arms"]["a"]["points"]) == 3
  # Phase 1 at the tuning seed, every grid point; phase 3 after its arm's phase 1, with its lr.
  seen = events(fake)
  tune_a = [f"tune/a__lr={v}" for v in GRID["optim.lr"]]
  assert set(tune_a) <= set(seen)
  assert read(os.path.join(runs_dir, "tune/a__lr=0.06", "seen.json"))["config"]["seed"] == "5"
  for seed in (0, 1):
    spec = read(os.path.join(runs_dir, f"b__seed{seed}", "study_run.json"))
    assert spec["overrides"]["optim.lr"] == 0.06 and spec["tuned"] == {"optim.lr": 0.06}
    assert seen[f"a__seed{seed}"][0] >= max(seen[n][1] for n in tune_a)
  assert read(os.path.join(runs_dir, "tune/a__lr=0.02", "study_run.json"))["tuning"] is True

  # The table: test metrics, the tuned column, no tuning run averaged; tuning.md marks the pick.
  result = collect.collect(runs_dir, str(tmp_path / "out"), "t")
  rows = {r["variant"]: r for r in result["rows"]}
  assert [(r["finished"], r["runs"], r["tuned"]) for r in rows.values()] == [
      (2, 2, "lr=0.02"), (2, 2, "lr=0.06")]
  assert rows["a"]["split"] == "test"
  md = (tmp_path / "out" / "table.md").read_text()
  assert "| tuned |" in md and "test top-1 error %" in md
  tuning_md = (tmp_path / "out" / "tuning.md").read_text()
  a_row = next(line for line in tuning_md.splitlines() if line.startswith("| a |"))
  assert a_row.count("**") == 2 and a_row.endswith("| lr=0.02 |")
  assert f"**{100 * (1 - (0.9 - 0.001 * 5)):.2f}**" in a_row  # the peak at tuning seed 5

  # Resuming: nothing to do; then a lost main run and a lost tuning run of b are redone, b's
  # choice staying the one tuned.json recorded (its tuning run is not rerun).
  assert study_runner.run_local(s, runs_dir, poll=0.02) == []
  assert "10 runs: 10 finished already, 0 to run" in capsys.readouterr().out
  os.remove(os.path.join(runs_dir, "a__seed1", "metrics.jsonl"))
  os.remove(os.path.join(runs_dir, "tune/b__lr=0.007", "metrics.jsonl"))
  fake.write_text("")
  assert study_runner.run_local(s, runs_dir, poll=0.02) == []
  assert set(events(fake)) == {"a__seed1"}


def test_ties_go_to_the_smaller_value_and_failed_points_are_no_candidates():
  assert tuning.choose([({"optim.lr": 0.03}, 0.9), ({"optim.lr": 0.01}, 0.9),
                        ({"optim.lr": 0.02}, 0.8)]) == {"optim.lr": 0.01}
  assert tuning.choose([({"optim.lr": 0.03}, None), ({"optim.lr": 0.01}, 0.5)]) == {
      "optim.lr": 0.01}
  assert tuning.choose([({"optim.lr": 0.03}, None)]) is None
  assert tuning.score({"best_eval_top1": 0.8, "eval_top1": 0.7, "test_top1": 0.99}) == 0.8


def test_a_run_starts_after_the_run_it_starts_from_and_fails_with_it(fake, tmp_path, capsys,
                                                                   monkeypatch):
  s = study.Study("d", (("A", {}), ("B", {"model.init_from": "{study_dir}/A__seed{seed}"})),
                  seeds=(0, 1, 2))
  runs_dir = str(tmp_path / "runs")
  monkeypatch.setenv("FAKE_FAIL", "A__seed1")
  failed = study_runner.run_local(s, runs_dir, processes=2, poll=0.02)
  assert failed == ["A__seed1", "B__seed1"]
  seen = events(fake)
  for seed in (0, 2):  # B of a seed only once A of that seed has finished
    assert seen[f"B__seed{seed}"][0] >= seen[f"A__seed{seed}"][1]
    spec = read(os.path.join(runs_dir, f"B__seed{seed}", "study_run.json"))
    assert spec["overrides"]["model.init_from"] == os.path.join(runs_dir, f"A__seed{seed}")
  assert "B__seed1" not in seen  # never started
  reason = [line for line in capsys.readouterr().out.splitlines() if "B__seed1" in line]
  assert reason == ["FAILED: B__seed1: model.init_from names the run A__seed1, which failed; "
                    "fix it and run the study again"]
  assert "A__seed1, which failed" in (tmp_path / "runs" / "B__seed1" / "log.txt").read_text()


def test_templates_name_their_fields():
  s = study.Study("x", (("A", {"model.init_from": "{study_dir}/{arm}"}),), seeds=(0,))
  with pytest.raises(UserError, match="not a template of study_dir, seed, data_seed, variant"):
    study.formatted(s.runs()[0], "/s")
  literal = study.Study("x", (("A", {"model.init_from_layers": "conv{{2}}"}),), seeds=(0,))
  assert study.formatted(literal.runs()[0], "/s")["overrides"]["model.init_from_layers"] == \
      "conv{2}"


def test_each_of_k_children_gets_its_share_of_the_cores(fake, tmp_path, monkeypatch):
  assert study_runner.threads_per_run(1, 16) is None
  assert study_runner.threads_per_run(2, 2) == 1 and study_runner.threads_per_run(3, 16) == 5
  assert study_runner.threads_per_run(4, 2) == 1
  monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=true --xla_dump_to=/tmp/d")
  s = study.Study("p", (("a", {}), ("b", {"data.threads": 3})), seeds=(0,))
  runs_dir = str(tmp_path / "runs")
  assert study_runner.run_local(s, runs_dir, processes=2, cores=8, poll=0.02) == []
  a = read(os.path.join(runs_dir, "a__seed0", "seen.json"))
  b = read(os.path.join(runs_dir, "b__seed0", "seen.json"))
  assert a["config"]["data.threads"] == "4" and b["config"]["data.threads"] == "3"
  # The user's XLA options stay as they were; the thread count is added.
  assert a["xla_flags"] == ("--xla_cpu_multi_thread_eigen=true --xla_dump_to=/tmp/d "
                            "intra_op_parallelism_threads=4")
  # What startup.configure() then does in the child keeps both and adds cnn_jax's defaults.
  merged = xla_options.with_defaults(study_runner.xla_flags("", 4))
  assert merged.startswith("--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=4")
  assert all(f"--{k}=" in merged for k in xla_options.CPU_DEFAULTS)
  # A run that began in another session keeps its recorded data.threads (its config check).
  monkeypatch.delenv("XLA_FLAGS")
  run = {**s.runs()[0], "overrides": {"seed": 0}}
  assert "--config.data.threads=3" in study_runner.child_command(
      run, os.path.join(runs_dir, "b__seed0"), 4)  # b's config.json records 3
  assert "--config.data.threads=4" in study_runner.child_command(
      run, str(tmp_path / "new"), 4)


def test_runs_that_differ_in_seeds_or_lr_train_as_stacked_groups(fake, tmp_path, capsys,
                                                                  monkeypatch):
  s = study.Study("t", (("a", {}), ("b", {"model.width": 0.5})), seeds=(0, 1, 2), tune=GRID,
                  stack=True)
  runs_dir = str(tmp_path / "runs")
  assert study_runner.run_local(s, runs_dir, processes=1, poll=0.02, max_group=3) == []
  groups = [line.split()[1] for line in fake.read_text().splitlines()
            if line.startswith("group ")]
  # each arm's tuning grid (one seed, three learning rates), then each arm's seeds
  assert groups == ["a__lr=0.007,a__lr=0.02,a__lr=0.06", "b__lr=0.007,b__lr=0.02,b__lr=0.06",
                    "a__seed0,a__seed1,a__seed2", "b__seed0,b__seed1,b__seed2"]
  assert "started a__seed0, a__seed1, a__seed2 (one stacked group)" in capsys.readouterr().out
  assert "its output is in" in (tmp_path / "runs" / "a__seed1" / "log.txt").read_text()
  # Runs of different shapes never stack; nor does a study that says so.
  assert not study_runner.stackable(s.runs()[0], s.runs()[3])
  assert not study_runner.stacks(study.Study("u", (("a", {}),), stack=False), s.runs()[0])


def test_by_default_any_variant_of_a_stacked_config_file_stacks_and_no_other():
  for spec, stacks in (("configs/simple_cnn.py", True), ("configs/simple_cnn.py:long", True),
                       ("configs/lenet5.py:paper", False)):
    u = study.Study("u", (("a", {}),), config=spec)
    assert study_runner.stacks(u, u.runs()[0]) is stacks, spec


def test_a_failed_group_leaves_its_runs_to_run_one_by_one(fake, tmp_path, capsys, monkeypatch):
  monkeypatch.setenv("FAKE_FAIL", "a__seed1")
  s = study.Study("t", (("a", {}),), seeds=(0, 1, 2), stack=True)
  runs_dir = str(tmp_path / "runs")
  assert study_runner.run_local(s, runs_dir, processes=1, poll=0.02) == ["a__seed1"]
  out = capsys.readouterr().out
  assert "the stacked group of a__seed0, a__seed1, a__seed2 failed (exit 1)" in out
  assert "a__seed1, a__seed2 left to run one by one" in out
  assert "FAILED (exit 1): a__seed1" in out and "done: a__seed2" in out
  assert all(study.finished(os.path.join(runs_dir, f"a__seed{k}")) for k in (0, 2))


def test_groups_leave_the_other_places_runs_to_start(fake, tmp_path):
  s = study.Study("t", (("a", {}),), seeds=(0, 1, 2, 3), stack=True)
  assert study_runner.run_local(s, str(tmp_path / "runs"), processes=2, poll=0.02) == []
  groups = sorted(line.split()[1] for line in fake.read_text().splitlines()
                  if line.startswith("group "))
  assert groups == ["a__seed0,a__seed1", "a__seed2,a__seed3"]  # two places, two groups of two
