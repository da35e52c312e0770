"""What a run's metrics.jsonl says so far: its final record, its best evaluation, and
whether the evaluation of a step is logged (a resumed run reads these)."""

from __future__ import annotations

import os

from cnn_jax import metrics


def _records(workdir: str) -> list[dict]:
  path = os.path.join(workdir, metrics.JSONL)
  return metrics.read_jsonl(path) if os.path.exists(path) else []


def final(workdir: str) -> dict | None:
  """The last `"final": true` record, or None."""
  finals = [r for r in _records(workdir) if r.get("final")]
  return finals[-1] if finals else None


def best_eval(workdir: str) -> tuple[float, int]:
  """The best eval top-1 logged and its step (the earliest of ties); (-1, 0) if none."""
  logged = [(r["eval_top1"], r["step"]) for r in _records(workdir)
            if "eval_top1" in r and not r.get("final")]
  return max(logged, key=lambda x: (x[0], -x[1]), default=(-1.0, 0))


def eval_logged(workdir: str, step: int) -> bool:
  """Whether the evaluation at `step` is in the log."""
  return any(r.get("step") == step and "eval_top1" in r and not r.get("final")
             for r in _records(workdir))
