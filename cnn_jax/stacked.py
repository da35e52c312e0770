"""Several runs trained together in one process: a stacked group.

Runs whose configs differ only in seeds or in values that keep every array shape
(`STACKABLE`: the seeds, the learning rate, weight decay, momentum, ...) are trained in
lock-step: at each step every run takes its batch from its own input pipeline (its own data
order and augmentation) and its own train step updates its own state. Everything else is
each run's own `train.Run`, driven phase by phase: its work directory, lock, config record,
metrics log, TensorBoard events, evaluations, checkpoints (one run's state each, as alone),
test, final record and resume. A run of a group ends bitwise equal to the same run trained
alone on the same machine (its `params_sha256`, its metrics.jsonl but for timings), and a
stopped group, started again, resumes each run from its own newest checkpoint (runs left at
different steps by a SIGKILL are brought level, the ones behind first, then go on together).

How the steps are computed (`program`): 'each' (the default) calls each run's own compiled
step in turn, the very program it runs alone; 'tuple' compiles one jitted program over the
tuple of the runs' states and batches, each run's step in it as alone (also bitwise equal).
`jax.vmap` of the step over stacked states is not offered: on XLA's CPU backend it is not
bitwise equal to the separate step (a batched convolution's kernel gradient, for one, is a
grouped convolution summed in another order; with every convolution computed per run it
still differed), the small CNN's parameters 6e-8 apart after 5 steps, 0.016 after 143 at
width 0.125 and 0.047 at width 1; and it was slower than the runs' separate steps (0.67x at
width 0.125, 0.43x at width 1, k=3; the tuple 1.04x and 0.73x; `benchmarks/stacked.py
--part=step`). What a group saves is what its runs share: one process, its start-up and
imports, and the loop.

Throughput: a run's `images_per_sec` is its own images per second of the group's training
time (the group's rate divided by the number of runs); the other runs' logs, evaluations and
checkpoints are not counted in it. Its final record's `wall_time_s` is the group's, and
`stacked_runs` the number of runs in the group (the collector divides the one and multiplies
the other by it: the cost of a run, the rate of the machine).

  python -m cnn_jax.stacked [--program=each|tuple] '[["--config=configs/simple_cnn.py",
      "--workdir=W0", "--config.seed=0"], ["--config=...", "--workdir=W1", ...]]'

trains such a group (each list is one run's `run.py train` arguments); `run.py study` starts
one for each group of ready runs of a study that allows it (`Study.stack`,
`cnn_jax.study_runner`).
"""

from __future__ import annotations

import contextlib
import json
import sys

from cnn_jax.errors import UserError, one_line

# Config keys whose values may differ between the runs of a group: seeds, and hyperparameters
# that change values, never the shape or structure of any array (dotted keys).
# How a group computes its runs' steps (Group.program): 'each' calls each run's own compiled
# step in turn, 'tuple' compiles one program of them all (benchmarks/stacked.py).
PROGRAMS = ("each", "tuple")
STACKABLE = ("seed", "data.seed", "optim.lr", "optim.momentum", "optim.b1", "optim.b2",
             "optim.eps", "optim.weight_decay", "optim.label_smoothing", "optim.clip_norm",
             "optim.warmup_epochs", "optim.decay_factor", "model.dropout")


def differences(a: dict, b: dict) -> list[str]:
  """The dotted keys, other than STACKABLE ones, whose values differ between two flat
  configs ({'optim.lr': 0.01, ...}), sorted."""
  return sorted(k for k in set(a) | set(b) if k not in STACKABLE and a.get(k) != b.get(k))


def reason(a: dict, b: dict) -> str | None:
  """Why two runs (their flat configs) cannot stack, or None if they can."""
  keys = differences(a, b)
  if not keys:
    return None
  shown = ", ".join(f"{k} ({a.get(k, '(absent)')!r} against {b.get(k, '(absent)')!r})"
                    for k in keys[:3])
  return (f"they differ in {shown}{f' and {len(keys) - 3} more' if len(keys) > 3 else ''}; "
          f"runs stack only where they differ in {', '.join(STACKABLE)}")


def groups(configs: dict, size: int | None = None) -> list[list]:
  """The runs {name: flat config} in stackable groups, in order: each run joins the first
  group it can stack with (at most `size` runs a group); a run that stacks with none is a
  group of one."""
  out: list[list] = []
  for name, flat in configs.items():
    for group in out:
      if (size is None or len(group) < size) and reason(configs[group[0]], flat) is None:
        group.append(name)
        break
    else:
      out.append([name])
  return out


def flat(cfg) -> dict:
  from cnn_jax import workdir  # pylint: disable=g-import-not-at-top
  return workdir.flat_config(cfg)


class Group:
  """Runs (`train.Run`s, set up) trained in lock-step by one program (module docstring)."""

  def __init__(self, runs: list, program: str = "each"):
    if not runs:
      raise ValueError("a group needs at least one run")
    if program not in PROGRAMS:
      raise UserError(f"--program={program}: use one of {', '.join(PROGRAMS)}")
    self.kind = program
    first = runs[0]
    for run in runs[1:]:
      why = reason(flat(first.cfg), flat(run.cfg))
      if why is None and (run.total_steps, run.steps_per_epoch, run.eval_every,
                          run.save_every) != (first.total_steps, first.steps_per_epoch,
                                              first.eval_every, first.save_every):
        why = "their lengths, epochs or evaluation and checkpoint intervals differ"
      if why:
        raise UserError(f"{run.workdir} cannot be trained in one group with {first.workdir}: "
                        f"{why}")
    self.runs = runs
    self._programs: dict = {}
    self._current = None  # the run whose phase is running (to name it in an error)

  def program(self, members: tuple):
    """(states, batches) -> states of `members` (indices into the runs): each run's own
    train step on its own state and batch, the states donated; with program 'each' each
    run's own compiled step, called in turn, with 'tuple' one jitted program of them all."""
    if members not in self._programs:
      import jax  # pylint: disable=g-import-not-at-top
      runs = [self.runs[i] for i in members]
      if self.kind == "each":
        self._programs[members] = lambda states, batches: tuple(
            r.train_step(s, b) for r, s, b in zip(runs, states, batches))
        return self._programs[members]
      fns = tuple(r.steps.train_fn for r in runs)

      def step(states, batches):
        return tuple(f(s, b) for f, s, b in zip(fns, states, batches))
      self._programs[members] = jax.jit(
          step, in_shardings=(tuple(r.state_sharding for r in runs),
                              tuple(r.batch_sharding for r in runs)),
          out_shardings=tuple(r.state_sharding for r in runs), donate_argnums=0)
    return self._programs[members]

  @contextlib.contextmanager
  def _as(self, run):
    """Runs a phase of `run`: the other runs' clocks stopped meanwhile (its logs,
    evaluations and checkpoints are not their training time)."""
    self._current = run
    with contextlib.ExitStack() as stack:
      for other in self.runs:
        if other is not run and getattr(other, "clock", None) is not None:
          stack.enter_context(other.clock.paused())
      yield

  def train(self, discard_unreadable: bool = False) -> list[dict]:
    """Trains every run to its end (or to a stop signal); returns their final records."""
    import jax  # pylint: disable=g-import-not-at-top

    from cnn_jax import preemption  # pylint: disable=g-import-not-at-top
    try:
      with preemption.catch_signals() as stop, jax.set_mesh(self.runs[0].mesh):
        for run in self.runs:
          run.stop = stop
        return self._train(stop, discard_unreadable)
    except Exception as e:
      error = self._current.storage_error(e) if self._current is not None else None
      raise error or e
    finally:
      for run in self.runs:
        run.lock.release()

  def _train(self, stop, discard_unreadable: bool) -> list[dict]:
    from cnn_jax import preemption, train  # pylint: disable=g-import-not-at-top
    at = {}  # index -> the step of each unfinished run
    for i, run in enumerate(self.runs):
      self._current, run.clock = run, None
      step = run.begin(discard_unreadable)
      if run.finished is None:
        at[i] = step
    active = sorted(at)
    total = self.runs[0].total_steps
    tested = {}
    try:
      for i in active:
        with self._as(self.runs[i]):
          self.runs[i].resume_evaluation(at[i])
      while any(at[i] < total for i in active):  # the runs behind first, then together
        low = min(at[i] for i in active)
        members = tuple(i for i in active if at[i] == low)
        ahead = [at[i] for i in active if at[i] > low]
        self._advance(members, at, min(ahead) if ahead else total, stop)
      for i in active:
        with self._as(self.runs[i]):
          tested[i] = self.runs[i].conclude(total)
    except train._EvalStopped:  # pylint: disable=protected-access
      for i in active:
        with self._as(self.runs[i]):
          self.runs[i].stopped(at[i])
      stopped = preemption.Interrupted(stop.signum, min(at[i] for i in active),
                                       self.runs[active[0]].workdir)
      stopped.args = (f"{stopped.args[0].split(';')[0]}; each run's checkpoint is in its "
                      f"checkpoints/ ({', '.join(self.runs[i].workdir for i in active)}); run "
                      "the same command to resume",)
      raise stopped from None
    for i in active:
      with self._as(self.runs[i]):
        self.runs[i].finished = self.runs[i].record_final(
            total, tested[i], {"stacked_runs": len(self.runs)})
    return [run.finished for run in self.runs]

  @staticmethod
  def _waits(run, step: int) -> bool:
    """Whether the runs' phases after `step` wait for it (the first step, a log, an
    evaluation, a checkpoint): they do alike (one config), so the group waits for it
    first, with every clock running."""
    return (step % run.cfg.train.log_every_steps == 0 or step % run.save_every == 0
            or run._eval_due(step) or not run.clock.started)  # pylint: disable=protected-access

  def _advance(self, members: tuple, at: dict, until: int, stop) -> None:
    """Trains the runs `members` (all at one step) together to step `until`."""
    import jax  # pylint: disable=g-import-not-at-top

    from cnn_jax import train  # pylint: disable=g-import-not-at-top
    runs = [self.runs[i] for i in members]
    program = self.program(members)
    step = at[members[0]]
    while step < until:
      per_epoch = runs[0].steps_per_epoch
      epoch = [r.epoch_batches(step) for r in runs]
      for _ in range(min(per_epoch - step % per_epoch, until - step)):
        batches = []
        for run, batches_of in zip(runs, epoch):
          with self._as(run) if step % per_epoch == 0 or step == at[members[0]] else (
              contextlib.nullcontext()):  # an epoch's input starting: nobody's training time
            batches.append(next(batches_of))
        states = program(tuple(r.state for r in runs), tuple(batches))
        step += 1
        for i, run, state in zip(members, runs, states):
          run.state, at[i] = state, step
        if self._waits(runs[0], step):  # the step's time is every run's, not the first's
          jax.block_until_ready(states)
        for run in runs:  # every run's log before any evaluation, as alone
          with self._as(run):
            run.after_step(step)
        for run in runs:
          with self._as(run):
            run.after_step_evaluate(step)
        if stop:
          raise train._EvalStopped()  # pylint: disable=protected-access
      for run, batches_of in zip(runs, epoch):
        with self._as(run):
          batches_of.close()


def train_group(cfgs: list, workdirs: list[str], discard_unreadable: bool = False,
                program: str = "each") -> list[dict]:
  """Trains the runs (validated configs, their work directories) as one group."""
  from cnn_jax import train  # pylint: disable=g-import-not-at-top
  runs = []
  try:
    for cfg, workdir in zip(cfgs, workdirs):
      runs.append(train.Run(cfg, workdir))
  except BaseException:
    for run in runs:
      run.lock.release()
    raise
  return Group(runs, program).train(discard_unreadable)


def parse_run(argv: list[str]):
  """(validated config, work directory) of one run's `run.py train` arguments
  (`--config=FILE[:ARG]`, `--workdir=DIR`, `--config.KEY=VALUE` ...), parsed as run.py
  parses them."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top

  from cnn_jax import config  # pylint: disable=g-import-not-at-top
  given = [a[len("--config="):] for a in argv if a.startswith("--config=")]
  if not given:
    raise UserError(f"{' '.join(argv)}: a run of a group needs --config=FILE[:ARG]")
  values, saved = flags.FlagValues(), sys.argv
  sys.argv = ["stacked", *argv]  # where config_flags reads the overrides from
  try:
    config_flags.DEFINE_config_file("config", given[-1], "the run's config",
                                    flag_values=values, lock_config=True)
    flags.DEFINE_string("workdir", None, "the run's directory", flag_values=values)
    values(sys.argv)
    cfg = values.config
  except UserError:
    raise
  except Exception as e:  # noqa: BLE001 - parsing flags and loading a config file only
    raise UserError(f"{' '.join(argv)}: {one_line(e)}") from None
  finally:
    sys.argv = saved
  if not values.workdir:
    raise UserError(f"{' '.join(argv)}: a run of a group needs --workdir")
  return config.validate(cfg), values.workdir


def main(argv: list[str]) -> int:
  """`python -m cnn_jax.stacked JSON`: trains the runs (a JSON list of argument lists) as one
  group; exit status 0, 2 for a mistake (one line), 128 + the signal when stopped."""
  import logging as pylogging  # pylint: disable=g-import-not-at-top

  from absl import logging  # pylint: disable=g-import-not-at-top

  from cnn_jax import preemption  # pylint: disable=g-import-not-at-top
  logging.set_verbosity(logging.WARNING)  # as run.py: libraries' INFO lines off, and Orbax's
  logging.get_absl_logger().addFilter(  # own failure reports (the run reports them in a line)
      lambda record: "/orbax/" not in record.pathname or record.levelno >= pylogging.CRITICAL)
  try:
    options = dict(a[2:].split("=", 1) for a in argv[1:] if a.startswith("--") and "=" in a)
    rest = [a for a in argv[1:] if not (a.startswith("--") and "=" in a)]
    if len(rest) != 1 or set(options) - {"program"}:
      raise UserError("usage: python -m cnn_jax.stacked [--program=each|tuple] "
                      "'[[\"--config=...\", \"--workdir=...\", ...], ...]'")
    runs = [parse_run(args) for args in json.loads(rest[0])]
    train_group([c for c, _ in runs], [w for _, w in runs],
                program=options.get("program", "each"))
  except UserError as e:
    print(f"error: {str(e).strip().splitlines()[0]}", file=sys.stderr, flush=True)
    return 2
  except preemption.Interrupted as e:
    print(f"{e}", file=sys.stderr, flush=True)
    return e.exit_status
  return 0


if __name__ == "__main__":
  from cnn_jax import startup
  startup.configure()  # first: as run.py (huge pages, XLA's options, the compilation cache)
  sys.exit(main(sys.argv))
