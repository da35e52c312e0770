"""Which checkpoint a run starts from, and what is done with those it cannot use.

Each checkpoint is classified once, by `checkpoint.Checkpoints.restore`: readable; unreadable
on its own terms (missing or truncated files, a bad index: `Unreadable`); or readable but
holding other parameters than the config's model (`Mismatch`, the config's fault). From the
newest down, the first readable checkpoint is used; the unreadable ones passed over are moved
to `checkpoints.corrupt/` by a training run (an evaluation only names them). If none is
readable nothing is moved, unless the user said so (`--discard_unreadable_checkpoints`); a
mismatch stops at once and touches nothing.
"""

from __future__ import annotations

from typing import Callable

from cnn_jax import checkpoint
from cnn_jax.errors import UserError


def _read(ckpt, like, step: int, explain: Callable):
  try:
    return ckpt.restore(step, like)
  except checkpoint.Mismatch as e:
    raise explain(e) from None


def latest(ckpt, like, explain: Callable, move: bool, discard_unreadable: bool,
           warn: Callable[[str], None]):
  """(state, step) of the newest readable checkpoint, (like, 0) if there is none."""
  unreadable = []
  for step in sorted(ckpt.all_steps(), reverse=True):
    try:
      state = _read(ckpt, like, step, explain)
    except checkpoint.Unreadable as e:
      unreadable.append(e)
      continue
    _set_aside(ckpt, unreadable, move, warn, f"resuming from step {step}")
    return state, int(step)
  if unreadable and not (discard_unreadable and move):
    raise UserError(
        f"all {len(unreadable)} checkpoints in {ckpt.directory} are unreadable "
        f"({unreadable[0]}); nothing was moved: restore them from a backup, or run again "
        "with --discard_unreadable_checkpoints to move them to checkpoints.corrupt/ and "
        "train from step 0")
  _set_aside(ckpt, unreadable, move, warn, "training from step 0")
  return like, 0


def _set_aside(ckpt, unreadable: list, move: bool, warn, then: str) -> None:
  for e in unreadable:
    if move:
      warn(f"warning: {e}; moved it to {ckpt.quarantine(e.step)}; {then}")
    else:
      warn(f"warning: {e}; skipped it")


def one(ckpt, like, which, explain: Callable):
  """(state, step) of the checkpoint `which` names: 'best' or a step number."""
  steps = ckpt.all_steps()
  if which == "best":
    step = ckpt.best_step()
    if step is None:
      raise UserError(f"no best checkpoint in {ckpt.directory} (is checkpoint.best_metric "
                      f"set?); saved steps: {steps}")
  elif isinstance(which, int) or str(which).isdigit():
    step = int(which)
  else:
    raise UserError(f"--checkpoint={which} must be latest, best or a step number; saved "
                    f"steps: {steps}")
  if step not in steps:
    raise UserError(f"no checkpoint at step {step} in {ckpt.directory}; saved steps: {steps}")
  try:
    return _read(ckpt, like, step, explain), step
  except checkpoint.Unreadable as e:
    raise UserError(f"{e}; evaluate another one with --checkpoint=STEP (saved steps: "
                    f"{steps})") from None


def explain(e: checkpoint.Mismatch, recorded: dict | None, cfg) -> UserError:
  """The one line for a checkpoint that does not fit the config, with what the run's
  config.json (`recorded`) says differs from `cfg`."""
  from cnn_jax import workdir  # pylint: disable=g-import-not-at-top
  changes = workdir.config_changes(recorded, cfg) if recorded else []
  return UserError(f"{e}" + (f" (config.json differs: {'; '.join(changes[:3])})"
                             if changes else "")
                   + "; run with the config it was trained with, or use another --workdir; "
                   "nothing was changed")
