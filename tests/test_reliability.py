"""Preemption, exact resume, faults and bad input: a run stopped anywhere and started again
ends bitwise equal to one that ran straight through; mistakes are named in one line."""

import contextlib
import errno
import glob
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from cnn_jax import checkpoint, metrics, preemption, train
from cnn_jax.errors import UserError
from conftest import ROOT
from forked import ForkedRuns, wait_for
from helpers import load_config, tiny_training
from test_train import write_images

TIMING = ("images_per_sec", "wall_time_s", "time", "train_s")


@pytest.fixture
def mock_fashion_mnist():
  with tfds.testing.mock_data(num_examples=48):
    yield


def cfg7(**train_overrides):
  """7 steps, logged every 2, evaluated every 3, saved every 4: stops fall mid-window, between
  evaluations and checkpoints, and the last step is none of these."""
  cfg = tiny_training("simple_cnn.py", steps=7)
  cfg.train.update(log_every_steps=2, eval_every_steps=3, **train_overrides)
  cfg.checkpoint.every_steps = 4
  return cfg


def records(workdir):
  """metrics.jsonl without the timing fields, which no two runs share."""
  return [{k: v for k, v in r.items() if k not in TIMING}
          for r in metrics.read_jsonl(os.path.join(workdir, "metrics.jsonl"))]


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
  """The uninterrupted run, trained once for the module: its final metrics and records."""
  workdir = tmp_path_factory.mktemp("straight")
  with tfds.testing.mock_data(num_examples=48):
    final = train.train(cfg7(), str(workdir))
  return final, records(workdir)


@pytest.fixture
def straight(mock_fashion_mnist, straight_run):
  """The uninterrupted run, for a test that trains on the same mock data."""
  return straight_run


def assert_same_run(workdir, straight_run, final):
  want_final, want_records = straight_run
  assert final["params_sha256"] == want_final["params_sha256"]
  assert records(workdir) == want_records


def stop_at(signum, call: int):
  """A wrapper for a method that sends `signum` to this process in its `call`-th call."""
  def wrap(method):
    calls = [0]

    def wrapped(*args, **kwargs):
      calls[0] += 1
      if calls[0] == call:
        os.kill(os.getpid(), signum)
      return method(*args, **kwargs)
    return wrapped
  return wrap


@pytest.mark.parametrize("where,signum,stopped_at", [
    ("train_step", signal.SIGTERM, 5),   # during the 5th step
    ("eval_step", signal.SIGINT, 3),     # during the evaluation at step 3
    ("save", signal.SIGTERM, 4),         # while the checkpoint of step 4 is written
])
def test_signal_saves_and_the_same_command_resumes_exactly(straight, tmp_path, where, signum,
                                                           stopped_at):
  workdir = str(tmp_path / "stopped")
  run = train.Run(cfg7(), workdir)
  if where == "save":
    run.ckpt.save = stop_at(signum, 1)(run.ckpt.save)  # the first save: step 4
  else:
    setattr(run, where, stop_at(signum, stopped_at if where == "train_step" else 1)(
        getattr(run, where)))
  with pytest.raises(preemption.Interrupted) as e:
    run.train()
  assert e.value.step == stopped_at and e.value.signum == signum
  assert e.value.exit_status == 128 + signum
  assert run.ckpt.latest_step() == stopped_at
  assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # handlers restored
  assert not any(r.get("final") for r in records(workdir))
  final = train.train(cfg7(), workdir)
  assert_same_run(workdir, straight, final)


def test_fingerprint_names_the_parameters_bytes():
  a = {"conv1": {"kernel": jax.numpy.ones((2, 2))}}
  b = {"conv1": {"kernel": jax.numpy.ones((2, 2)).at[0, 0].set(1.0000001)}}
  c = {"conv2": {"kernel": jax.numpy.ones((2, 2))}}
  fa = checkpoint.fingerprint(a)
  assert re.fullmatch(r"[0-9a-f]{64}", fa)
  assert fa == checkpoint.fingerprint({"conv1": {"kernel": np.ones((2, 2), np.float32)}})
  assert fa != checkpoint.fingerprint(b) and fa != checkpoint.fingerprint(c)


# -- SIGKILL at random points ----------------------------------------------------------------

def write_noise(root, n_per_class=100):
  """Two classes of the same noise: the loss stays near log 2 (no denormal slow-down)."""
  from PIL import Image
  rng = np.random.default_rng(1)
  for label in range(2):
    os.makedirs(root / f"class{label}", exist_ok=True)
    for i in range(n_per_class):
      Image.fromarray(rng.integers(0, 255, (28, 28), dtype=np.uint8), "L").save(
          root / f"class{label}" / f"{i}.png")


def logged_step(workdir) -> int:
  """The newest step in metrics.jsonl (0 if none), read as the run writes it."""
  try:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
      lines = f.read().splitlines()
  except OSError:
    return 0
  steps = [int(m.group(1)) for m in map(re.compile(r'^\{"step": (\d+),').match, lines) if m]
  return max(steps, default=0)


def alive(pid) -> bool:
  try:
    os.kill(pid, 0)
    return True
  except ProcessLookupError:
    return False


def wait_until(condition, timeout=120.0) -> None:
  end = time.monotonic() + timeout
  while time.monotonic() < end and not condition():
    time.sleep(0.005)


KILLS = 6  # each costs a process start and a few checkpoints (the suite's slowest test)


def test_sigkill_at_random_points_then_resume_gives_the_same_parameters(tmp_path):
  write_noise(tmp_path / "images")
  args = ["train", "--config.data.name=folder", f"--config.data.folder={tmp_path / 'images'}",
          "--config.model.num_classes=2", "--config.data.validation_fraction=0.25",
          "--config.train.steps=60", "--config.train.batch_size=16",
          "--config.train.eval_batch_size=16", "--config.train.eval_every_steps=20",
          "--config.train.log_every_steps=3", "--config.checkpoint.every_steps=4",
          "--config.checkpoint.keep=1", "--config.checkpoint.best_metric=",
          # one device: the fastest start; sharded resume is tested in test_parallel
          "--config.mesh.data=1"]
  runs, rng = ForkedRuns(tmp_path), random.Random(0)
  try:
    kills, resumed_from, workdir = 0, [], tmp_path / "killed"
    while True:
      log = tmp_path / f"log{len(resumed_from)}.txt"
      pid = runs.start([*args, f"--workdir={workdir}"], log)
      if kills < KILLS and wait_for(log, "\nstep "):  # compiled; then a random point
        # a random number of steps on (timed by the log, not the clock, so a fast machine
        # cannot finish the run before the kill), then a random moment within a few steps
        target = min(50, logged_step(workdir) + rng.randint(3, 12))
        wait_until(lambda: logged_step(workdir) >= target or not alive(pid))
        time.sleep(rng.uniform(0.0, 0.05))
        with contextlib.suppress(ProcessLookupError):  # ended first: the asserts below say so
          os.kill(pid, signal.SIGKILL)
      end = runs.wait()
      text = open(log).read()
      found = re.findall(r"resuming from the checkpoint at step (\d+)", text)
      resumed_from.append(int(found[0]) if found else 0)
      if end["code"] == 0:
        break
      assert end["signal"] == signal.SIGKILL, text[-3000:]
      kills += 1
    runs.start([*args, f"--workdir={tmp_path / 'straight'}"], tmp_path / "straight.txt")
    assert runs.wait()["code"] == 0, open(tmp_path / "straight.txt").read()[-3000:]
  finally:
    runs.close()
  assert kills >= KILLS
  # a checkpoint once written is never lost (with keep=1, deleting the old one before the new
  # one is complete would show): each start resumes at least as far as the one before
  assert resumed_from == sorted(resumed_from) and resumed_from[-1] > 0, resumed_from
  killed, straight = records(workdir), records(tmp_path / "straight")
  assert [r for r in killed if r.get("final")][0]["params_sha256"] == \
      [r for r in straight if r.get("final")][0]["params_sha256"]
  assert killed == straight


# -- faults ----------------------------------------------------------------------------------

def truncate_largest_file(directory):
  path = max((p for p in glob.glob(f"{directory}/**/*", recursive=True) if os.path.isfile(p)),
             key=os.path.getsize)
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) // 2)


@pytest.mark.parametrize("damage", ["truncated", "missing"])
def test_corrupt_latest_checkpoint_falls_back_to_the_newest_valid(straight, tmp_path, capsys,
                                                                  damage):
  workdir = tmp_path / "damaged"
  run = train.Run(cfg7(), str(workdir))
  run.train_step = stop_at(signal.SIGTERM, 5)(run.train_step)
  with pytest.raises(preemption.Interrupted):
    run.train()  # checkpoints at steps 4 and 5
  assert run.ckpt.all_steps() == [4, 5]
  if damage == "truncated":
    truncate_largest_file(workdir / "checkpoints" / "5")
  else:
    shutil.rmtree(workdir / "checkpoints" / "5" / "state")
  capsys.readouterr()
  final = train.train(cfg7(), str(workdir))
  captured = capsys.readouterr()
  assert "the checkpoint at step 5 is unreadable" in captured.err
  assert "checkpoints.corrupt/5" in captured.err
  assert "resuming from the checkpoint at step 4" in captured.out
  assert os.path.isdir(workdir / "checkpoints.corrupt" / "5")
  assert_same_run(str(workdir), straight, final)


def nan_batch_at(run, bad_step):
  """Feeds a batch of NaN images at step `bad_step` (1-based)."""
  batches = run.ds.train_batches

  def poisoned(epoch, start_step=0):
    for i, batch in enumerate(batches(epoch, start_step)):
      if epoch * run.steps_per_epoch + start_step + i + 1 == bad_step:
        batch = {**batch, "image": np.full_like(batch["image"], np.nan)}
      yield batch
  run.ds.train_batches = poisoned


def test_non_finite_loss_stops_naming_the_step_and_keeps_the_checkpoint(mock_fashion_mnist,
                                                                         tmp_path):
  run = train.Run(cfg7(), str(tmp_path))
  nan_batch_at(run, 5)
  with pytest.raises(UserError, match="non-finite at step 5; the checkpoint at step 4 is kept;"
                                      ".*train.skip_nonfinite=True"):
    run.train()
  assert run.ckpt.all_steps() == [4]
  # nothing computed from the non-finite state was logged or evaluated
  assert all(np.isfinite(v) for r in records(tmp_path) for v in r.values()
             if isinstance(v, float))
  restored = train.Run(cfg7(), str(tmp_path))
  assert restored.restore() == 4
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(restored.state.params))


def test_non_finite_step_due_an_evaluation_stops_before_evaluating(mock_fashion_mnist,
                                                                    tmp_path):
  run = train.Run(cfg7(), str(tmp_path))
  nan_batch_at(run, 3)  # step 3 is evaluated, not logged
  with pytest.raises(UserError, match="non-finite at step 3; lower optim.lr"):
    run.train()
  assert not any("eval_top1" in r for r in records(tmp_path))
  assert run.ckpt.all_steps() == []


def test_skip_nonfinite_skips_and_counts(mock_fashion_mnist, tmp_path):
  run = train.Run(cfg7(skip_nonfinite=True), str(tmp_path))
  nan_batch_at(run, 5)
  final = run.train()
  assert final["skipped_steps"] == 1 and final["step"] == 7
  rows = [r for r in records(tmp_path) if "skipped_steps" in r and not r.get("final")]
  assert [r["skipped_steps"] for r in rows] == [0, 0, 1, 1]  # logged at steps 2, 4, 6, 7
  assert all(np.isfinite(r["loss"]) for r in rows)
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(run.state.params))


def test_full_disk_is_named_and_keeps_checkpoints(mock_fashion_mnist, tmp_path, monkeypatch):
  run = train.Run(cfg7(), str(tmp_path))
  append = metrics.Writer._append
  calls = [0]

  def append_until_full(self, record):
    calls[0] += 1
    if record.get("step") == 6:
      raise OSError(errno.ENOSPC, "No space left on device")
    return append(self, record)
  monkeypatch.setattr(metrics.Writer, "_append", append_until_full)
  with pytest.raises(UserError, match="work directory .* is full .*free space"):
    run.train()
  assert run.ckpt.all_steps() == [4]


def test_a_different_config_in_the_work_directory_is_refused(mock_fashion_mnist, tmp_path):
  train.train(cfg7(), str(tmp_path))
  recorded = (tmp_path / "config.json").read_text()
  changed = cfg7()
  changed.optim.lr = 0.5
  changed.seed = 3
  with pytest.raises(UserError, match=r"different config \(optim.lr: 0.01 -> 0.5; seed: 0 -> 3\)"
                                      r".*--allow_config_change"):
    train.train(changed, str(tmp_path))
  assert (tmp_path / "config.json").read_text() == recorded  # nothing written
  longer = cfg7()
  longer.train.steps, longer.mesh.data, longer.checkpoint.keep = 9, 1, 5
  assert train.train(longer, str(tmp_path))["step"] == 9  # training further is the same run
  assert train.train(changed, str(tmp_path), allow_config_change=True)["step"] == 9


# -- bad input through run.py ----------------------------------------------------------------

def cli(*args, cwd=ROOT):
  return subprocess.run([sys.executable, os.path.join(ROOT, "run.py"), *args], cwd=cwd,
                        capture_output=True, text=True, timeout=300)


def one_line_error(r) -> str:
  assert r.returncode == 2, r.stderr[-2000:]
  assert "Traceback" not in r.stderr
  lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
  assert len(lines) == 1, r.stderr[-2000:]
  return lines[0]


def broken_folder(tmp_path):
  write_images(tmp_path / "images", n_per_class=8)
  (tmp_path / "images" / "class0" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not a png")
  return ["--config.data.name=folder", f"--config.data.folder={tmp_path / 'images'}",
          "--config.model.num_classes=2", "--config.train.batch_size=8",
          "--config.train.steps=2", "--config.data.validation_fraction=0.25"]


def test_bad_input_through_the_cli_is_one_line_and_loses_nothing(tmp_path):
  folder = broken_folder(tmp_path)
  line = one_line_error(cli("train", f"--workdir={tmp_path / 'a'}", *folder))
  assert "broken.png" in line and "data.bad_images=skip" in line

  # a finished run, then the same work directory with another learning rate
  cfg = load_config("simple_cnn.py")
  for arg in [*folder, "--config.data.bad_images=skip"]:
    key, value = arg[len("--config."):].split("=", 1)
    group, name = key.split(".")
    cfg[group][name] = type(cfg[group][name])(value)
  train.train(cfg, str(tmp_path / "a"))
  before = {p: open(p, "rb").read() for p in glob.glob(f"{tmp_path / 'a'}/*.json*")}
  line = one_line_error(cli("train", f"--workdir={tmp_path / 'a'}", *folder,
                            "--config.data.bad_images=skip", "--config.optim.lr=0.1"))
  assert "different config (optim.lr: 0.003 -> 0.1)" in line and "--allow_config_change" in line
  assert {p: open(p, "rb").read() for p in before} == before  # nothing written is lost


def test_bad_data_and_work_directories_are_named(tmp_path, caplog):
  folder = broken_folder(tmp_path)
  cfg = load_config("simple_cnn.py")
  cfg.data.update(name="folder", folder=str(tmp_path / "images"), validation_fraction=0.25,
                  bad_images="skip")
  cfg.model.num_classes = 2
  cfg.train.update(batch_size=8, steps=2)
  del folder
  run = train.Run(cfg, str(tmp_path / "a"))
  assert run.ds.num_train + run.ds.num_eval == 16  # the broken image is left out ...
  assert "left out 1 of 17 images" in caplog.text  # ... and counted

  (tmp_path / "file").write_text("x")
  with pytest.raises(UserError, match="work directory .*file/run is not writable.*--workdir"):
    train.Run(cfg, str(tmp_path / "file" / "run"))

  mnist = load_config("simple_cnn.py")
  os.makedirs(tmp_path / "empty_manual")
  mnist.data.update(name="mnist", data_dir=str(tmp_path / "tfds"),
                    manual_dir=str(tmp_path / "empty_manual"))
  with pytest.raises(UserError, match="data.manual_dir=.*empty_manual.* lacks mnist's original "
                                      "files t10k-images-idx3-ubyte.gz"):
    train.Run(mnist, str(tmp_path / "b"))
  mnist.data.manual_dir = str(tmp_path / "nowhere")
  with pytest.raises(UserError, match="data.manual_dir=.*nowhere.* is not a directory"):
    train.Run(mnist, str(tmp_path / "b"))


def test_a_run_recorded_before_a_key_existed_resumes_with_the_key_at_its_default(
    mock_fashion_mnist, tmp_path):
  train.train(cfg7(), str(tmp_path))
  recorded = json.loads((tmp_path / "config.json").read_text())
  del recorded["data"]["seed"], recorded["model"]["rewrites"]  # keys added since
  recorded["model"]["lowering"] = "xla"  # the execution plan may change on resume
  (tmp_path / "config.json").write_text(json.dumps(recorded))
  longer = cfg7()
  longer.train.steps = 9
  assert train.train(longer, str(tmp_path))["step"] == 9
  recorded["data"]["seed"] = 4  # but a recorded value that differs is a different run
  (tmp_path / "config.json").write_text(json.dumps(recorded))
  with pytest.raises(UserError, match=r"data.seed: 4 -> -1"):
    train.train(cfg7(), str(tmp_path))
