"""The one trainer: pure, jitted train and eval steps, and the loop around them.

The NNX model is split once into a graph definition and state (parameters; the rest: batch
statistics and RNG streams), so each step is a pure function of arrays. Metrics stay on the
device and are fetched every `train.log_every_steps` steps; the input is prefetched to the
device; the state is donated to the step.
"""

from __future__ import annotations

import collections
import json
import math
import os
import time
from typing import Any, Iterator

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from flax import nnx
from jax.experimental import multihost_utils

from cnn_jax import checkpoint, data, inspect, metrics, models, optim, parallel
from cnn_jax.errors import UserError


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any       # nnx.State of nnx.Param
  rest: Any         # nnx.State of everything else: batch statistics, RNG streams
  opt_state: Any
  plateau: Any      # the "divide by 10 when validation accuracy stops improving" record


def topk_correct(logits, labels, k: int):
  """1 where the label is among the k highest logits: fewer than k classes score above it.
  (Elementwise, so a batch split over devices needs no gather, as lax.top_k would.)"""
  label_logit = jnp.take_along_axis(logits, labels[:, None], axis=-1)
  return (jnp.sum(logits > label_logit, axis=-1) < k).astype(jnp.float32)


def make_train_step(graphdef, tx, cfg, num_classes: int, layout=None):
  """(state, batch) -> (state, metrics): one update on one global batch.

  With a `layout`, the parameters are gathered to their compute layout (FSDP's all-gather) in
  the forward pass and the gradients constrained to the stored layout (its reduce-scatter).
  """
  smoothing = cfg.optim.label_smoothing
  micro = cfg.optim.accumulate_steps
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
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new = state.replace(step=state.step + 1, params=params, rest=rest, opt_state=opt_state)
    return new, {"loss": loss, "top1": topk_correct(logits, labels, 1).mean(),
                 "top5": topk_correct(logits, labels, 5).mean(),
                 "grad_norm": optax.tree.norm(grads)}

  return step


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


def prefetch_to_device(batches: Iterator[dict], sharding, size: int = 2) -> Iterator[dict]:
  """Global batches from this process's rows, `size` in flight to the devices ahead of use."""
  queue = collections.deque()
  for batch in batches:
    queue.append(parallel.global_batch(batch, sharding))
    if len(queue) > size:
      yield queue.popleft()
  while queue:
    yield queue.popleft()


class Run:
  """A training run in a work directory: set-up, restore, loop, evaluation, checkpoints."""

  def __init__(self, cfg, workdir: str, record_config: bool = True):
    self.cfg, self.workdir = cfg, workdir
    self.is_main = jax.process_index() == 0
    _prepare_workdir(workdir, cfg, self.is_main and record_config)
    self.mesh = parallel.make_mesh(cfg.mesh)
    data_devices = self.mesh.shape["data"]
    if cfg.train.batch_size % (data_devices * cfg.optim.accumulate_steps):
      raise UserError(f"train.batch_size={cfg.train.batch_size} must split evenly over the "
                      f"{data_devices} devices of mesh axis 'data'"
                      + (f" in each of optim.accumulate_steps={cfg.optim.accumulate_steps} "
                         "micro-batches" if cfg.optim.accumulate_steps > 1 else "")
                      + "; change the batch size or mesh.data")
    # evaluation results do not depend on the eval batch: round it up to split evenly
    eval_batch = -(-cfg.train.eval_batch_size // data_devices) * data_devices
    share, shares = parallel.input_share(self.mesh)
    self.ds = data.build(cfg.data, image_shape=tuple(cfg.model.input_shape),
                         global_batch=cfg.train.batch_size, eval_batch=eval_batch,
                         seed=cfg.seed, process_index=share, process_count=shares)
    if self.ds.num_classes != cfg.model.num_classes:
      raise UserError(f"model.num_classes={cfg.model.num_classes} but {cfg.data.name} has "
                      f"{self.ds.num_classes} classes; set --config.model.num_classes="
                      f"{self.ds.num_classes}")
    t = cfg.train
    self.steps_per_epoch = self.ds.steps_per_epoch
    self.total_steps = t.steps or max(1, int(round(t.epochs * self.steps_per_epoch)))
    self.eval_every = t.eval_every_steps or max(1, int(round(t.eval_every_epochs
                                                             * self.steps_per_epoch)))
    self.save_every = cfg.checkpoint.every_steps or self.eval_every

    model = models.build(cfg.model, seed=cfg.seed)
    self.summary = inspect.summarize(model)
    train_graph, params, rest = nnx.split(models.view(model, train=True), nnx.Param, ...)
    eval_graph = nnx.graphdef(models.view(model, train=False))
    self.tx = optim.make(cfg.optim, params, self.steps_per_epoch, self.total_steps)
    self.layout = parallel.Layout.of(cfg.mesh, self.mesh, params)
    state = TrainState(step=jnp.zeros([], jnp.int32), params=params, rest=rest,
                       opt_state=self.tx.init(params), plateau=optim.plateau_init())
    self.state_sharding = self.layout.shardings(state)
    self.state = parallel.place(state, self.state_sharding)
    self.batch_sharding = parallel.batch_sharding(self.mesh)
    replicated = parallel.replicated(self.mesh)
    self.train_step = jax.jit(
        make_train_step(train_graph, self.tx, cfg, self.ds.num_classes, self.layout),
        in_shardings=(self.state_sharding, self.batch_sharding),
        out_shardings=(self.state_sharding, replicated), donate_argnums=0)
    self.eval_step = jax.jit(make_eval_step(eval_graph, self.ds.num_classes),
                             in_shardings=(self.state_sharding, self.batch_sharding),
                             out_shardings=replicated)
    self._set_plateau = jax.jit(
        lambda state, plateau, scale: state.replace(
            plateau=plateau, opt_state=optim.set_lr_scale(state.opt_state, scale)),
        out_shardings=self.state_sharding, donate_argnums=0)
    self.ckpt = checkpoint.Checkpoints(os.path.join(workdir, "checkpoints"), cfg.checkpoint)
    self.writer = metrics.Writer(workdir, enabled=self.is_main)

  # -- evaluation --------------------------------------------------------------------------
  def evaluate(self) -> dict:
    with jax.set_mesh(self.mesh):
      return self._evaluate()

  def _evaluate(self) -> dict:
    sums = None
    for batch in prefetch_to_device(self.ds.eval_batches(), self.batch_sharding):
      out = self.eval_step(self.state, batch)
      sums = out if sums is None else jax.tree.map(jnp.add, sums, out)
    sums = jax.device_get(sums)
    n = max(float(sums["count"]), 1.0)
    return {"eval_loss": float(sums["loss"]) / n, "eval_top1": float(sums["top1"]) / n,
            "eval_top5": float(sums["top5"]) / n}

  def restore(self, step: int | str = "latest") -> int:
    """Loads a checkpoint ('latest', 'best' or a step) into the state; returns its step."""
    if step == "latest":
      step = self.ckpt.latest_step()
    elif step == "best":
      step = self.ckpt.best_step()
    else:
      step = int(step)
    if step is None:
      return 0
    self.state = self.ckpt.restore(step, self.state)
    return int(step)

  # -- the loop ----------------------------------------------------------------------------
  def train(self) -> dict:
    with jax.set_mesh(self.mesh):
      return self._train()

  def _train(self) -> dict:
    cfg, start_time = self.cfg, time.monotonic()
    step = self.restore("latest")
    s = self.summary
    self._print(f"{s.model} '{s.variant}' on {cfg.data.name}: {s.params:,} parameters, "
                f"{inspect.human(s.macs)} MACs per image at {'x'.join(map(str, s.input_shape))}; "
                f"{self.ds.num_train:,} training images, {self.steps_per_epoch} steps per epoch, "
                f"{self.total_steps} steps")
    self._print(f"mesh {parallel.describe(self.mesh)}; {self.layout.describe()}")
    logging.info("parameter layout:\n%s", self.layout.table())
    if step >= self.total_steps:
      final = self._final_from_log() if self.is_main else None
      if multihost_utils.broadcast_one_to_all(np.int32(final is not None)):  # all agree
        if final is not None:
          self._print(f"already trained to step {step}: {self._describe(final)}")
        return final or {"step": step}
    if step:
      self._print(f"resuming from the checkpoint at step {step} in {self.workdir}")
      self.writer.truncate_after(step, drop_final=True)
    progress = metrics.Progress(self.total_steps, initial_step=step, enabled=self.is_main)
    pending, images, clock, last_eval, compiled = [], 0, time.monotonic(), {}, False
    while step < self.total_steps:
      epoch, offset = divmod(step, self.steps_per_epoch)
      for batch in prefetch_to_device(self.ds.train_batches(epoch, offset), self.batch_sharding):
        self.state, m = self.train_step(self.state, batch)
        pending.append(m)
        step += 1
        if compiled:
          images += cfg.train.batch_size
        else:  # keep compilation out of the first throughput figure
          jax.block_until_ready(m)
          compiled, clock = True, time.monotonic()
        if step % cfg.train.log_every_steps == 0 or step == self.total_steps:
          logged = self._log(step, jax.device_get(pending), images, time.monotonic() - clock)
          progress.update(step, loss=logged["loss"], lr=logged["lr"],
                          images_per_sec=logged["images_per_sec"])
          pending, images, clock = [], 0, time.monotonic()
        if step % self.eval_every == 0 or step == self.total_steps:
          last_eval = self._eval_and_adapt(step)
          clock = time.monotonic()
        if step % self.save_every == 0 or step == self.total_steps:
          self.ckpt.save(step, self.state, last_eval if last_eval.get("step") == step else None)
        if step == self.total_steps:
          break
    progress.close()
    if not last_eval:  # e.g. killed after the last checkpoint, before its final record
      last_eval = self._eval_and_adapt(step)
    self.ckpt.wait()
    final = {k: v for k, v in last_eval.items() if k != "step"}
    final.update(epoch=step / self.steps_per_epoch, params=s.params, macs=s.macs,
                 wall_time_s=time.monotonic() - start_time, **self.run_info())
    self.writer.write_final(final, step=step)
    final["step"] = step
    self.writer.close()
    if self.is_main:
      metrics.plot_curves(os.path.join(self.workdir, "metrics.jsonl"),
                          os.path.join(self.workdir, "curves.png"),
                          title=f"{s.model} '{s.variant}' on {cfg.data.name}")
    self._print(f"done: {self._describe(final)}; {metrics.format_duration(final['wall_time_s'])}"
                f"; work directory {self.workdir}")
    self.ckpt.close()
    return final

  def run_info(self) -> dict:
    """Which layout ran, on what mesh: recorded with the final metrics."""
    return {"layout": self.layout.name, "mesh_data": self.mesh.shape["data"],
            "mesh_model": self.mesh.shape["model"], "devices": self.mesh.size,
            "processes": jax.process_count(), "platform": self.mesh.devices.flat[0].platform}

  def _log(self, step: int, fetched: list, images: int, seconds: float) -> dict:
    """Averages the fetched step metrics; `images` trained in `seconds` give the throughput."""
    images_per_sec = images / max(seconds, 1e-9)
    logged = {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0]}
    if not math.isfinite(logged["loss"]):
      raise UserError(f"the loss diverged (became {logged['loss']}) by step {step}; lower "
                      f"optim.lr (now {self.cfg.optim.lr}) or add warmup; the last good "
                      "checkpoint is kept")
    logged.update(epoch=step / self.steps_per_epoch, images_per_sec=images_per_sec,
                  lr=optim.current_lr(self.cfg.optim, self.state.opt_state, step - 1,
                                      self.steps_per_epoch, self.total_steps))
    self.writer.write(step, logged)
    return logged

  def _eval_and_adapt(self, step: int) -> dict:
    result = self.evaluate()
    o = self.cfg.optim
    if o.schedule == "plateau":
      plateau, decay = optim.plateau_update(o, jax.device_get(self.state.plateau),
                                            result[o.plateau_metric])
      scale = optim.get_lr_scale(self.state.opt_state)
      if decay:
        scale *= o.decay_factor
        self._print(f"step {step}: {o.plateau_metric} stopped improving; learning rate now "
                    f"{o.lr * scale:.3g}")
      self.state = self._set_plateau(self.state, plateau, np.float32(scale))
    self.writer.write(step, {**result, "epoch": step / self.steps_per_epoch})
    return {**result, "step": step}

  def _final_from_log(self) -> dict | None:
    path = os.path.join(self.workdir, "metrics.jsonl")
    finals = [r for r in metrics.read_jsonl(path) if r.get("final")] if os.path.exists(path) else []
    return finals[-1] if finals else None

  @staticmethod
  def _describe(final: dict) -> str:
    parts = [f"step {final.get('step')}"]
    if "eval_top1" in final:
      parts += [f"eval top-1 {100 * final['eval_top1']:.2f}%",
                f"top-5 {100 * final['eval_top5']:.2f}%", f"loss {final['eval_loss']:.4f}"]
    return ", ".join(parts)

  def _print(self, text: str) -> None:
    if self.is_main:
      print(text, flush=True)


def _prepare_workdir(workdir: str, cfg, record_config: bool) -> None:
  """Creates the work directory, checks it is writable, and records the resolved config."""
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, f".write_test_{os.getpid()}")
    with open(probe, "w") as f:
      f.write("ok")
    os.remove(probe)
  except OSError as e:
    raise UserError(f"work directory {workdir} is not writable ({e.strerror}); "
                    "choose another --workdir") from e
  if record_config:
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(cfg.to_json_best_effort(indent=2, sort_keys=True))


def train(cfg, workdir: str) -> dict:
  return Run(cfg, workdir).train()


def evaluate(cfg, workdir: str, which: str = "latest") -> dict:
  """Evaluates a saved checkpoint ('latest', 'best' or a step) on the eval split."""
  run = Run(cfg, workdir, record_config=False)  # the training run's config.json stays
  step = run.restore(which)
  if not step:
    raise UserError(f"no checkpoint in {workdir}/checkpoints; train first with "
                    f"python run.py train --workdir={workdir}")
  result = {"step": step, **run.evaluate()}
  if run.is_main:
    with open(os.path.join(workdir, f"eval_{step}.json"), "w") as f:
      json.dump(result, f, indent=2)
  run.ckpt.close()
  return result
