"""The training state and its compiled steps: pure, jitted train and eval steps over arrays.

The NNX model is split once into a graph definition and state (parameters; the rest: batch
statistics and RNG streams), so each step is a pure function of arrays. Metrics are summed on
the device into a window that is part of the state; the state is donated to the step. A step
whose loss or gradient is not finite is counted (and with `train.skip_nonfinite` changes
nothing); `train.Run` decides what follows.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Any, Iterator

import flax
import jax
import jax.numpy as jnp
import optax
from flax import nnx

from cnn_jax import inspect, models, optim, parallel, transfer
from cnn_jax.models import plan


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any       # nnx.State of nnx.Param
  rest: Any         # nnx.State of everything else: batch statistics, RNG streams
  opt_state: Any
  plateau: Any      # the "divide by 10 when validation accuracy stops improving" record
  window: Any       # metric sums since the last logged step (a resumed run continues them)
  nonfinite: jax.Array        # steps whose loss or gradient was not finite (skipped)
  first_nonfinite: jax.Array  # the first such step, -1 if none

  @classmethod
  def create(cls, params, rest, opt_state, plateau) -> "TrainState":
    zero = jnp.zeros([], jnp.float32)
    return cls(step=jnp.zeros([], jnp.int32), params=params, rest=rest, opt_state=opt_state,
               plateau=plateau, window={k: zero for k in WINDOW},
               nonfinite=jnp.zeros([], jnp.int32), first_nonfinite=-jnp.ones([], jnp.int32))


WINDOW = ("loss", "top1", "top5", "grad_norm", "count")  # summed over finite steps; count them


def topk_correct(logits, labels, k: int):
  """1 where the label is among the k highest logits: fewer than k classes score above it.
  (Elementwise, so a batch split over devices needs no gather, as lax.top_k would.)"""
  label_logit = jnp.take_along_axis(logits, labels[:, None], axis=-1)
  return (jnp.sum(logits > label_logit, axis=-1) < k).astype(jnp.float32)


def make_train_step(graphdef, tx, cfg, num_classes: int, layout=None):
  """(state, batch) -> state: one update on one global batch, its metrics added to the window.

  With a `layout`, the parameters are gathered to their compute layout (FSDP's all-gather) in
  the forward pass and the gradients constrained to the stored layout (its reduce-scatter).
  """
  smoothing = cfg.optim.label_smoothing
  micro = cfg.optim.accumulate_steps
  log_every = cfg.train.log_every_steps
  skip_nonfinite = cfg.train.skip_nonfinite
  blocked_norm = plan.from_config(cfg.model).blocked_norm  # the execution plan's choice
  gather = layout.gather if layout is not None else (lambda params: params)
  scatter = layout.scatter if layout is not None else (lambda grads: grads)

  def loss_fn(params, rest, images, labels):
    params = gather(params)
    rest = jax.tree.map(lambda v: v, rest)  # fresh Variables at this trace level (RNG counts)
    model = nnx.merge(graphdef, params, rest)
    logits = model(images)
    loss = optim.cross_entropy(logits, labels, num_classes, smoothing).mean()
    _, _, rest = nnx.split(model, nnx.Param, ...)
    return loss, (logits, rest)

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def step(state: TrainState, batch):
    images, labels = batch["image"], batch["label"]
    if micro == 1:
      (loss, (logits, rest)), grads = grad_fn(state.params, state.rest, images, labels)
    else:  # gradient accumulation over micro-batches, one update
      # micro-batch j takes every micro-th example, so each stays split over `data`
      split = lambda x: jnp.swapaxes(  # noqa: E731
          x.reshape(x.shape[0] // micro, micro, *x.shape[1:]), 0, 1)

      def body(carry, xs):
        rest, grads_sum, loss_sum = carry
        (loss, (logits, rest)), grads = grad_fn(state.params, rest, *xs)
        return (rest, jax.tree.map(jnp.add, grads_sum, grads), loss_sum + loss), logits

      zeros = jax.tree.map(jnp.zeros_like, state.params)
      (rest, grads, loss), logits = jax.lax.scan(
          body, (state.rest, zeros, jnp.zeros([], jnp.float32)), (split(images), split(labels)))
      grads = jax.tree.map(lambda g: g / micro, grads)
      loss, logits = loss / micro, jnp.swapaxes(logits, 0, 1).reshape(-1, logits.shape[-1])
    grads = scatter(grads)
    grad_norm = optim.global_norm(grads, blocked=blocked_norm)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)

    def keep(new, old):
      """With train.skip_nonfinite, a non-finite step changes nothing. Without it the run
      stops at its next log, evaluation or checkpoint (Run._check_finite), before the state
      is used, so the selection is left out: it reads and writes the whole state once more
      and makes XLA copy donated buffers (CPU step with it against without it,
      benchmarks/lowering_ab.py --rewrite=skip_nonfinite: torchvision AlexNet 1.11, VGG A
      1.04, two-tower AlexNet 1.02, small CNN 1.02 and 1.03; README, "Performance")."""
      if not skip_nonfinite:
        return new
      return jax.tree.map(lambda n, o: n if _is_key(n) else jnp.where(finite, n, o), new, old)

    fresh = state.step % log_every == 0  # the first step after a logged one
    current = {"loss": loss, "top1": topk_correct(logits, labels, 1).mean(),
               "top5": topk_correct(logits, labels, 5).mean(), "grad_norm": grad_norm,
               "count": jnp.ones([], jnp.float32)}
    window = {k: jnp.where(fresh, 0.0, state.window[k]) + jnp.where(finite, v, 0.0)
              for k, v in current.items()}
    bad = jnp.logical_not(finite)
    return state.replace(
        step=state.step + 1, params=keep(params, state.params), rest=keep(rest, state.rest),
        opt_state=keep(opt_state, state.opt_state), window=window,
        nonfinite=state.nonfinite + bad.astype(jnp.int32),
        first_nonfinite=jnp.where(bad & (state.first_nonfinite < 0), state.step + 1,
                                  state.first_nonfinite))

  return step


def _is_key(x) -> bool:
  return jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def make_eval_step(graphdef, num_classes: int):
  """(state, batch) -> sums of loss and correct predictions over the batch's real examples."""
  def step(state: TrainState, batch):
    model = nnx.merge(graphdef, state.params, state.rest)
    logits = model(batch["image"])
    mask = batch["mask"]
    loss = optim.cross_entropy(logits, batch["label"], num_classes)
    return {"loss": jnp.sum(loss * mask), "top1": jnp.sum(topk_correct(logits, batch["label"], 1)
                                                          * mask),
            "top5": jnp.sum(topk_correct(logits, batch["label"], 5) * mask),
            "count": jnp.sum(mask)}
  return step


@dataclasses.dataclass
class Steps:
  """A model's training state on the mesh and its compiled-once step functions."""
  summary: inspect.Summary
  tx: Any
  layout: parallel.Layout
  state: TrainState
  state_sharding: Any
  batch_sharding: Any
  train_step: Any   # jitted (state, batch) -> state, the state donated
  eval_step: Any    # jitted (state, batch) -> sums
  copied: tuple = ()  # parameters taken from model.init_from (transfer.py)
  total_steps: int = 0  # the length the schedule was built for
  train_fn: Any = None  # the train step before jax.jit: (state, batch) -> state (stacked.py)


def build_steps(cfg, mesh, num_classes: int, steps_per_epoch: int, total_steps) -> Steps:
  """The model of `cfg` initialised and laid out on `mesh`, with its train and eval steps:
  jax.jit with explicit shardings, so each compiles once for the run (Run and bench use it).
  `total_steps` is the run's length, or a function of the model's MACs per image giving it
  (a budget in FLOPs: `config.total_steps`)."""
  model = models.build(cfg.model, seed=cfg.seed)
  summary = inspect.summarize(model)
  if callable(total_steps):
    total_steps = total_steps(summary.macs)
  train_graph, params, rest = nnx.split(models.view(model, train=True), nnx.Param, ...)
  params, rest, copied = transfer.initialise(cfg.model, params, rest)  # e.g. VGG B-E from A
  eval_graph = nnx.graphdef(models.view(model, train=False))
  tx = optim.make(cfg.optim, params, steps_per_epoch, total_steps)
  layout = parallel.Layout.of(cfg.mesh, mesh, params)
  state = TrainState.create(params, rest, tx.init(params), optim.plateau_init())
  state_sharding = layout.shardings(state)
  batch_sharding = parallel.batch_sharding(mesh)
  train_fn = make_train_step(train_graph, tx, cfg, num_classes, layout)
  train_step = jax.jit(train_fn, in_shardings=(state_sharding, batch_sharding),
                       out_shardings=state_sharding, donate_argnums=0)
  eval_step = jax.jit(make_eval_step(eval_graph, num_classes),
                      in_shardings=(state_sharding, batch_sharding),
                      out_shardings=parallel.replicated(mesh))
  return Steps(summary, tx, layout, parallel.place(state, state_sharding), state_sharding,
               batch_sharding, train_step, eval_step, tuple(copied), total_steps, train_fn)


def prefetch_to_device(batches: Iterator[dict], sharding, size: int = 2) -> Iterator[dict]:
  """Global batches from this process's rows, `size` in flight to the devices ahead of use."""
  queue = collections.deque()
  for batch in batches:
    queue.append(parallel.global_batch(batch, sharding))
    if len(queue) > size:
      yield queue.popleft()
  while queue:
    yield queue.popleft()
