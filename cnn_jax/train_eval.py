"""The trainer's evaluations and its final record: a mixin of `train.Run`.

Validation while training (with the plateau schedule's adaptation and the best so far), the
test at the end (of the checkpoint selected on validation) and the final record written when a
run is done. The methods read the run's set-up (cfg, workdir, ds, mesh, ckpt, writer, the
compiled `eval_step`, `summary` and `layout`), its loop's state (state, clock, progress,
stop, start_time, last_eval, _best) and its `_check_finite`, `_set_plateau`, `_print` and
`restore_state`; `train.Run` is the only class that mixes them in.
"""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from cnn_jax import checkpoint, metrics, optim, runlog
from cnn_jax.steps import prefetch_to_device


class Evaluation:
  """`train.Run`'s evaluation, test and final record (module docstring)."""

  def evaluate(self, split: str = "eval", state=None) -> dict:
    """{split}_loss, _top1, _top5 of `state` (the run's) on the eval (validation) or test
    split."""
    with jax.set_mesh(self.mesh):
      return self._evaluate(split, self.state if state is None else state)

  def _evaluate(self, split: str, state) -> dict:
    sums = None
    for batch in prefetch_to_device(self.ds.eval_batches(split), self.batch_sharding):
      if self.stop:
        raise _EvalStopped()
      out = self.eval_step(state, batch)
      sums = out if sums is None else jax.tree.map(jnp.add, sums, out)
    sums = jax.device_get(sums)
    n = max(float(sums["count"]), 1.0)
    return {f"{split}_loss": float(sums["loss"]) / n, f"{split}_top1": float(sums["top1"]) / n,
            f"{split}_top5": float(sums["top5"]) / n}

  def _test(self, step: int) -> dict:
    """The test split's metrics, evaluated once at the end, of the checkpoint selected on
    validation (the best by checkpoint.best_metric; the final state without one), with the
    split, its step and the validation split held out."""
    self.ckpt.wait()
    best = self.ckpt.best_step() or step
    state = self.state if best == step else self.restore_state(best)
    out = {"eval_split": self.cfg.data.eval_split, "best_eval_top1": self._best[0],
           "best_step": self._best[1]}
    if self.ds.held_out:
      out.update(validation_examples=self.ds.held_out[0], validation_sha256=self.ds.held_out[1])
    if not self.ds.has_test:
      return out
    result = self._evaluate("test", state)
    self._print(f"test ({self.cfg.data.test_split}, {self.ds.num_test:,} images) of the "
                f"checkpoint at step {best}, the best on validation: top-1 "
                f"{100 * result['test_top1']:.2f}%, top-5 {100 * result['test_top5']:.2f}%, "
                f"loss {result['test_loss']:.4f}")
    return {**out, **result, "test_step": best, "test_split": self.cfg.data.test_split}

  def _eval_due(self, step: int) -> bool:
    return step % self.eval_every == 0 or step == self.total_steps

  def _eval_logged(self, step: int) -> bool:
    """Whether metrics.jsonl holds the evaluation at `step` (the same answer on every process)."""
    logged = self.is_main and runlog.eval_logged(self.workdir, step)
    return bool(multihost_utils.broadcast_one_to_all(np.int32(logged)))

  def _eval_and_adapt(self, step: int) -> dict:
    self._check_finite()  # never evaluate (nor log) a state that should have stopped the run
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
    # unix time, so time-to-accuracy can be read off against any start (process, job), and
    # this process's seconds of training so far (evaluations and checkpoints left out)
    clock = self.clock
    self.writer.write(step, {**result, "epoch": step / self.steps_per_epoch, "time": time.time(),
                             **({"train_s": clock.training_seconds()} if clock else {})})
    if result["eval_top1"] > self._best[0]:
      self._best = (result["eval_top1"], step)
    if self.is_main:
      self.progress.note(
          f"validation at step {step} (epoch {step / self.steps_per_epoch:.2f}): top-1 "
          f"{100 * result['eval_top1']:.2f}%, top-5 {100 * result['eval_top5']:.2f}%, loss "
          f"{result['eval_loss']:.4f}; best top-1 {100 * self._best[0]:.2f}% at step "
          f"{self._best[1]}")
    return {**result, "step": step}

  # -- the final record --------------------------------------------------------------------
  def record_final(self, step: int, tested: dict, extra: dict | None = None) -> dict:
    """The final record (the last evaluation, the test, params_sha256, ..., `extra`) written
    and returned; the curves plotted; the checkpoints closed."""
    cfg, s = self.cfg, self.summary
    final = {k: v for k, v in self.last_eval.items() if k != "step"}
    final.update(tested, **(extra or {}))
    final.update(epoch=step / self.steps_per_epoch, params=s.params, macs=s.macs,
                 wall_time_s=time.monotonic() - self.start_time,
                 train_examples=self.ds.num_train,
                 params_sha256=checkpoint.fingerprint(self.state.params), **self.run_info())
    if cfg.train.skip_nonfinite:
      final["skipped_steps"] = int(jax.device_get(self.state.nonfinite))
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

  @staticmethod
  def _describe(final: dict) -> str:
    parts = [f"step {final.get('step')}"]
    for split, name in (("eval", "validation"), ("test", "test")):
      if f"{split}_top1" in final:
        parts += [f"{name} top-1 {100 * final[f'{split}_top1']:.2f}%",
                  f"top-5 {100 * final[f'{split}_top5']:.2f}%",
                  f"loss {final[f'{split}_loss']:.4f}"]
    return ", ".join(parts)


class _EvalStopped(Exception):
  """A stop signal arrived: leave the loop (or the evaluation) at the current step."""
