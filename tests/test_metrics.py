"""The metrics log, TensorBoard events, curve plots and the progress line."""

import glob
import io
import json
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from cnn_jax import metrics

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def lines(workdir):
  with open(os.path.join(workdir, metrics.JSONL)) as f:
    return [json.loads(line) for line in f]  # every line must be valid JSON


def test_write_converts_numpy_and_jax_scalars(tmp_path):
  with metrics.Writer(str(tmp_path)) as w:
    w.write(10, {"loss": np.float32(0.5), "lr": jnp.asarray(1e-3), "images": np.int64(128),
                 "eval_top1": 0.25, "count": 3})
    w.write_final({"eval_top1": jnp.float32(0.75)})
  first, final = lines(tmp_path)
  assert first == {"step": 10, "loss": 0.5, "lr": pytest.approx(1e-3), "images": 128,
                   "eval_top1": 0.25, "count": 3}
  assert list(first) == ["step", "loss", "lr", "images", "eval_top1", "count"]
  assert [type(first[k]) for k in first] == [int, float, float, int, float, int]
  assert final == {"final": True, "step": 10, "eval_top1": 0.75}


def test_write_rejects_arrays_objects_and_reserved_keys(tmp_path):
  with metrics.Writer(str(tmp_path)) as w:
    with pytest.raises(TypeError, match="shape"):
      w.write(1, {"loss": np.zeros(3)})
    with pytest.raises(TypeError, match="number or a string"):
      w.write(1, {"name": None})
    with pytest.raises(ValueError, match="reserved"):
      w.write(1, {"step": 2})
  assert lines(tmp_path) == []


def test_strings_go_to_jsonl_only(tmp_path):
  with metrics.Writer(str(tmp_path)) as w:
    w.write(1, {"layout": "fsdp", "loss": 0.5})
  assert lines(tmp_path) == [{"step": 1, "layout": "fsdp", "loss": 0.5}]


def test_second_writer_continues_the_file(tmp_path):
  with metrics.Writer(str(tmp_path)) as w:
    w.write(1, {"loss": 2.0})
    w.write(2, {"loss": 1.5})
  with metrics.Writer(str(tmp_path)) as w:
    w.write(3, {"loss": 1.0})
    w.write_final({"eval_top1": 0.5})
  assert [(r["step"], r.get("loss")) for r in lines(tmp_path)] == [
      (1, 2.0), (2, 1.5), (3, 1.0), (3, None)]


def test_write_final_after_resume_takes_the_files_last_step(tmp_path):
  with metrics.Writer(str(tmp_path)) as w:
    w.write(7, {"loss": 2.0})
  with metrics.Writer(str(tmp_path)) as w:
    w.write_final({"eval_top1": 0.5})
  assert lines(tmp_path)[-1] == {"final": True, "step": 7, "eval_top1": 0.5}


def test_write_final_takes_a_step_from_its_scalars(tmp_path):
  with metrics.Writer(str(tmp_path)) as w:
    w.write(7, {"loss": 2.0})
    w.write_final({"step": 9, "eval_top1": 0.5, "params": 333_526, "wall_time_s": 1.5})
  assert lines(tmp_path)[-1] == {"final": True, "step": 9, "eval_top1": 0.5, "params": 333_526,
                                 "wall_time_s": 1.5}


def test_truncate_after_drops_later_steps(tmp_path):
  with metrics.Writer(str(tmp_path)) as w:
    for step in range(1, 6):
      w.write(step, {"loss": 1.0 / step})
  with metrics.Writer(str(tmp_path)) as w:
    w.truncate_after(3)
    assert [r["step"] for r in lines(tmp_path)] == [1, 2, 3]
    w.write(4, {"loss": 0.1})
  assert [(r["step"], r["loss"]) for r in lines(tmp_path)] == [
      (1, 1.0), (2, 0.5), (3, pytest.approx(1 / 3)), (4, 0.1)]
  assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_read_jsonl_skips_a_truncated_last_line(tmp_path):
  path = tmp_path / metrics.JSONL
  path.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n{"step": 3, "lo')
  assert metrics.read_jsonl(path) == [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}]
  # A resumed writer drops the partial line before appending.
  with metrics.Writer(str(tmp_path)) as w:
    w.write(3, {"loss": 1.0})
  assert [r["step"] for r in lines(tmp_path)] == [1, 2, 3]


def test_read_jsonl_raises_on_a_bad_middle_line(tmp_path):
  path = tmp_path / metrics.JSONL
  path.write_text('{"step": 1}\n{"ste\n{"step": 3}\n')
  with pytest.raises(ValueError, match=":2:"):
    metrics.read_jsonl(path)


def read_events(logdir):
  """{tag: [(step, value)]} and the set of plugin names, from the event files under logdir."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  out, plugins = {}, set()
  for path in sorted(glob.glob(os.path.join(logdir, "events.out.tfevents.*"))):
    for event in tf.compat.v1.train.summary_iterator(path):
      for v in event.summary.value:
        plugins.add(v.metadata.plugin_data.plugin_name)
        out.setdefault(v.tag, []).append((event.step, float(tf.make_ndarray(v.tensor))))
  return out, plugins


def test_tensorboard_event_files_hold_the_scalars(tmp_path):
  with metrics.Writer(str(tmp_path)) as w:
    w.write(5, {"loss": np.float32(0.25), "lr": 0.125})
    w.write(6, {"loss": 0.5})
  logdir = os.path.join(tmp_path, metrics.TENSORBOARD)
  assert glob.glob(os.path.join(logdir, "events.out.tfevents.*"))
  events, plugins = read_events(logdir)
  assert events == {"loss": [(5, 0.25), (6, 0.5)], "lr": [(5, 0.125)]}
  assert "scalars" in plugins  # TensorBoard's scalar dashboard shows them


def test_disabled_writer_writes_nothing(tmp_path):
  workdir = tmp_path / "run"
  w = metrics.Writer(str(workdir), enabled=False)
  w.write(1, {"loss": 1.0})
  w.write_final({"eval_top1": 0.5})
  w.truncate_after(0)
  w.close()
  assert not workdir.exists()


def test_import_is_cheap():
  code = ("import sys, cnn_jax.metrics; "
          "print(sorted(m for m in ('tensorflow', 'matplotlib', 'jax', 'numpy') "
          "if m in sys.modules))")
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True,
                       check=True).stdout
  assert out.strip() == "[]"


def training_log(path, with_eval=True, with_epoch=True):
  with metrics.Writer(str(path)) as w:
    for step in range(0, 201, 10):
      row = {"loss": 2.0 * 0.99 ** step, "lr": 0.1 * 0.98 ** step, "images_per_sec": 1000.0}
      if with_epoch:
        row["epoch"] = step / 50
      if with_eval and step % 50 == 0:
        row.update(eval_top1=step / 400, eval_top5=step / 250, eval_loss=1.5)
      w.write(step, row)
    if with_eval:
      w.write_final({"eval_top1": 0.5, "eval_top5": 0.8})
  return os.path.join(path, metrics.JSONL)


@pytest.mark.parametrize("with_eval", [True, False])
def test_plot_curves_writes_a_png(tmp_path, with_eval):
  jsonl = training_log(tmp_path, with_eval=with_eval)
  png = tmp_path / "plots" / "curves.png"
  metrics.plot_curves(jsonl, str(png), title="simple_cnn")
  data = png.read_bytes()
  assert data.startswith(PNG_SIGNATURE) and len(data) > 10_000

  fig = metrics.curves_figure(metrics.read_jsonl(jsonl), "simple_cnn")
  assert len(fig.axes) == 3
  loss_ax, acc_ax, lr_ax = fig.axes
  assert len(loss_ax.lines) == (2 if with_eval else 1)
  assert len(acc_ax.lines) == (2 if with_eval else 0)
  assert len(lr_ax.lines) == 1 and lr_ax.get_yscale() == "log"
  if with_eval:  # percentages, not fractions; the final record is not a curve point
    top1 = acc_ax.lines[0]
    assert list(top1.get_xdata()) == [0, 50, 100, 150, 200]
    assert top1.get_ydata()[-1] == pytest.approx(50.0)
    assert "final top-1 50.00%" in acc_ax.get_title()
  assert [c.get_xlabel() for c in loss_ax.child_axes] == ["epoch"]


def test_plot_curves_with_almost_nothing(tmp_path):
  jsonl = tmp_path / metrics.JSONL
  jsonl.write_text('{"step": 0, "epoch": 0}\n')
  png = tmp_path / "curves.png"
  metrics.plot_curves(str(jsonl), str(png))
  assert png.read_bytes().startswith(PNG_SIGNATURE)
  fig = metrics.curves_figure(metrics.read_jsonl(jsonl))
  assert len(fig.axes) == 3 and not any(ax.lines for ax in fig.axes)


class Clock:

  def __init__(self):
    self.now = 1000.0

  def __call__(self):
    return self.now


@pytest.fixture
def clock(monkeypatch):
  c = Clock()
  monkeypatch.setattr(metrics.time, "monotonic", c)
  return c


def test_progress_plain_lines_on_a_non_tty(clock):
  stream = io.StringIO()
  p = metrics.Progress(1000, initial_step=0, stream=stream)
  clock.now += 10
  p.update(100, images_per_sec=1234.5, loss=np.float32(0.34123), lr=1e-3)
  out = stream.getvalue()
  assert out.endswith("\n") and "\r" not in out
  assert "step 100/1000" in out and "10.0%" in out
  assert "1,234 images/s" in out or "1,235 images/s" in out
  assert "ETA 1m30s" in out  # 900 steps at 10 steps/s
  assert "loss=0.3412" in out and "lr=0.001" in out
  assert "[##------------------]" in out


def test_progress_throttles_plain_lines_and_shows_the_last_on_close(clock):
  stream = io.StringIO()
  p = metrics.Progress(1000, stream=stream)
  for step in range(1, 50):  # 1 s apart: one line per 10 s
    clock.now += 1
    p.update(step, loss=1.0)
  printed = stream.getvalue().splitlines()
  assert [line.split()[1] for line in printed] == ["1/1000", "11/1000", "21/1000", "31/1000",
                                                   "41/1000"]
  p.close()
  assert stream.getvalue().splitlines()[-1].startswith("step 49/1000")
  p.close()  # nothing new to show
  assert len(stream.getvalue().splitlines()) == 6


def test_progress_eta_uses_the_recent_rate(clock):
  stream = io.StringIO()
  p = metrics.Progress(10_000, stream=stream, interval=0, window=60)
  clock.now += 300  # a slow start (compilation): no step in 300 s
  p.update(0)
  for step in range(100, 1001, 100):  # then 10 steps/s for 100 s
    clock.now += 10
    p.update(step)
  assert p.rate() == pytest.approx(10.0)
  assert stream.getvalue().splitlines()[-1].endswith("ETA 15m00s")


class FakeTTY(io.StringIO):

  def isatty(self):
    return True


def test_progress_redraws_in_place_on_a_tty(clock):
  stream = FakeTTY()
  p = metrics.Progress(100, initial_step=50, stream=stream)
  clock.now += 1
  p.update(60, loss=0.5)
  clock.now += 1
  p.update(100, loss=0.25)
  p.close()
  out = stream.getvalue()
  assert out.count("\r") == 2 and out.endswith("\n") and out.count("\n") == 1
  assert "step 60/100" in out and "step 100/100" in out and "100.0%" in out
  assert "ETA 0.0s" in out


def test_disabled_progress_prints_nothing():
  stream = io.StringIO()
  p = metrics.Progress(10, enabled=False, stream=stream)
  p.update(5, loss=1.0)
  p.close()
  assert stream.getvalue() == ""


@pytest.mark.parametrize("seconds, text", [
    (3723, "1h02m03s"), (245, "4m05s"), (12.34, "12.3s"), (0, "0.0s"), (59.96, "1m00s"),
    (3599.6, "1h00m00s"), (90061, "25h01m01s"), (float("inf"), "?"), (None, "?"),
])
def test_format_duration(seconds, text):
  assert metrics.format_duration(seconds) == text
