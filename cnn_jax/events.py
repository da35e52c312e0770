"""TensorBoard event files written without TensorFlow: scalars (the scalar dashboard's
summaries, as tf.summary.scalar writes them) and the HParams dashboard's summary, through
the tensorboard package's own event-file writer and summary protos. TensorBoard's writer
reaches its file system through `tensorboard.compat.tf`, which imports TensorFlow where it is
installed, unless the module `tensorboard.compat.notf` exists (TensorBoard's TensorFlow-free
build): the first writer made sets that module while TensorFlow is not loaded, so the stub
serves instead (importing this module changes nothing).

  w = EventWriter(logdir); w.write_scalars(step, {"loss": 0.5}); w.write_hparams({...})
"""

from __future__ import annotations

import sys
import time
import types


def _tensorboard():
  """tensorboard's event protos, summary builders and event-file writer, its file system
  routed to the TensorFlow-free stub unless TensorFlow is loaded already."""
  if "tensorflow" not in sys.modules:
    sys.modules.setdefault("tensorboard.compat.notf", types.ModuleType("tensorboard.compat.notf"))
  # pylint: disable=g-import-not-at-top
  from tensorboard.compat.proto import event_pb2
  from tensorboard.plugins.hparams import summary_v2 as hparams_summary
  from tensorboard.plugins.scalar import summary_v2 as scalar_summary
  from tensorboard.summary.writer.event_file_writer import EventFileWriter
  return event_pb2, hparams_summary, scalar_summary, EventFileWriter


class EventWriter:
  """One event file in `logdir`, as clu's SummaryWriter (tf.summary) writes it."""

  def __init__(self, logdir: str):
    self._event_pb2, self._hparams, self._scalar, writer = _tensorboard()
    self._writer = writer(logdir)

  def _add(self, step: int, summary) -> None:
    self._writer.add_event(self._event_pb2.Event(wall_time=time.time(), step=int(step),
                                                 summary=summary))

  def write_scalars(self, step: int, scalars: dict) -> None:
    for tag, value in scalars.items():
      self._add(step, self._scalar.scalar_pb(tag, float(value)))

  def write_hparams(self, hparams: dict) -> None:
    self._add(0, self._hparams.hparams_pb(hparams))

  def flush(self) -> None:
    self._writer.flush()

  def close(self) -> None:
    self._writer.close()
