"""Optimisers, learning-rate schedules, weight decay, freezing: all optax, all from config.

The papers' recipe (Krizhevsky et al. 2012 Sec. 5; Simonyan & Zisserman 2015 Sec. 3.1): SGD
with momentum 0.9, L2 weight decay 5e-4 added to the gradient, and the learning rate divided by
10 when the validation accuracy stops improving. The decay is applied before momentum, as in
optax and PyTorch; the papers fold the learning rate into the velocity instead, which differs
only while the rate changes.
"""

from __future__ import annotations

import re
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from cnn_jax import schema
from cnn_jax.errors import ConfigError
from cnn_jax.metrics import EVAL_METRICS

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "step", "plateau", "cosine")


def defaults() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({
      "name": "sgd",                 # sgd | adam | adamw
      "lr": 0.01,                    # peak learning rate
      "momentum": 0.9,               # sgd
      "nesterov": False,             # sgd
      "b1": 0.9, "b2": 0.999, "eps": 1e-8,   # adam, adamw
      "weight_decay": 5e-4,          # sgd, adam: L2 added to the gradient; adamw: decoupled
      "weight_decay_params": "kernel$",  # regex on parameter paths ('fc6/kernel') to decay
      "schedule": "constant",        # constant | step | plateau | cosine
      "warmup_epochs": 0.0,          # linear warmup from 0, before any schedule
      "decay_epochs": (),            # step: epochs at which the rate is multiplied by decay_factor
      "decay_factor": 0.1,           # step and plateau
      "plateau_metric": "eval_top1",  # plateau: higher is better for *top1/*top5, lower for *loss
      "plateau_patience": 1,         # plateau: evaluations without improvement before a decay
      "plateau_min_delta": 1e-4,     # plateau: smallest change that counts as an improvement
      "plateau_max_decays": 3,       # plateau: AlexNet decayed three times before stopping
      "label_smoothing": 0.0,
      "accumulate_steps": 1,         # split each batch into this many micro-batches
      "clip_norm": 0.0,              # global gradient-norm clipping; 0 = off
      "freeze": "",                  # regex on parameter paths to keep fixed (no updates)
      "lr_multipliers": (),          # ('regex=factor', ...): that group's learning rate x factor
  })


RULES = {
    "name": schema.Choice(OPTIMIZERS),
    "schedule": schema.Choice(SCHEDULES),
    "lr": schema.positive("e.g. 0.01"),
    "momentum": schema.fraction("e.g. 0.9"),
    "nesterov": schema.Bool(),
    "b1": schema.fraction("e.g. 0.9"),
    "b2": schema.fraction("e.g. 0.999"),
    "eps": schema.positive("e.g. 1e-8"),
    "weight_decay": schema.at_least(0, "e.g. 5e-4; 0 = off"),
    "weight_decay_params": schema.Str(),
    "warmup_epochs": schema.at_least(0, "0 = off"),
    "decay_factor": schema.fraction("e.g. 0.1", high_open=False, low_open=True),
    "plateau_metric": schema.Choice(EVAL_METRICS),
    "plateau_patience": schema.at_least(1, "evaluations without improvement", integer=True),
    "plateau_min_delta": schema.at_least(0),
    "plateau_max_decays": schema.at_least(0, "AlexNet: 3", integer=True),
    "label_smoothing": schema.fraction("e.g. 0.1; 0 = off"),
    "accumulate_steps": schema.at_least(1, "micro-batches per update", integer=True),
    "clip_norm": schema.at_least(0, "0 = off"),
    "freeze": schema.Str(),
}


def validate(o: ml_collections.ConfigDict) -> None:
  schema.check("optim.", o, RULES)
  epochs = o.decay_epochs
  if not (isinstance(epochs, (tuple, list))
          and all(schema.Num(low=0, low_open=True).ok(e) for e in epochs)):
    raise ConfigError(f"optim.decay_epochs={epochs!r} must be a tuple of positive epochs, "
                      "e.g. '(30, 60)'")
  if o.schedule == "step" and not epochs:
    raise ConfigError("optim.schedule='step' needs optim.decay_epochs, e.g. "
                      "--config.optim.decay_epochs='(30, 60)'")
  if list(epochs) != sorted(epochs):
    raise ConfigError(f"optim.decay_epochs={tuple(epochs)} must be increasing")
  lr_multipliers(o.lr_multipliers)
  for key in ("weight_decay_params", "freeze"):
    try:
      re.compile(o[key])
    except re.error as e:
      raise ConfigError(f"optim.{key}={o[key]!r} is not a regular expression ({e})") from None


def schedule(o, steps_per_epoch: int, total_steps: int) -> Callable[[Any], Any]:
  """The learning rate as a function of the update count (before any plateau decay)."""
  warmup = int(round(o.warmup_epochs * steps_per_epoch))
  if o.schedule == "cosine" and warmup == 0:
    return optax.cosine_decay_schedule(o.lr, max(total_steps, 1))
  if o.schedule == "cosine":
    return optax.warmup_cosine_decay_schedule(0.0, o.lr, warmup, max(total_steps, warmup + 1))
  if o.schedule == "step":
    main = optax.piecewise_constant_schedule(
        o.lr, {int(round(e * steps_per_epoch)) - warmup: o.decay_factor
               for e in o.decay_epochs})
  else:  # constant, plateau
    main = optax.constant_schedule(o.lr)
  if warmup == 0:
    return main
  return optax.join_schedules([optax.linear_schedule(0.0, o.lr, warmup), main], [warmup])


def lr_multipliers(entries) -> list[tuple[re.Pattern, float]]:
  """optim.lr_multipliers parsed: [(regex, factor)], e.g. ('conv.*=0.1',)."""
  if not isinstance(entries, (tuple, list)):
    raise ConfigError(f"optim.lr_multipliers={entries!r} must be a tuple of 'regex=factor' "
                      "strings, e.g. \"('conv.*=0.1',)\"")
  out = []
  for entry in entries:
    regex, eq, factor = str(entry).rpartition("=")
    try:
      value = float(factor)
      if not eq or not np.isfinite(value) or value < 0:
        raise ValueError
      out.append((re.compile(regex), value))
    except (ValueError, re.error):
      raise ConfigError(f"optim.lr_multipliers: {entry!r} is not 'regex=factor' with a "
                        "regular expression and a factor >= 0, e.g. 'conv.*=0.1'") from None
  return out


def scale_by_path(params, entries) -> optax.GradientTransformation:
  """Each update times the factor of the first optim.lr_multipliers entry its parameter's
  path matches (1 if none): per-group learning rates, as PyTorch's parameter groups. Applied
  after the learning rate, so with SGD a group at 0.1 moves 0.1 times as far."""
  rules = lr_multipliers(entries)
  used = [False] * len(rules)

  def factor(path, _):
    name = "/".join(str(k.key) for k in path if isinstance(k, jax.tree_util.DictKey))
    for i, (regex, value) in enumerate(rules):
      if regex.search(name):
        used[i] = True
        return value
    return 1.0
  factors = jax.tree_util.tree_map_with_path(factor, params)
  for (regex, _), hit, entry in zip(rules, used, entries):
    if not hit:
      raise ConfigError(f"optim.lr_multipliers: {entry!r} matches no parameter of this model "
                        "(paths look like 'conv1/kernel'); fix its regex")

  def update(updates, state, params=None):
    del params
    return jax.tree.map(lambda u, f: u * jnp.asarray(f, u.dtype), updates, factors), state
  return optax.GradientTransformation(lambda _: optax.EmptyState(), update)


def path_mask(params, pattern: str):
  """A tree of bools over `params`: whether the parameter's path ('conv1/kernel') matches."""
  regex = re.compile(pattern)

  def match(path, _):
    names = [str(k.key) for k in path if isinstance(k, jax.tree_util.DictKey)]
    return bool(pattern) and regex.search("/".join(names)) is not None
  return jax.tree_util.tree_map_with_path(match, params)


class LRScaleState(NamedTuple):
  """The factor by which plateau decays have multiplied the learning rate."""
  scale: jax.Array


def scale_by_lr_scale() -> optax.GradientTransformation:
  """Multiplies updates by a scale kept in the optimiser state (set by `set_lr_scale`)."""
  def init(params):
    del params
    return LRScaleState(jnp.ones([], jnp.float32))

  def update(updates, state, params=None):
    del params
    return jax.tree.map(lambda u: u * state.scale.astype(u.dtype), updates), state
  return optax.GradientTransformation(init, update)


def _is_scale(x):
  return isinstance(x, LRScaleState)


def set_lr_scale(opt_state, scale):
  return jax.tree.map(lambda s: LRScaleState(jnp.asarray(scale, jnp.float32))
                      if _is_scale(s) else s, opt_state, is_leaf=_is_scale)


def get_lr_scale(opt_state) -> float:
  found = [s.scale for s in jax.tree.leaves(opt_state, is_leaf=_is_scale) if _is_scale(s)]
  return float(found[0]) if found else 1.0


def make(o, params, steps_per_epoch: int, total_steps: int) -> optax.GradientTransformation:
  """The optimiser for the parameter tree `params` (an nnx.State of nnx.Param)."""
  lr = schedule(o, steps_per_epoch, total_steps)
  decay_mask = path_mask(params, o.weight_decay_params)
  parts = []
  if o.clip_norm > 0:
    parts.append(optax.clip_by_global_norm(o.clip_norm))
  if o.weight_decay > 0 and o.name != "adamw":
    parts.append(optax.add_decayed_weights(o.weight_decay, mask=decay_mask))
  if o.name == "sgd":
    if o.momentum > 0:
      parts.append(optax.trace(decay=o.momentum, nesterov=o.nesterov))
  else:
    parts.append(optax.scale_by_adam(b1=o.b1, b2=o.b2, eps=o.eps))
    if o.name == "adamw" and o.weight_decay > 0:
      # Decoupled decay, scaled by the learning rate (Loshchilov & Hutter 2019).
      parts.append(optax.add_decayed_weights(o.weight_decay, mask=decay_mask))
  parts += [optax.scale_by_learning_rate(lr), scale_by_lr_scale()]
  if o.get("lr_multipliers", ()):  # absent from configs recorded before it existed
    parts.append(scale_by_path(params, o.lr_multipliers))
  tx = optax.chain(*parts)
  if o.freeze:
    frozen = path_mask(params, o.freeze)
    labels = jax.tree.map(lambda f: "frozen" if f else "trained", frozen)
    tx = optax.multi_transform({"trained": tx, "frozen": optax.set_to_zero()}, labels)
  return tx


def current_lr(o, opt_state, step: int, steps_per_epoch: int, total_steps: int) -> float:
  """The learning rate the next update uses."""
  return float(schedule(o, steps_per_epoch, total_steps)(step)) * get_lr_scale(opt_state)


def plateau_init() -> dict:
  return {"best": np.array(-np.inf, np.float32), "bad_evals": np.array(0, np.int32),
          "decays": np.array(0, np.int32)}


def plateau_update(o, plateau: dict, metric: float) -> tuple[dict, bool]:
  """After an evaluation: the new plateau record, and whether to divide the rate now.

  Higher is better for accuracies; for a loss the metric is negated.
  """
  value = -metric if o.plateau_metric.endswith("loss") else metric
  best, bad, decays = float(plateau["best"]), int(plateau["bad_evals"]), int(plateau["decays"])
  decay = False
  if value > best + o.plateau_min_delta:
    best, bad = value, 0
  else:
    bad += 1
    if bad >= o.plateau_patience and decays < o.plateau_max_decays:
      decay, bad, decays = True, 0, decays + 1
  return {"best": np.array(best, np.float32), "bad_evals": np.array(bad, np.int32),
          "decays": np.array(decays, np.int32)}, decay


def cross_entropy(logits, labels, num_classes: int, label_smoothing: float = 0.0):
  """Per-example softmax cross-entropy, with optional label smoothing (Szegedy et al. 2016)."""
  targets = jax.nn.one_hot(labels, num_classes)
  if label_smoothing:
    targets = optax.smooth_labels(targets, label_smoothing)
  return optax.softmax_cross_entropy(logits, targets)


def global_norm(tree, blocked: bool | None = None):
  """The L2 norm of all of `tree`'s leaves together, as optax.tree.norm computes it; with
  `blocked`, each large leaf's sum of squares taken NORM_BLOCK_ROWS rows at a time first.

  `blocked` is the execution plan's choice (models/plan.py, `Plan.blocked_norm`: the CPU
  route); None takes the plan that `model.lowering='auto'` resolves to (plan.resolve).
  XLA's CPU backend rewrites a long sum into a tree of reduce-windows (for accuracy) and does
  not fuse the squaring into them, so it writes every gradient's squares out and reads them
  back; the blocked sum reads them once (the relative error to a float64 sum is 1e-7 either
  way). Short sums over a middle axis stay fused and vectorise along the last; the abs
  between the two sums keeps XLA from merging them back into one. Other backends fuse the
  squaring into their reductions, and the reshape could cut across a sharded leaf's shards,
  so there it is optax.tree.norm. Measured by the step with against without
  (benchmarks/HISTORY.md, "Execution plan (issue 19)")."""
  if blocked is None:
    from cnn_jax.models import plan  # pylint: disable=g-import-not-at-top
    blocked = plan.Plan(plan.resolve("auto")).blocked_norm
  if not blocked:
    return optax.tree.norm(tree)
  return jnp.sqrt(sum((_sum_of_squares(x) for x in jax.tree.leaves(tree)),
                      jnp.zeros([], jnp.float32)))


NORM_BLOCK_ROWS = 32


def _sum_of_squares(x):
  rows = x.size // x.shape[-1] if x.ndim and x.shape[-1] else 1
  if rows < 2 * NORM_BLOCK_ROWS or rows % NORM_BLOCK_ROWS:
    return jnp.sum(x * x)
  blocks = x.reshape(rows // NORM_BLOCK_ROWS, NORM_BLOCK_ROWS, x.shape[-1])
  return jnp.sum(jnp.abs(jnp.sum(blocks * blocks, axis=1)))
