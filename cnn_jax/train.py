"""The one trainer: the loop around the compiled steps (`steps.py`), with evaluation
(`train_eval.py`: validation, the test and the final record, mixed into `Run`), checkpoints,
logs and resume.

The metric window is fetched every `train.log_every_steps` steps; the input is prefetched to
the devices.

Everything the future depends on is in the checkpointed state (parameters, optimiser and
schedule, RNG streams, plateau record, the metric window, the non-finite count) or follows from
the step (the input position), so a run stopped anywhere and resumed ends bitwise equal to one
that ran straight through. A step whose loss or gradient is not finite changes nothing but the
step count; the run then stops naming it, or with `train.skip_nonfinite` goes on and counts it.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import sys
import time

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from cnn_jax import (checkpoint, config, data, inspect, metrics, optim, parallel, preemption,
                     restore, runlog)
from cnn_jax import workdir as workdirs
from cnn_jax.clock import TrainClock
# the state and steps, also under these names here (tests, bench and benchmarks use them)
from cnn_jax.steps import (WINDOW, Steps, TrainState, build_steps, make_eval_step,  # noqa: F401
                           make_train_step, prefetch_to_device, topk_correct)
from cnn_jax.errors import UserError, one_line
# _EvalStopped also under this name here (stacked.py catches and raises it)
from cnn_jax.train_eval import Evaluation, _EvalStopped


class Run(Evaluation):
  """A training run in a work directory: set-up, restore, loop, evaluation (`Evaluation`),
  checkpoints."""

  def __init__(self, cfg, workdir: str, allow_config_change: bool = False,
               mode: str = "train"):
    """Sets the run up, writing nothing until it is known to be able to start: the lock
    first where the directory exists (a second process is refused at once), then the
    config, mesh, data and model, then the directory, checkpoints and logs. `mode='eval'`
    reads the checkpoints and writes only its result."""
    assert mode in ("train", "eval"), mode
    self.cfg, self.workdir, self.mode = cfg, workdir, mode
    self.clock = None  # the loop's TrainClock while it runs
    self.is_main = jax.process_index() == 0
    self.lock = workdirs.Lock(workdir)
    workdirs.check_writable(workdir)
    self._take_lock(only_if_exists=True)
    try:
      checkpoints = os.path.join(workdir, "checkpoints")
      if mode == "eval" and not (os.path.isdir(checkpoints) and os.listdir(checkpoints)):
        raise _no_checkpoint(workdir)
      self._set_up(cfg, workdir, allow_config_change)
    except BaseException:
      self.lock.release()
      raise

  def __getattr__(self, name: str):
    """The compiled pieces of the run's `Steps` (summary, tx, layout, state_sharding,
    batch_sharding, train_step, eval_step) read as the run's own; a test may set one."""
    steps = self.__dict__.get("steps")
    if steps is None or name == "state" or name not in Steps.__dataclass_fields__:
      raise AttributeError(name)
    return getattr(steps, name)

  def _take_lock(self, only_if_exists: bool = False) -> None:
    """The work directory's lock, taken by process 0 (at once if the directory exists, else
    once it is created); every process calls this at the same points."""
    self.lock.acquire_for_run(self.is_main, only_if_exists)

  def _set_up(self, cfg, workdir: str, allow_config_change: bool) -> None:
    if self.mode == "train":
      workdirs.check_config(workdir, cfg, allow_config_change)
    self.mesh = parallel.make_mesh(cfg.mesh)
    data_devices = self.mesh.shape["data"]
    config.check_batch_split(cfg, data_devices)
    # evaluation results do not depend on the eval batch: round it up to split evenly
    eval_batch = -(-cfg.train.eval_batch_size // data_devices) * data_devices
    share, shares = parallel.input_share(self.mesh)
    self.ds = data.build(cfg.data, image_shape=tuple(cfg.model.input_shape),
                         global_batch=cfg.train.batch_size, eval_batch=eval_batch,
                         seed=data.seed(cfg.data, cfg.seed), process_index=share,
                         process_count=shares)
    if self.ds.num_classes < 2:
      raise UserError(f"{cfg.data.name} has {self.ds.num_classes} class; a classifier needs at "
                      "least two (for a folder dataset: one sub-folder per class)")
    if self.ds.num_classes != cfg.model.num_classes:
      raise UserError(f"model.num_classes={cfg.model.num_classes} but {cfg.data.name} has "
                      f"{self.ds.num_classes} classes; set --config.model.num_classes="
                      f"{self.ds.num_classes}")
    t = cfg.train
    self.steps_per_epoch = self.ds.steps_per_epoch
    self.steps = build_steps(cfg, self.mesh, self.ds.num_classes, self.steps_per_epoch,
                             lambda macs: config.total_steps(t, self.steps_per_epoch, macs))
    self.total_steps = self.steps.total_steps
    self.eval_every = t.eval_every_steps or max(1, int(round(t.eval_every_epochs
                                                             * self.steps_per_epoch)))
    self.save_every = cfg.checkpoint.every_steps or self.eval_every
    self.state = self.steps.state  # the run's current state; steps.state stays the initial one
    self._set_plateau = jax.jit(
        lambda state, plateau, scale: state.replace(
            plateau=plateau, opt_state=optim.set_lr_scale(state.opt_state, scale)),
        out_shardings=self.state_sharding, donate_argnums=0)
    if self.mode == "train":  # everything checked: now the directory may be written
      if self.is_main:
        os.makedirs(workdir, exist_ok=True)
      self._take_lock()
    self.ckpt = checkpoint.Checkpoints(os.path.join(workdir, "checkpoints"), cfg.checkpoint,
                                       read_only=self.mode == "eval")
    self.writer = metrics.Writer(workdir, enabled=self.is_main and self.mode == "train")
    self.stop = preemption.Flag()  # set by SIGTERM / SIGINT while train() runs

  def close(self) -> None:
    """Waits for checkpoint writes, closes the logs and gives the work directory up."""
    try:
      self.ckpt.close()
      self.writer.close()
    finally:
      self.lock.release()

  # -- checkpoints -------------------------------------------------------------------------
  def restore(self, step: int | str = "latest", discard_unreadable: bool = False) -> int:
    """Loads a checkpoint ('latest', 'best' or a step) into the state; returns its step (0 if
    there is none). See `restore.py` for what happens to those that cannot be used."""
    if step == "latest":
      self.state, found = restore.latest(
          self.ckpt, self.state, self._explain, move=self.mode == "train",
          discard_unreadable=discard_unreadable, warn=lambda t: self._print(t, error=True))
    else:
      self.state, found = restore.one(self.ckpt, self.state, step, self._explain)
    return found

  def restore_state(self, step: int):
    """The state of the checkpoint at `step` (the run's own state is left as it is)."""
    return restore.one(self.ckpt, self.state, step, self._explain)[0]

  def _explain(self, e: checkpoint.Mismatch) -> UserError:
    return restore.explain(e, workdirs.recorded_config(self.workdir), self.cfg)

  def _save(self, step: int, eval_metrics: dict | None) -> None:
    if self.ckpt.latest_step() == step:
      return
    self._check_finite()  # never save a run that should have stopped
    self.ckpt.save(step, self.state, eval_metrics)

  # -- the loop ----------------------------------------------------------------------------
  def train(self, discard_unreadable: bool = False) -> dict:
    """Trains to the end (or to a stop signal) from the newest readable checkpoint."""
    try:
      with preemption.catch_signals() as self.stop, jax.set_mesh(self.mesh):
        return self._train(discard_unreadable)
    except Exception as e:
      raise self.storage_error(e) or e
    finally:
      self.lock.release()

  def storage_error(self, e: Exception) -> UserError | None:
    """The one-line error for `e` where it is a failed save or log write (what is written
    stays), else None."""
    kind = workdirs.storage_error(e)
    if not kind:
      return None
    error = UserError(workdirs.storage_message(self.workdir, kind, one_line(e),
                                               self.ckpt.complete_steps()))
    error.__cause__ = e
    return error

  def _train(self, discard_unreadable: bool) -> dict:
    step = self.begin(discard_unreadable)
    if self.finished is not None:
      return self.finished
    try:
      self.resume_evaluation(step)
      while step < self.total_steps:
        batches = self.epoch_batches(step)
        for batch in batches:
          self.state = self.train_step(self.state, batch)
          step += 1
          self.after_step(step)
          self.after_step_evaluate(step)
          if self.stop:
            raise _EvalStopped()
          if step == self.total_steps:
            break
        batches.close()
      tested = self.conclude(step)
    except _EvalStopped:
      self.stopped(step)
      raise preemption.Interrupted(self.stop.signum, step, self.workdir) from None
    return self.record_final(step, tested)

  # The loop's phases, which `stacked.Group` also drives, for several runs in lock-step.
  def begin(self, discard_unreadable: bool) -> int:
    """Everything before the first step: the newest checkpoint restored, the log restarted
    or truncated to it, the run described; returns its step. `self.finished` is the final
    record of a run already trained to the end (None otherwise)."""
    cfg, self.start_time = self.cfg, time.monotonic()
    self.finished = None
    step = self.restore("latest", discard_unreadable)
    if step == 0 and self.is_main:
      self.writer.close()
      moved = workdirs.restart_log(self.workdir)
      if moved:
        self._print(f"no checkpoint to resume from: the earlier attempt's log is kept as "
                    f"{moved}; starting a new one", error=True)
      self.writer = metrics.Writer(self.workdir)
    s = self.summary
    self._print(f"{s.model} '{s.variant}' on {cfg.data.name}: {s.params:,} parameters, "
                f"{inspect.human(s.macs)} MACs per image at {'x'.join(map(str, s.input_shape))}; "
                f"{self.ds.num_train:,} training images, {self.steps_per_epoch} steps per epoch, "
                f"{self.total_steps} steps")
    self._print(f"mesh {parallel.describe(self.mesh)}; {self.layout.describe()}")
    logging.info("parameter layout:\n%s", self.layout.table())
    if self.is_main:
      workdirs.record_config(self.workdir, cfg)
    if step == 0:  # a new attempt: its hyperparameters for TensorBoard's HParams dashboard
      self.writer.write_hparams(workdirs.flat_config(cfg))
      if self.steps.copied:
        layers = sorted({name.rsplit("/", 1)[0] for name in self.steps.copied})
        self._print(f"initialised {', '.join(layers)} from {cfg.model.init_from}; the other "
                    "layers at random")
    if step >= self.total_steps:
      final = runlog.final(self.workdir) if self.is_main else None
      if multihost_utils.broadcast_one_to_all(np.int32(final is not None)):  # all agree
        if final is not None:
          self._print(f"already trained to step {step}: {self._describe(final)}")
        self.finished = final or {"step": step}
        return step
    if step:
      self._print(f"resuming from the checkpoint at step {step} in {self.workdir}")
      self.writer.truncate_after(step, drop_final=True)
    self.progress = metrics.Progress(self.total_steps, initial_step=step, enabled=self.is_main)
    self._best = runlog.best_eval(self.workdir)
    self.clock, self.last_eval = TrainClock(), {}
    return step

  def resume_evaluation(self, step: int) -> None:
    """The evaluation at `step` where an earlier session stopped during it."""
    if step and self._eval_due(step) and not self._eval_logged(step):
      self.last_eval = self._eval_and_adapt(step)

  def epoch_batches(self, step: int):
    """The device batches from `step` to the end of its epoch (its input starting and
    ending not counted as training time); close it when leaving the epoch early."""
    epoch, offset = divmod(step, self.steps_per_epoch)
    batches = prefetch_to_device(self.ds.train_batches(epoch, offset), self.batch_sharding)
    with self.clock.paused():  # an epoch's input starting (its shuffle) is not training time
      first = list(itertools.islice(batches, 1))
    try:  # exactly the epoch's batches: its input ending is not waited for inside the loop
      yield from itertools.chain(first, itertools.islice(
          batches, self.steps_per_epoch - offset - 1))
    finally:
      with self.clock.paused():
        batches.close()  # and not when it is closed

  def after_step(self, step: int) -> None:
    """After the step that reached `step`: the profile, the clock and the log."""
    cfg, clock = self.cfg, self.clock
    if step in cfg.train.profile_steps:
      with clock.paused():
        self._profile(step)
    if clock.started:
      clock.add(cfg.train.batch_size)
    else:  # keep compilation out of the first throughput figure
      jax.block_until_ready(self.state.step)
      clock.start()
    if step % cfg.train.log_every_steps == 0 or step == self.total_steps:
      jax.block_until_ready(self.state.window)  # time the steps done, not dispatched
      self.ckpt.check_for_errors()  # a failed background save stops the run here
      logged = self._log(step, clock.read())
      self.progress.update(step, loss=logged.get("loss", math.nan), lr=logged["lr"],
                           images_per_sec=logged["images_per_sec"])

  def after_step_evaluate(self, step: int) -> None:
    """After `after_step`: the evaluation and the checkpoint where due (a stop signal during
    the evaluation raises _EvalStopped)."""
    saving = step % self.save_every == 0 or step == self.total_steps
    if self._eval_due(step) or saving:
      jax.block_until_ready(self.state)  # the steps before count as training time
    if self._eval_due(step):
      with self.clock.paused():
        self.last_eval = self._eval_and_adapt(step)
    if saving:
      with self.clock.paused():
        self._save(step, self.last_eval if self.last_eval.get("step") == step else None)

  def conclude(self, step: int) -> dict:
    """After the last step: the evaluation at the end (if not done) and the test."""
    self.progress.close()
    if self.last_eval.get("step") != step:  # e.g. killed after the last checkpoint
      self.last_eval = self._eval_and_adapt(step)
    self._check_finite()
    return self._test(step)

  def stopped(self, step: int) -> None:
    """On a stop signal: the checkpoint of `step` saved and the logs closed."""
    self.progress.close()
    self._save(step, None)
    self.ckpt.wait()
    self.writer.close()

  def _profile(self, step: int) -> None:
    """Starts (at the first of train.profile_steps) or ends a jax.profiler trace, written to
    <workdir>/profile for TensorBoard's profiler or, as perfetto_trace.json.gz, Perfetto."""
    jax.block_until_ready(self.state)
    first, last = self.cfg.train.profile_steps
    if step == first:
      jax.profiler.start_trace(os.path.join(self.workdir, "profile"),
                               create_perfetto_trace=True)
    else:
      jax.profiler.stop_trace()
      self.progress.note(f"profile of steps {first + 1} to {last} in "
                         f"{os.path.join(self.workdir, 'profile')}")

  def _check_finite(self) -> None:
    """Stops the run if a step had a non-finite loss or gradient (unless skipping them)."""
    if self.cfg.train.skip_nonfinite:
      return
    bad, first = jax.device_get((self.state.nonfinite, self.state.first_nonfinite))
    if bad:
      self.ckpt.wait()
      kept = self.ckpt.latest_step()
      raise UserError(
          f"the loss or gradient became non-finite at step {int(first)}; "
          + (f"the checkpoint at step {kept} is kept; " if kept else "")
          + f"lower optim.lr (now {self.cfg.optim.lr}), add optim.warmup_epochs or "
          "optim.clip_norm, or set train.skip_nonfinite=True to skip such batches")

  def _log(self, step: int, images_per_sec: float) -> dict:
    """The window's averages, with the throughput of the training time since the last log."""
    window, skipped = jax.device_get((self.state.window, self.state.nonfinite))
    self._check_finite()
    count = float(window["count"])
    logged = {k: float(window[k]) / count for k in WINDOW if k != "count"} if count else {}
    if self.cfg.train.skip_nonfinite:
      logged["skipped_steps"] = int(skipped)
    logged.update(epoch=step / self.steps_per_epoch,
                  images_per_sec=images_per_sec,
                  lr=optim.current_lr(self.cfg.optim, self.state.opt_state, step - 1,
                                      self.steps_per_epoch, self.total_steps))
    self.writer.write(step, logged)
    return logged

  def _print(self, text: str, error: bool = False) -> None:
    if self.is_main:
      print(text, file=sys.stderr if error else sys.stdout, flush=True)


def _no_checkpoint(workdir: str) -> UserError:
  return UserError(f"no checkpoint in {os.path.join(workdir, 'checkpoints')}; train first "
                   f"with python run.py train --workdir={workdir}")


def train(cfg, workdir: str, allow_config_change: bool = False,
          discard_unreadable: bool = False) -> dict:
  return Run(cfg, workdir, allow_config_change=allow_config_change).train(discard_unreadable)


def evaluate(cfg, workdir: str, which: str = "latest") -> dict:
  """Evaluates a saved checkpoint ('latest', 'best' or a step) on the eval (validation) and
  test splits and writes `eval_<step>.json`; the run's checkpoints, config.json and logs are
  only read."""
  run = Run(cfg, workdir, mode="eval")
  try:
    step = run.restore(which)
    if not step:
      raise _no_checkpoint(workdir)
    result = {"step": step, **run.evaluate()}
    if run.ds.has_test:
      result.update(run.evaluate("test"))
    if run.is_main:
      with open(os.path.join(workdir, f"eval_{step}.json"), "w") as f:
        json.dump(result, f, indent=2)
    return result
  finally:
    run.close()
