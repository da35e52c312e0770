"""The work directory: writable, holding one run's config, and what a full disk looks like.

A work directory belongs to the config recorded in its config.json. Starting it again with a
config that would train a different run (another model, data, optimiser, batch or seed) is
refused, naming the keys that differ, unless the caller allows it. Keys that only say how long,
how often, where from or on what devices may change: training further, a new mesh or layout,
the dataset moved.
"""

from __future__ import annotations

import errno
import json
import os

from cnn_jax.errors import UserError

CONFIG = "config.json"
# Keys that may change between the sessions of one run (prefixes of dotted keys).
MAY_CHANGE = ("train.steps", "train.epochs", "train.eval_every_", "train.log_every_steps",
              "train.eval_batch_size", "train.skip_nonfinite", "checkpoint.", "mesh.",
              "data.data_dir", "data.manual_dir", "data.folder", "data.cache")


def check_writable(workdir: str) -> None:
  """Creates `workdir` and checks that a file can be written there."""
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, f".write_test_{os.getpid()}")
    with open(probe, "w") as f:
      f.write("ok")
    os.remove(probe)
  except OSError as e:
    raise UserError(f"work directory {workdir} is not writable ({e.strerror}); "
                    "choose another --workdir") from e


def _flat(tree: dict, prefix: str = "") -> dict:
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      out.update(_flat(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out


def config_changes(recorded: dict, cfg: dict) -> list[str]:
  """'key: old -> new' for each run-defining key that differs between the two configs."""
  old, new = _flat(recorded), _flat(cfg)
  changes = []
  for key in sorted(set(old) | set(new)):
    if key.startswith(MAY_CHANGE) or old.get(key) == new.get(key):
      continue
    changes.append(f"{key}: {old.get(key, '(absent)')!r} -> {new.get(key, '(absent)')!r}")
  return changes


def check_config(workdir: str, cfg, allow_change: bool = False) -> None:
  """Refuses a work directory whose recorded run has a different config."""
  path = os.path.join(workdir, CONFIG)
  if allow_change or not os.path.exists(path):
    return
  try:
    with open(path) as f:
      recorded = json.load(f)
  except (OSError, ValueError):
    return  # unreadable record: nothing to compare; it is rewritten at the start
  changes = config_changes(recorded, json.loads(cfg.to_json_best_effort()))
  if changes:
    shown = "; ".join(changes[:3]) + (f"; and {len(changes) - 3} more" if len(changes) > 3
                                      else "")
    raise UserError(f"work directory {workdir} holds a run with a different config ({shown}); "
                    "use another --workdir, or --allow_config_change to continue it anyway")


def record_config(workdir: str, cfg) -> None:
  with open(os.path.join(workdir, CONFIG), "w") as f:
    f.write(cfg.to_json_best_effort(indent=2, sort_keys=True))


def is_disk_full(e: BaseException) -> bool:
  """Whether `e` (or what caused it) is a full disk or an exceeded quota."""
  seen = set()
  while e is not None and id(e) not in seen:
    seen.add(id(e))
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
      return True
    if "No space left on device" in str(e) or "Disk quota exceeded" in str(e):
      return True
    e = e.__cause__ or e.__context__
  return False
