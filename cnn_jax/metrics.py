"""Training metrics: a JSON-lines log with TensorBoard beside it, curve plots and a progress line.

`Writer` appends one JSON object per call to `<workdir>/metrics.jsonl` ({"step": ..., **scalars})
and writes the same scalars to TensorBoard event files under `<workdir>/tensorboard/`. The JSON
log is the record the experiments read (`read_jsonl`, `plot_curves`); TensorBoard is for watching.
`Progress` draws one line per update: redrawn in place on a terminal, at most every ~10 s in logs.

Nothing heavy is imported with the module: TensorFlow (for the event files) on the first write,
matplotlib on the first plot.
"""

from __future__ import annotations

import collections
import json
import math
import os
import sys
import tempfile
import time

JSONL = "metrics.jsonl"
TENSORBOARD = "tensorboard"
# The keys plot_curves draws, first present wins.
LOSS_KEYS = ("train_loss", "loss")
LR_KEYS = ("lr", "learning_rate")
# What an evaluation reports; plateau decay and best-checkpoint choice key on one of these.
EVAL_METRICS = ("eval_top1", "eval_top5", "eval_loss")


def _plain(key, value):
  """A python int, float or str for `value` (numpy and jax scalars included); TypeError
  otherwise. Strings (e.g. the layout that ran) go to metrics.jsonl, not TensorBoard."""
  if isinstance(value, str):
    return value
  if hasattr(value, "item") and not isinstance(value, (int, float)):
    if getattr(value, "size", 1) != 1:
      raise TypeError(f"metric {key!r}: expected a scalar, got shape {value.shape}")
    value = value.item()  # a jax array waits for its computation here
  if isinstance(value, bool):
    return int(value)
  if isinstance(value, (int, float)):
    return value
  raise TypeError(f"metric {key!r}: expected a number or a string, got {type(value).__name__}")


def _atomic_write(path, data: bytes):
  """Writes `data` to `path` through a temporary file in the same folder and os.replace."""
  folder = os.path.dirname(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def read_jsonl(path) -> list[dict]:
  """The objects in a metrics.jsonl; an unparseable last line (a killed run's) is skipped.

  A bad line anywhere else is corruption, not a kill, and raises ValueError. Non-finite floats
  round-trip as Python's json writes them (NaN, Infinity).
  """
  with open(path, encoding="utf-8") as f:
    lines = f.read().split("\n")
  records = []
  last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
  for i, line in enumerate(lines[:last + 1]):
    if not line.strip():
      continue
    try:
      records.append(json.loads(line))
    except json.JSONDecodeError as e:
      if i == last:
        break
      raise ValueError(f"{path}:{i + 1}: not a JSON object ({e})") from None
  return records


def _event_writer(logdir: str):
  """A TensorBoard writer (events.py: scalars, and the HParams dashboard's summary), which
  imports no TensorFlow."""
  from cnn_jax import events  # pylint: disable=g-import-not-at-top
  return events.EventWriter(logdir)


class Writer:
  """metrics.jsonl and TensorBoard events in `workdir`; every method a no-op if not `enabled`.

  An existing metrics.jsonl is continued (a resumed run); a partial last line left by a killed
  run is dropped first. Call `truncate_after(restored_step)` on resume so that steps logged after
  the last checkpoint are not logged twice.
  """

  def __init__(self, workdir: str, enabled: bool = True):
    self.enabled = enabled
    self.path = os.path.join(workdir, JSONL)
    self.logdir = os.path.join(workdir, TENSORBOARD)
    self._file = None
    self._events = None
    self._last_step = None
    if not enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    if _ends_mid_line(self.path):
      self._rewrite(lambda r: True)
    self._file = open(self.path, "a", encoding="utf-8")

  def write(self, step: int, scalars: dict):
    """Appends {"step": step, **scalars} (flushed) and writes each scalar to TensorBoard."""
    if not self.enabled:
      return
    step = int(step)
    scalars = self._checked(scalars)
    self._append({"step": step, **scalars})
    self._last_step = step
    numbers = {k: v for k, v in scalars.items() if not isinstance(v, str)}
    if numbers:
      if self._events is None:
        self._events = _event_writer(self.logdir)
      self._events.write_scalars(step, numbers)
      self._events.flush()

  def write_hparams(self, hparams: dict):
    """The run's hyperparameters (flat: {'optim.lr': 0.01, ...}) for TensorBoard's HParams
    dashboard, which then sets the final metrics beside them for every run of a log root."""
    if not self.enabled:
      return
    if self._events is None:
      self._events = _event_writer(self.logdir)
    self._events.write_hparams({k: v if isinstance(v, (bool, int, float, str)) else str(v)
                                for k, v in hparams.items()})
    self._events.flush()

  def write_final(self, scalars: dict, step: int | None = None):
    """Appends {"final": true, "step": step, **scalars}.

    The step is `step`, else a "step" key in `scalars`, else the last step logged.
    """
    if not self.enabled:
      return
    scalars = dict(scalars)
    in_scalars = scalars.pop("step", None)
    step = next((s for s in (step, in_scalars, self._last_step) if s is not None), None)
    if step is None:  # nothing written by this process: the file's last step (a resumed run)
      steps = [r["step"] for r in read_jsonl(self.path) if "step" in r]
      step = steps[-1] if steps else 0
    self._append({"final": True, "step": int(step), **self._checked(scalars)})

  def truncate_after(self, step: int, drop_final: bool = False):
    """Rewrites metrics.jsonl (atomically) keeping only the objects with step <= `step`, and
    without the final objects if `drop_final` (a finished run being trained further)."""
    if not self.enabled:
      return
    self._file.close()
    self._rewrite(lambda r: r.get("step", -math.inf) <= step
                  and not (drop_final and r.get("final")))
    self._file = open(self.path, "a", encoding="utf-8")
    self._last_step = None

  def close(self):
    if not self.enabled:
      return
    if self._file is not None:
      self._file.close()
      self._file = None
    if self._events is not None:
      self._events.close()
      self._events = None

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()

  def _checked(self, scalars):
    for reserved in ("step", "final"):
      if reserved in scalars:
        raise ValueError(f"metric name {reserved!r} is reserved")
    return {str(k): _plain(k, v) for k, v in scalars.items()}

  def _append(self, record):
    self._file.write(json.dumps(record) + "\n")  # one write: a kill leaves at most a partial line
    self._file.flush()

  def _rewrite(self, keep):
    records = read_jsonl(self.path) if os.path.exists(self.path) else []
    text = "".join(json.dumps(r) + "\n" for r in records if keep(r))
    _atomic_write(self.path, text.encode("utf-8"))


def _ends_mid_line(path) -> bool:
  """Whether `path` exists and its last byte is not a newline."""
  try:
    with open(path, "rb") as f:
      if f.seek(0, os.SEEK_END) == 0:
        return False
      f.seek(-1, os.SEEK_END)
      return f.read(1) != b"\n"
  except FileNotFoundError:
    return False


def _series(records, keys):
  """(steps, values) of the first of `keys` present in any record, or None."""
  for key in keys:
    points = [(r["step"], r[key]) for r in records
              if "step" in r and isinstance(r.get(key), (int, float))]
    if points:
      return key, [p[0] for p in points], [p[1] for p in points]
  return None


def curves_figure(records: list[dict], title: str = ""):
  """The matplotlib Figure plot_curves saves: loss, accuracy (%) and learning rate vs step.

  Three panels always; a panel whose keys are absent says so instead of drawing lines. With an
  "epoch" key, the top panel gets an epoch axis on top.
  """
  from matplotlib import figure  # pylint: disable=g-import-not-at-top

  final = next((r for r in reversed(records) if r.get("final")), None)
  records = [r for r in records if not r.get("final")]
  fig = figure.Figure(figsize=(8, 9), layout="constrained")
  loss_ax, acc_ax, lr_ax = fig.subplots(3, 1, sharex=True)

  def draw(ax, keys, label, scale=1.0, style="-"):
    s = _series(records, keys)
    if s is not None:
      marker = "." if len(s[1]) < 50 else None  # sparse points (eval) stay visible
      ax.plot(s[1], [v * scale for v in s[2]], style, label=label, marker=marker)
    return s is not None

  drawn = [draw(loss_ax, LOSS_KEYS, "train"), draw(loss_ax, ("eval_loss",), "eval", style="--")]
  _finish(loss_ax, "loss", any(drawn))
  drawn = [draw(acc_ax, ("eval_top1",), "eval top-1", 100),
           draw(acc_ax, ("eval_top5",), "eval top-5", 100),
           draw(acc_ax, ("train_top1",), "train top-1", 100, "--")]
  _finish(acc_ax, "accuracy (%)", any(drawn))
  if final is not None:
    acc_ax.set_title(", ".join(f"final {name} {100 * final[k]:.2f}%" for k, name in
                               (("eval_top1", "top-1"), ("eval_top5", "top-5")) if k in final),
                     fontsize=9)
  lr = _series(records, LR_KEYS)
  if lr is not None and any(v > 0 for v in lr[2]):
    lr_ax.plot(*zip(*[(s, v) for s, v in zip(lr[1], lr[2]) if v > 0]), label=lr[0])
    lr_ax.set_yscale("log")
  _finish(lr_ax, "learning rate", lr is not None)
  lr_ax.set_xlabel("step")

  epochs = [(r["step"], r["epoch"]) for r in records
            if "step" in r and isinstance(r.get("epoch"), (int, float))]
  ratio = sum(s * e for s, e in epochs) / max(sum(s * s for s, _ in epochs), 1e-12)
  if epochs and ratio > 0:  # epochs per step, least squares through the origin
    top = loss_ax.secondary_xaxis("top", functions=(lambda s: s * ratio, lambda e: e / ratio))
    top.set_xlabel("epoch")
  if title:
    fig.suptitle(title)
  return fig


def _finish(ax, ylabel, has_data):
  ax.set_ylabel(ylabel)
  ax.grid(True, alpha=0.3)
  if has_data:
    ax.legend(loc="best", fontsize=8)
  else:
    ax.text(0.5, 0.5, "no data yet", transform=ax.transAxes, ha="center", va="center",
            color="gray")


def plot_curves(jsonl_path: str, png_path: str, title: str = "") -> None:
  """Saves a PNG of the training curves in `jsonl_path` (see curves_figure), atomically."""
  import io  # pylint: disable=g-import-not-at-top
  fig = curves_figure(read_jsonl(jsonl_path), title)
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=100)
  os.makedirs(os.path.dirname(os.path.abspath(png_path)), exist_ok=True)
  _atomic_write(png_path, buf.getvalue())


def format_duration(seconds) -> str:
  """3723 -> '1h02m03s', 245 -> '4m05s', 12.34 -> '12.3s'; '?' if unknown."""
  if seconds is None or not math.isfinite(seconds):
    return "?"
  seconds = max(0.0, float(seconds))
  if seconds < 59.95:
    return f"{seconds:.1f}s"
  total = int(round(seconds))
  h, rest = divmod(total, 3600)
  m, s = divmod(rest, 60)
  return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def _format_scalar(value) -> str:
  value = value.item() if hasattr(value, "item") else value
  return f"{value:.4g}" if isinstance(value, float) else str(value)


class Progress:
  """One progress line: step/total, percentage, bar, images/s, ETA and any scalars.

  On a terminal the line is redrawn in place (at most ~10 times a second); elsewhere (CI, log
  files) a plain line is printed at most every `interval` seconds, and at the last step. The ETA
  uses the step rate over the last `window` seconds, so compilation stops counting once past.
  """

  def __init__(self, total_steps: int, initial_step: int = 0, enabled: bool = True,
               stream=None, interval: float = 10.0, window: float = 60.0, width: int = 20):
    self.total = int(total_steps)
    self.enabled = enabled
    self.stream = stream = stream or sys.stderr  # the current one, not the one at import
    self.tty = enabled and bool(getattr(stream, "isatty", lambda: False)())
    self.interval = 0.1 if self.tty else interval
    self.window = window
    self.width = width
    self._times = collections.deque([(time.monotonic(), int(initial_step))])
    self._last_draw = -math.inf
    self._drawn_len = 0
    self._pending = None  # the newest line, if not yet shown

  def update(self, step: int, **scalars):
    if not self.enabled:
      return
    now, step = time.monotonic(), int(step)
    self._times.append((now, step))
    while len(self._times) > 2 and now - self._times[1][0] >= self.window:
      self._times.popleft()
    self._pending = self._line(step, scalars)
    if now - self._last_draw >= self.interval or step >= self.total:
      self._draw(now)

  def close(self):
    """Shows the newest line if it was held back, and ends the line."""
    if not self.enabled:
      return
    if self._pending is not None:
      self._draw(time.monotonic())
    if self.tty and self._drawn_len:
      self.stream.write("\n")
      self.stream.flush()
    self._drawn_len = 0

  def note(self, text: str):
    """Prints `text` as a line of its own (an evaluation's result) above the progress line,
    which a terminal then shows again."""
    if not self.enabled:
      return
    if self.tty and self._drawn_len:
      self.stream.write("\r" + text.ljust(self._drawn_len) + "\n")
      self._drawn_len = 0
    else:
      self.stream.write(text + "\n")
    self.stream.flush()
    self._last_draw = -math.inf  # the next update redraws the bar at once

  def rate(self) -> float | None:
    """Steps per second over the recent window, or None before two updates."""
    (t0, s0), (t1, s1) = self._times[0], self._times[-1]
    return (s1 - s0) / (t1 - t0) if t1 > t0 and s1 > s0 else None

  def _line(self, step, scalars):
    frac = min(max(step / self.total, 0.0), 1.0) if self.total > 0 else 1.0
    filled = int(frac * self.width)
    rate = self.rate()
    eta = 0.0 if step >= self.total else (self.total - step) / rate if rate else None
    parts = [f"step {step}/{self.total}", f"{100 * frac:5.1f}%",
             "[" + "#" * filled + "-" * (self.width - filled) + "]"]
    ips = scalars.pop("images_per_sec", None)
    if ips is not None:
      parts.append(f"{float(_plain('images_per_sec', ips)):,.0f} images/s")
    parts.append(f"ETA {format_duration(eta)}")
    parts += [f"{k}={_format_scalar(v)}" for k, v in scalars.items()]
    return "  ".join(parts)

  def _draw(self, now):
    line, self._pending, self._last_draw = self._pending, None, now
    if self.tty:
      self.stream.write("\r" + line.ljust(self._drawn_len))
      self._drawn_len = len(line)
    else:
      self.stream.write(line + "\n")
    self.stream.flush()
