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

from cnn_jax.checkpoint_config import RULES, defaults, validate  # noqa: F401 - the group's
from cnn_jax.errors import UserError, one_line


class Checkpoints:
  """Save and restore the train state under `directory` (one sub-folder per step)."""

  def __init__(self, directory: str, c: ml_collections.ConfigDict, read_only: bool = False):
    policies, best = [pp.LatestN(c.keep)], {}
    if c.best_metric:
      metric = lambda m: m[c.best_metric]  # noqa: E731
      lower = c.best_metric.endswith("loss")
      policies.append(pp.BestN(get_metric_fn=metric, reverse=lower, n=1,
                               keep_checkpoints_without_metrics=False))
      # best_fn as well: only with it does Orbax write each checkpoint's metrics to disk
      # (so a resumed run still knows which is best) and best_step() rank them; without
      # it best_step() is the latest step
      best = {"best_fn": metric, "best_mode": "min" if lower else "max"}
    options = ocp.CheckpointManagerOptions(
        preservation_policy=pp.AnyPreservationPolicy(policies), read_only=read_only, **best,
        enable_async_checkpointing=c.async_save, create=not read_only,
        cleanup_tmp_directories=not read_only)
    try:
      self.manager = ocp.CheckpointManager(
          os.path.abspath(directory), options=options,
          item_handlers={"state": ocp.StandardCheckpointHandler()})
    except OSError as e:
      raise UserError(f"cannot create checkpoints in {directory} ({e.strerror}); "
                      "choose a writable --workdir") from e
    self.best_metric = c.best_metric
    self.directory = os.path.abspath(directory)

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self.manager.all_steps())

  def complete_steps(self) -> list[int]:
    """The steps whose checkpoint is on disk, complete (Orbax renames a finished one from its
    temporary name), read from the directory itself."""
    try:
      return sorted(int(d) for d in os.listdir(self.directory) if d.isdigit())
    except OSError:
      return []

  def check_for_errors(self) -> None:
    """Raises the error of a background save that failed since the last call, if any."""
    self.manager.check_for_errors()

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
    """The kept step with the best `best_metric` (the latest of ties); None without one."""
    return self.manager.best_step() if self.best_metric else None

  def save(self, step: int, state, metrics: dict | None = None) -> None:
    metrics = {k: float(v) for k, v in (metrics or {}).items() if k.startswith("eval_")}
    if self.best_metric and self.best_metric not in metrics:
      metrics = None
    self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state)),
                      metrics=metrics)

  def restore(self, step: int, like):
    """The state saved at `step`, with the structure, shapes and shardings of `like`.

    This is the one place where a failed restore is classified: a checkpoint whose own
    metadata cannot be read, or whose arrays cannot be read once the metadata fits, raises
    `Unreadable` (the caller may move it aside); one that reads but holds other parameters
    than `like` (another width, another norm) raises `Mismatch`, a UserError: the
    checkpoint is fine, the config is not, and nothing is touched.
    """
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    try:
      stored = self.manager.item_metadata(step)["state"]
      if stored is None:
        raise FileNotFoundError(f"no state in {self.directory}/{step}")
      stored = ocp.tree.to_flat_dict(stored)
    except Exception as e:  # noqa: BLE001 - whatever the reason, its metadata is unreadable
      raise Unreadable(step, e) from e
    difference = _difference(stored, ocp.tree.to_flat_dict(abstract))
    if difference:
      raise Mismatch(step, self.directory, difference)
    try:
      restored = self.manager.restore(
          step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
    except Exception as e:  # noqa: BLE001 - the metadata fits, so the arrays are damaged
      raise Unreadable(step, e) from e
    return restored.state

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()


class Unreadable(Exception):
  """A checkpoint that cannot be read on its own terms: missing or truncated files, a bad
  index. (Not a UserError: the caller decides whether to fall back or to stop.)"""

  def __init__(self, step: int, cause: BaseException):
    self.step, self.cause = step, cause
    super().__init__(f"the checkpoint at step {step} is unreadable ({one_line(cause)})")


class Mismatch(UserError):
  """A readable checkpoint whose parameters do not fit the config's model."""

  def __init__(self, step: int, directory: str, difference: str):
    self.step, self.difference = step, difference
    super().__init__(f"the checkpoint at step {step} in {directory} does not fit the config: "
                     f"{difference}")


def _name(key: tuple) -> str:
  parts = [str(k) for k in key]
  return "/".join(parts[:-1] if parts[-1] == "value" else parts)


def _difference(stored: dict, wanted: dict) -> str:
  """The first parameter (then any other array) whose presence or shape differs, in words;
  '' if none."""
  keys = sorted(set(stored) | set(wanted), key=lambda k: (k[0] != "params", k))
  for key in keys:
    if key not in wanted:
      return f"{_name(key)} is in the checkpoint but not in the config's model"
    if key not in stored:
      return f"{_name(key)} is in the config's model but not in the checkpoint"
    have, want = tuple(stored[key].shape), tuple(wanted[key].shape)
    if have != want:
      return f"{_name(key)} is {have} in the checkpoint and {want} in the config"
  return ""


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
