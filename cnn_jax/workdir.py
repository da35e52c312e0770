"""The work directory: writable, holding one run's config, and what a full disk looks like.

A work directory belongs to the config recorded in its config.json. Starting it again with a
config that would train a different run (another model, data, optimiser, batch or seed) is
refused, naming the keys that differ, unless the caller allows it. Keys that only say how long,
how often, where from or on what devices may change: training further, a new mesh or layout,
the dataset moved. One process at a time holds a work directory (`Lock`).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import time

from cnn_jax.errors import UserError

CONFIG = "config.json"
# Keys that may change between the sessions of one run (prefixes of dotted keys).
MAY_CHANGE = ("train.steps", "train.epochs", "train.flops", "train.eval_every_",
              "train.log_every_steps",
              "train.eval_batch_size", "train.skip_nonfinite", "train.profile_steps",
              "checkpoint.", "mesh.", "model.lowering", "model.rewrites",
              "data.data_dir", "data.manual_dir", "data.folder", "data.cache", "data.threads")


LOCK = ".lock"


def check_writable(workdir: str) -> None:
  """Checks that `workdir` could be created and written, creating nothing: the directory
  itself if it exists, else its nearest existing ancestor (a read-only file system fails)."""
  path = os.path.abspath(workdir)
  while not os.path.exists(path):
    path = os.path.dirname(path)
  if not (os.path.isdir(path) and os.access(path, os.W_OK | os.X_OK)):
    why = "not a directory" if not os.path.isdir(path) else "not writable"
    raise _not_writable(workdir, f"{path} is {why}")


def _not_writable(workdir: str, why: str) -> UserError:
  return UserError(f"work directory {workdir} is not writable ({why}); choose another "
                   "--workdir")


class Lock:
  """One process per work directory: an exclusive `flock` on `<workdir>/.lock`, which the
  kernel drops when the process ends however it ends (SIGKILL, a crash; a power loss or a
  rebooted host drops it too), so a stale lock never blocks the next run. The file records
  who holds it, for the message the next process prints. Of a multi-process run only
  process 0 takes it; the others share the directory with it."""

  def __init__(self, workdir: str):
    self.workdir, self.path, self._fd = workdir, os.path.join(workdir, LOCK), None

  @property
  def held(self) -> bool:
    return self._fd is not None

  def acquire(self) -> None:
    """Takes the lock, or raises UserError naming the process that holds it."""
    if self.held:
      return
    try:
      fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
      raise _not_writable(self.workdir, e.strerror) from e
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      os.close(fd)
      if e.errno not in (errno.EAGAIN, errno.EACCES):
        raise
      raise UserError(f"work directory {self.workdir} is in use by {self._holder()}; wait "
                      "for it to end or stop it, or use another --workdir") from None
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                             "command": " ".join(sys.argv), "since": time.time()}).encode())
    self._fd = fd

  def acquire_for_run(self, is_main: bool, only_if_exists: bool = False) -> None:
    """Process 0 takes the lock (if `only_if_exists`, only where the directory exists); with
    several processes every one calls this at the same point and learns whether it could."""
    import jax  # pylint: disable=g-import-not-at-top
    import numpy as np  # pylint: disable=g-import-not-at-top
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    error = None
    if is_main and (os.path.isdir(self.workdir) or not only_if_exists):
      try:
        self.acquire()
      except UserError as e:
        error = e
    if jax.process_count() > 1 and not multihost_utils.broadcast_one_to_all(
        np.int32(error is None)) and error is None:
      raise UserError(f"work directory {self.workdir} is in use (process 0 could not lock it)")
    if error is not None:
      raise error

  def _holder(self) -> str:
    try:
      with open(self.path) as f:
        h = json.load(f)
      since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(h["since"]))
      return f"process {h['pid']} on {h['host']} since {since} ({h['command']})"
    except (OSError, ValueError, KeyError, TypeError):
      return "another process"

  def release(self) -> None:
    """Drops the lock (the file stays: removing it could race with the next holder)."""
    if self._fd is not None:
      os.close(self._fd)
      self._fd = None


def restart_log(workdir: str) -> str | None:
  """Before a run starts again from step 0 in a directory that has logs (every checkpoint was
  lost, or none was written yet): moves metrics.jsonl and tensorboard/ aside, to
  `metrics.attempt<k>.jsonl` and `tensorboard.attempt<k>/`, so the new attempt's log starts
  clean and the old one is kept. Returns where metrics.jsonl went, if anywhere."""
  log = os.path.join(workdir, "metrics.jsonl")
  if not (os.path.exists(log) and os.path.getsize(log)):
    return None
  k = 1
  while os.path.exists(os.path.join(workdir, f"metrics.attempt{k}.jsonl")):
    k += 1
  moved = os.path.join(workdir, f"metrics.attempt{k}.jsonl")
  os.rename(log, moved)
  events = os.path.join(workdir, "tensorboard")
  if os.path.isdir(events):
    os.rename(events, os.path.join(workdir, f"tensorboard.attempt{k}"))
  return moved


def _flat(tree: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      out.update(_flat(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def flat_config(cfg) -> dict:
  """{'optim.lr': 0.01, ...}: a ConfigDict's (or a dict's) leaves by dotted key."""
  return _flat(cfg if isinstance(cfg, dict) else json.loads(cfg.to_json_best_effort()))


def config_changes(recorded: dict, cfg) -> list[str]:
  """'key: old -> new' for each run-defining key that differs between the recorded config
  and `cfg` (a ConfigDict or a dict). A key the record lacks (it was added to cnn_jax after
  the run began) is no change where `cfg` has it at its default."""
  from cnn_jax import config  # pylint: disable=g-import-not-at-top
  old, new = _flat(recorded), flat_config(cfg)
  model = new.get("model.name"), new.get("model.variant")
  defaults = flat_config(config.base(*model)) if all(model) else {}
  changes = []
  for key in sorted(set(old) | set(new)):
    if key.startswith(MAY_CHANGE) or old.get(key) == new.get(key):
      continue
    if key not in old and key in defaults and new.get(key) == defaults[key]:
      continue
    changes.append(f"{key}: {old.get(key, '(absent)')!r} -> {new.get(key, '(absent)')!r}")
  return changes


def recorded_config(workdir: str) -> dict | None:
  """The config.json of the run in `workdir`, or None if there is none or it is unreadable."""
  try:
    with open(os.path.join(workdir, CONFIG)) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def check_config(workdir: str, cfg, allow_change: bool = False) -> None:
  """Refuses a work directory whose recorded run has a different config."""
  path = os.path.join(workdir, CONFIG)
  if allow_change or not os.path.exists(path):
    return
  recorded = recorded_config(workdir)
  if recorded is None:
    return  # unreadable record: nothing to compare; it is rewritten at the start
  changes = config_changes(recorded, cfg)
  if changes:
    shown = "; ".join(changes[:3]) + (f"; and {len(changes) - 3} more" if len(changes) > 3
                                      else "")
    raise UserError(f"work directory {workdir} holds a run with a different config ({shown}); "
                    "use another --workdir, or --allow_config_change to continue it anyway")


def record_config(workdir: str, cfg) -> None:
  with open(os.path.join(workdir, CONFIG), "w") as f:
    f.write(cfg.to_json_best_effort(indent=2, sort_keys=True))


STORAGE_ERRORS = {errno.ENOSPC: "full", errno.EDQUOT: "full", errno.EROFS: "read-only",
                  errno.EACCES: "read-only", errno.EPERM: "read-only", errno.EIO: "failing"}


def storage_error(e: BaseException) -> str | None:
  """'full', 'read-only' or 'failing' if `e` (or what caused it) is the work directory's
  storage refusing a write; None for anything else."""
  seen = set()
  while e is not None and id(e) not in seen:
    seen.add(id(e))
    if isinstance(e, OSError) and e.errno in STORAGE_ERRORS:
      return STORAGE_ERRORS[e.errno]
    text = str(e)
    if "No space left on device" in text or "Disk quota exceeded" in text:
      return "full"
    if "Read-only file system" in text:
      return "read-only"
    e = e.__cause__ or e.__context__
  return None


def storage_message(workdir: str, kind: str, cause: str, kept: list[int]) -> str:
  """The one line for a work directory whose storage stopped taking writes."""
  what = {"full": f"the disk of work directory {workdir} is full",
          "read-only": f"work directory {workdir} stopped accepting writes",
          "failing": f"writing to work directory {workdir} failed"}[kind]
  fix = "free space or choose another --workdir" if kind == "full" else \
      "make it writable (or choose another --workdir)"
  saved = f"the checkpoints already written (steps {kept}) are kept" if kept else \
      "no checkpoint had been written yet"
  return f"{what} ({cause}); {fix}, then run the same command: {saved}"
