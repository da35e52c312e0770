"""Training throughput: images per second of training time, evaluations and checkpoints left
out, so the figure on the progress line and in metrics.jsonl is the step rate whatever falls
between two logs."""

from __future__ import annotations

import contextlib
import time
from typing import Callable


class TrainClock:
  """Counts images and the seconds spent training since the last `read`.

  `start()` after the first step (compilation is not training); `add(n)` for each later step;
  `with clock.paused():` around an evaluation or a checkpoint, after the steps before it
  have finished (so their time is counted); `read()` at a log gives images/s and starts a new
  interval. `training_seconds()`: the seconds since the clock was made less every pause (the
  first step's compilation included), which time-to-accuracy is read against.
  """

  def __init__(self, now: Callable[[], float] = time.monotonic):
    self.now = now
    self.started = False
    self._images, self._since, self._paused = 0, now(), 0.0
    self._made, self._all_paused, self._pause_begun = self._since, 0.0, None

  def start(self) -> None:
    self.started = True
    self._images, self._since, self._paused = 0, self.now(), 0.0

  def add(self, images: int) -> None:
    self._images += images

  @contextlib.contextmanager
  def paused(self):
    begun = self._pause_begun = self.now()
    try:
      yield
    finally:
      pause = self.now() - begun
      self._paused += pause
      self._all_paused += pause
      self._pause_begun = None

  def training_seconds(self) -> float:
    """Seconds of training since the clock was made, pauses (the one under way too) left out."""
    ongoing = self.now() - self._pause_begun if self._pause_begun is not None else 0.0
    return self.now() - self._made - self._all_paused - ongoing

  def read(self) -> float:
    """Images per second of training time since the last read (or start); starts anew."""
    seconds = self.now() - self._since - self._paused
    rate = self._images / seconds if seconds > 0 and self._images else 0.0
    self.start()
    return rate
