"""What the console and metrics.jsonl say while a run trains: the throughput of training time
only, one line per evaluation, and a progress line that a terminal redraws in place."""

import io

from cnn_jax import metrics
from cnn_jax.clock import TrainClock


class FakeTime:
  def __init__(self):
    self.t = 100.0

  def __call__(self):
    return self.t


def test_throughput_leaves_out_evaluations_and_checkpoints():
  now = FakeTime()
  clock = TrainClock(now)
  now.t += 7.0  # compilation: before start, not counted
  clock.start()
  rates = []
  for log in range(6):
    for _ in range(10):  # ten steps of 128 images, 20 ms each: 6,400 images/s
      now.t += 0.02
      clock.add(128)
    if log in (1, 3):  # an evaluation, then a checkpoint write, between two logs
      with clock.paused():
        now.t += 12.0
        during = clock.training_seconds()  # as the evaluation's record is written
      with clock.paused():
        now.t += 3.0
    rates.append(clock.read())
  assert all(abs(r / 6400 - 1) < 0.1 for r in rates), rates  # within 10% of the steady rate
  # the training seconds: the compilation and the 60 steps, not the 30 s of pauses
  assert abs(clock.training_seconds() - (7.0 + 60 * 0.02)) < 1e-9
  assert abs(during - (7.0 + 40 * 0.02)) < 1e-9  # the last evaluation, after 40 steps


class Terminal(io.StringIO):
  def isatty(self):
    return True


def test_an_evaluation_line_stands_above_the_redrawn_progress_line():
  tty = Terminal()
  progress = metrics.Progress(100, stream=tty)
  progress.update(10, loss=1.0)
  progress.note("eval at step 10 (epoch 1.00): top-1 50.00%")
  progress.update(20, loss=0.5)
  progress.close()
  out = tty.getvalue()
  assert out.startswith("\rstep 10/100")  # drawn in place
  assert "\reval at step 10 (epoch 1.00): top-1 50.00%" in out
  assert out.count("\n") == 2 and "\rstep 20/100" in out.split("\n")[1]


def test_a_file_gets_plain_lines():
  log = io.StringIO()
  progress = metrics.Progress(100, stream=log, interval=0.0)
  progress.update(10, loss=1.0)
  progress.note("eval at step 10")
  progress.update(20, loss=0.5)
  progress.close()
  lines = log.getvalue().splitlines()
  assert "\r" not in log.getvalue() and len(lines) == 3
  assert lines[0].startswith("step 10/100") and lines[1] == "eval at step 10"


def test_profile_steps_write_a_trace_and_evaluations_print_a_line(tmp_path, capsys):
  import glob

  import tensorflow_datasets as tfds

  from cnn_jax import train
  from helpers import tiny_training
  with tfds.testing.mock_data(num_examples=48):
    cfg = tiny_training("simple_cnn.py", steps=4, data=1)
    cfg.train.update(profile_steps=(1, 3), eval_every_steps=2)
    train.train(cfg, str(tmp_path))
  assert glob.glob(f"{tmp_path}/profile/**/*.xplane.pb", recursive=True)
  assert glob.glob(f"{tmp_path}/profile/**/perfetto_trace.json.gz", recursive=True)
  err = capsys.readouterr().err
  assert "profile of steps 2 to 3 in" in err
  evals = [ln for ln in err.splitlines() if ln.startswith("validation at step")]
  assert [ln.split(" (")[0] for ln in evals] == ["validation at step 2", "validation at step 4"]
  assert all("top-1" in ln and "top-5" in ln and "best top-1" in ln for ln in evals)
  import json
  with open(tmp_path / "metrics.jsonl") as f:
    records = [json.loads(line) for line in f]
  seconds = [r["train_s"] for r in records if "eval_top1" in r and not r.get("final")]
  assert len(seconds) == 2 and 0 < seconds[0] < seconds[1]  # training time, growing
