"""Checkpoints of the training state with Orbax's CheckpointManager.

A checkpoint holds everything the rest of the run depends on (parameters, batch statistics,
RNG streams, optimiser state, step, plateau record); the input position follows from the step.
Saves are asynchronous; the newest `keep` are kept, plus the best by a chosen eval metric.
"""

from __future__ import annotations

import hashlib
import os

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils
from orbax.checkpoint.checkpoint_managers import preservation_policy as pp

from cnn_jax.errors import ConfigError, UserError
from cnn_jax.metrics import EVAL_METRICS


def defaults() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({
      "every_steps": 0,            # 0: save at every evaluation (and at the end)
      "keep": 3,                   # newest checkpoints kept
      "best_metric": "eval_top1",  # also keep the best by this metric ('' = off)
      "async_save": True,          # write in the background while training goes on
  })


def validate(c: ml_collections.ConfigDict) -> None:
  if not (isinstance(c.keep, int) and c.keep >= 1):
    raise ConfigError(f"checkpoint.keep={c.keep!r} must be an int >= 1")
  if not (isinstance(c.every_steps, int) and c.every_steps >= 0):
    raise ConfigError(f"checkpoint.every_steps={c.every_steps!r} must be an int >= 0")
  if c.best_metric and c.best_metric not in EVAL_METRICS:
    raise ConfigError(f"checkpoint.best_metric={c.best_metric!r} must be eval_top1, eval_top5, "
                      "eval_loss or '' (off)")


class Checkpoints:
  """Save and restore the train state under `directory` (one sub-folder per step)."""

  def __init__(self, directory: str, c: ml_collections.ConfigDict):
    policies = [pp.LatestN(c.keep)]
    if c.best_metric:
      policies.append(pp.BestN(get_metric_fn=lambda m: m[c.best_metric],
                               reverse=c.best_metric.endswith("loss"), n=1,
                               keep_checkpoints_without_metrics=False))
    options = ocp.CheckpointManagerOptions(
        preservation_policy=pp.AnyPreservationPolicy(policies),
        enable_async_checkpointing=c.async_save, create=True, cleanup_tmp_directories=True)
    try:
      self.manager = ocp.CheckpointManager(os.path.abspath(directory), options=options)
    except OSError as e:
      raise UserError(f"cannot create checkpoints in {directory} ({e.strerror}); "
                      "choose a writable --workdir") from e
    self.best_metric = c.best_metric
    self.directory = os.path.abspath(directory)

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self.manager.all_steps())

  def quarantine(self, step: int) -> str:
    """Moves the checkpoint of `step` out of the way, to `<directory>.corrupt/<step>[.n]`;
    returns where it went. The newer-than-valid step can then be saved again."""
    target = os.path.join(self.directory + ".corrupt", str(step))
    if jax.process_index() == 0:
      os.makedirs(os.path.dirname(target), exist_ok=True)
      n = 0
      while os.path.exists(target + (f".{n}" if n else "")):
        n += 1
      target += f".{n}" if n else ""
      os.rename(os.path.join(self.directory, str(step)), target)
    multihost_utils.sync_global_devices(f"quarantine checkpoint {step}")
    self.manager.reload()
    return target

  def best_step(self) -> int | None:
    return self.manager.best_step() if self.best_metric else None

  def save(self, step: int, state, metrics: dict | None = None) -> None:
    metrics = {k: float(v) for k, v in (metrics or {}).items() if k.startswith("eval_")}
    if self.best_metric and self.best_metric not in metrics:
      metrics = None
    self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state)),
                      metrics=metrics)

  def restore(self, step: int, like):
    """The state saved at `step`, with the structure, shapes and shardings of `like`."""
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    restored = self.manager.restore(
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
    return restored.state

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()


def fingerprint(params) -> str:
  """SHA-256 of the parameters: each one's path, dtype, shape and bytes, in path order. Two
  runs with equal fingerprints ended with bitwise-equal parameters."""
  digest = hashlib.sha256()
  leaves = jax.tree_util.tree_flatten_with_path(params)[0]
  named = sorted((("/".join(str(getattr(k, "key", k)) for k in path), x) for path, x in leaves),
                 key=lambda item: item[0])
  for name, x in named:
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      x = multihost_utils.process_allgather(x, tiled=True)
    host = np.ascontiguousarray(np.asarray(x))
    digest.update(f"{name}:{host.dtype.str}:{host.shape};".encode())
    digest.update(host.tobytes())
  return digest.hexdigest()
