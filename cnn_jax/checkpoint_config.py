"""The `checkpoint` config group: its defaults and rules, without Orbax (checkpoint.py, which
imports Orbax, re-exports them), so reading a config loads no checkpointing library."""

from __future__ import annotations

import ml_collections

from cnn_jax import schema
from cnn_jax.metrics import EVAL_METRICS


def defaults() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({
      "every_steps": 0,            # 0: save at every evaluation (and at the end)
      "keep": 3,                   # newest checkpoints kept
      "best_metric": "eval_top1",  # also keep the best by this metric ('' = off)
      "async_save": True,          # write in the background while training goes on
  })


RULES = {
    "every_steps": schema.at_least(0, "0 = at every evaluation", integer=True),
    "keep": schema.at_least(1, "newest checkpoints kept", integer=True),
    "best_metric": schema.Choice(("", *EVAL_METRICS)),
    "async_save": schema.Bool(),
}


def validate(c: ml_collections.ConfigDict) -> None:
  schema.check("checkpoint.", c, RULES)
