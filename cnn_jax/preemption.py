"""Stopping cleanly on SIGTERM and SIGINT (preemption, scancel, Ctrl-C).

The first signal only raises a flag; the trainer checks it between steps and evaluation
batches, saves a checkpoint of the current step and raises `Interrupted`. A second signal
acts at once (the default action).
"""

from __future__ import annotations

import contextlib
import signal
import threading

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Interrupted(Exception):
  """The run stopped on a signal after saving a checkpoint of `step`."""

  def __init__(self, signum: int, step: int, workdir: str):
    self.signum, self.step, self.workdir = signum, step, workdir
    super().__init__(f"stopped by {signal.Signals(signum).name} at step {step}; its checkpoint "
                     f"is in {workdir}/checkpoints; run the same command to resume")

  @property
  def exit_status(self) -> int:
    return 128 + self.signum  # as the shell reports a process killed by the signal


class Flag:
  """Which signal arrived first (None if none)."""

  def __init__(self):
    self.signum: int | None = None

  def __bool__(self) -> bool:
    return self.signum is not None


@contextlib.contextmanager
def catch_signals():
  """Within the block, SIGTERM and SIGINT set the yielded flag instead of stopping."""
  flag = Flag()
  if threading.current_thread() is not threading.main_thread():
    yield flag  # signals are delivered to the main thread only
    return
  previous = {s: signal.getsignal(s) for s in SIGNALS}

  def handler(signum, frame):
    del frame
    flag.signum = signum
    for s in SIGNALS:  # a second signal stops at once
      signal.signal(s, previous[s])

  for s in SIGNALS:
    signal.signal(s, handler)
  try:
    yield flag
  finally:
    for s in SIGNALS:
      signal.signal(s, previous[s])
