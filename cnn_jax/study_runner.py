"""Running a study's runs on this machine (`python run.py study ... [--processes=k]`).

Order. The tuning runs come first where an arm is tuned (`cnn_jax.tuning`); an arm's seeds are
named, recorded and started once its values are chosen. A run whose formatted overrides name
another run's work directory (`"model.init_from": "{study_dir}/A__seed{seed}"`, or a folder
inside it) waits until that run has finished, and fails with one line if it failed; a run left
waiting on runs that can never finish (a cycle) fails the same way. Finished runs are skipped,
so a killed study resumes where it was, at whichever phase.

Threads. k runs at once on a machine of C cores (`available_cores`) share it: each child gets
`--config.data.threads=max(1, C // k)` (tf.data's pool) unless the study sets data.threads, and
XLA_FLAGS with `--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=N` (XLA's CPU
intra-op threads; XLA accepts that pair, as jax-ml/jax#743 and #1539 use it) merged into the
XLA_FLAGS it would inherit: an option already named there is left as set, and
`startup.configure()` in the child then appends cnn_jax's own defaults (`xla_options`) after
them, as for any run. With k = 1 nothing is set. A run whose work directory already records a
data.threads (it began in another session) keeps that value, so that the trainer's config check
lets it resume whatever --processes is now.

Stacking. Where a study stacks (`Study.stack`; by default the runs of STACKED_CONFIGS), the
runs ready together that differ only in seeds or shape-keeping values (`cnn_jax.stacked`: an
arm's seeds, its tuning grid of learning rates) train as one group, one child `python -m
cnn_jax.stacked` taking one of the k places, at most `max_group` runs a group and no larger
than leaves each free place runs to start (3 seeds on 3 places run alone). The group's
output goes to its first run's log.txt (the others' say where). A group that fails (not by a
signal) leaves its unfinished runs to be started again one by one, so that a run that fails
fails alone, naming its own reason.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from cnn_jax import metrics, stacked, study as studies, tuning
from cnn_jax import workdir as workdirs

XLA_THREAD_OPTIONS = ("xla_cpu_multi_thread_eigen", "intra_op_parallelism_threads")
# The config files whose runs (any variant) stack unless a study says otherwise: where
# benchmarks/stacked.py measured a group faster than its runs one after another (README,
# "Studies").
STACKED_CONFIGS = ("configs/simple_cnn.py",)


def available_cores() -> int:
  """The cores this process may run on (its affinity mask), else the machine's count."""
  try:
    return len(os.sched_getaffinity(0))
  except (AttributeError, OSError):
    return os.cpu_count() or 1


def threads_per_run(processes: int, cores: int | None = None) -> int | None:
  """max(1, cores // processes) for processes > 1; None (leave the defaults) for one."""
  if processes <= 1:
    return None
  return max(1, (cores or available_cores()) // processes)


def xla_flags(flags: str, threads: int) -> str:
  """`flags` (an XLA_FLAGS value) with XLA's CPU thread options for `threads` threads added,
  each unless `flags` names it already."""
  named = {part.split("=", 1)[0].lstrip("-") for part in flags.split()}
  extra = {"xla_cpu_multi_thread_eigen": "--xla_cpu_multi_thread_eigen=false",
           "intra_op_parallelism_threads": f"intra_op_parallelism_threads={threads}"}
  return " ".join([flags.strip(), *[v for k, v in extra.items() if k not in named]]).strip()


def child_env(threads: int | None, environ=None) -> dict | None:
  """The environment of a child run: `environ` (default os.environ) with XLA_FLAGS limited to
  `threads` threads; None (inherit it unchanged) where threads is None."""
  if threads is None:
    return None
  env = dict(os.environ if environ is None else environ)
  env["XLA_FLAGS"] = xla_flags(env.get("XLA_FLAGS", ""), threads)
  return env


def _recorded_threads(workdir: str):
  return ((workdirs.recorded_config(workdir) or {}).get("data") or {}).get("threads")


def with_threads(run: dict, workdir: str, threads: int | None) -> dict:
  """The run with --config.data.threads set as the module docstring says."""
  if "data.threads" not in run["overrides"]:
    recorded = _recorded_threads(workdir)
    value = recorded if isinstance(recorded, int) else threads
    if value is not None:
      run = {**run, "overrides": {**run["overrides"], "data.threads": value}}
  return run


def child_command(run: dict, workdir: str, threads: int | None) -> list[str]:
  """study.command for the run, with --config.data.threads set as the module docstring says."""
  return studies.command(with_threads(run, workdir, threads), workdir)


def group_command(members: list[tuple[dict, str]], threads: int | None) -> list[str]:
  """The `python -m cnn_jax.stacked` command of the runs [(run, work directory)]."""
  return [sys.executable, "-m", "cnn_jax.stacked", json.dumps(
      [studies.train_args(with_threads(run, wd, threads), wd) for run, wd in members])]


def stacks(study, run: dict) -> bool:
  """Whether `run` of `study` may train in a stacked group (module docstring)."""
  if study.stack is not None:
    return study.stack
  return run["config"].partition(":")[0] in STACKED_CONFIGS


def stackable(a: dict, b: dict) -> bool:
  """Whether two runs' configs (file and overrides) differ only in stackable values."""
  return stacked.reason({"config": a["config"], **a["overrides"]},
                        {"config": b["config"], **b["overrides"]}) is None


def _path(value: str) -> str:
  return os.path.normpath(os.path.join(studies.ROOT, os.path.expanduser(value)))


def dependencies(run: dict, workdirs: dict[str, str]) -> list[tuple[str, str]]:
  """(override key, run name) for each override of `run` that names the work directory of
  another run (`workdirs`: {normalised work directory: run name}), or a folder inside one."""
  out = []
  for key, value in run["overrides"].items():
    if not isinstance(value, str) or not value:
      continue
    path = _path(value)
    for wd, name in workdirs.items():
      if name != run["name"] and (path == wd or path.startswith(wd + os.sep)):
        out.append((key, name))
  return out


def _workdirs(study, study_dir: str) -> dict[str, str]:
  return {os.path.normpath(os.path.join(study_dir, r["name"])): r["name"]
          for r in study.all_runs()}


def ready(study, run: dict, study_dir: str) -> bool:
  """Whether `run` (of study.prepare) is to start now: every run of the study its overrides
  name has finished, and it is not a tuning run of an arm whose values are chosen already."""
  if run.get("tuning") and run["variant"] in tuning.load(study_dir).get("arms", {}):
    return False
  return all(studies.finished(os.path.join(study_dir, d))
             for _, d in dependencies(run, _workdirs(study, study_dir)))


class _Runner:
  """The state of one `run_local`: the runs running, failed (with their one-line reason)."""

  def __init__(self, study, study_dir: str, processes: int, cores: int | None,
               max_group: int | None = None):
    self.study, self.study_dir, self.processes = study, study_dir, processes
    self.threads = threads_per_run(processes, cores)
    self.workdirs = _workdirs(study, study_dir)
    self.max_group = max_group
    self.active: dict[str, tuple] = {}  # first run's name -> (log, process, start, names)
    self.failed: dict[str, str] = {}
    self.alone: set[str] = set()  # runs of a group that failed: started again one by one

  def fail(self, name: str, reason: str) -> None:
    self.failed[name] = reason
    workdir = os.path.join(self.study_dir, name)
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "log.txt"), "a", encoding="utf-8") as log:
      log.write(f"error: {reason}\n")
    print(f"FAILED: {reason}", flush=True)

  def plan(self) -> list[tuple[dict, str]]:
    """The runs that can start now; fails those that never can."""
    s, failed = self.study, self.failed
    tuned = tuning.resolve(s, self.study_dir, failed) if s.tune else {}
    for variant in tuning.unresolvable(s, self.study_dir, failed) if s.tune else ():
      for run in s.runs():
        if run["variant"] == variant and run["name"] not in failed:
          self.fail(run["name"], f"{run['name']}: every tuning run of {variant} failed, so no "
                                 f"{', '.join(s.tune)} could be chosen; see tune/*/log.txt")
    out = []
    running = {n for *_, names in self.active.values() for n in names}
    for run, wd, _ in studies.prepare(s, self.study_dir, tuned):
      name = run["name"]
      if name in running or name in failed or studies.finished(wd):
        continue
      if run["tuning"] and run["variant"] in tuned:
        continue  # the arm's values were chosen (tuned.json) without it
      deps = dependencies(run, self.workdirs)
      bad = [(k, d) for k, d in deps if d in failed]
      if bad:
        key, dep = bad[0]
        self.fail(name, f"{name}: {key} names the run {dep}, which failed; fix it and run the "
                        "study again")
      elif all(studies.finished(os.path.join(self.study_dir, d)) for _, d in deps):
        out.append((run, wd))
    return out

  def start_next(self, todo: list[tuple[dict, str]]) -> None:
    """Starts the first run of `todo` (taking it out), with the runs of `todo` that stack
    with it where the study stacks: at most `max_group`, and no more than leave the other
    free places something to run (k places are not given one group where k runs could run
    at once)."""
    free = max(1, self.processes - len(self.active))
    size = -(-len(todo) // free)
    if self.max_group is not None:
      size = min(size, self.max_group)
    run, wd = todo.pop(0)
    members = [(run, wd)]
    if stacks(self.study, run) and run["name"] not in self.alone:
      for other in list(todo):
        if len(members) >= size:
          break
        if (other[0]["name"] not in self.alone and stacks(self.study, other[0])
            and stackable(run, other[0])):
          members.append(other)
          todo.remove(other)
    self.start(members)

  def start(self, members: list[tuple[dict, str]]) -> None:
    """Starts one run, or a stacked group of runs [(run, work directory)]."""
    names = [run["name"] for run, _ in members]
    first = members[0][1]
    for _, wd in members[1:]:
      with open(os.path.join(wd, "log.txt"), "a", encoding="utf-8") as note:
        note.write(f"trained in a stacked group with {', '.join(names)}: its output is in "
                   f"{os.path.join(first, 'log.txt')}\n")
    log = open(os.path.join(first, "log.txt"), "a", encoding="utf-8")  # noqa: SIM115
    command = (child_command(*members[0], self.threads) if len(members) == 1
               else group_command(members, self.threads))
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=studies.ROOT,
                            env=child_env(self.threads))
    self.active[names[0]] = (log, proc, time.monotonic(), names)
    print(f"started {names[0]}" if len(names) == 1 else
          f"started {', '.join(names)} (one stacked group)", flush=True)

  def reap(self) -> bool:
    """Collects the runs that ended; whether any did."""
    ended = False
    for key, (log, proc, start, names) in list(self.active.items()):
      if proc.poll() is None:
        continue
      ended = True
      del self.active[key]
      log.close()
      took = metrics.format_duration(time.monotonic() - start)
      what = ", ".join(names)
      code = proc.returncode
      if code and len(names) > 1 and 0 < code < 128:  # not by a signal: each run alone now
        left = [n for n in names if not studies.finished(os.path.join(self.study_dir, n))]
        self.alone.update(left)
        print(f"the stacked group of {what} failed (exit {code}) in {took}; "
              f"{', '.join(left) or 'none'} left to run one by one", flush=True)
      elif code:
        for name in names:
          self.failed[name] = f"{name}: exit {code}"
        print(f"FAILED (exit {code}): {what} in {took}", flush=True)
      else:
        print(f"done: {what} in {took}", flush=True)
    return ended

  def stuck(self) -> None:
    """Fails every run left unfinished that nothing can start (a cycle of dependencies)."""
    tuned = tuning.load(self.study_dir).get("arms", {})
    for run in self.study.all_runs():
      name = run["name"]
      if (name in self.failed or (run["tuning"] and run["variant"] in tuned)
          or studies.finished(os.path.join(self.study_dir, name))):
        continue
      self.fail(name, f"{name}: waits on runs that cannot finish (do its overrides name each "
                      "other, or a run of an arm that cannot be tuned?)")


def run_local(study, study_dir: str, processes: int = 1, cores: int | None = None,
              poll: float = 0.5, max_group: int | None = None) -> list[str]:
  """Runs the study's unfinished runs in `study_dir`, `processes` at a time (see the module
  docstring); returns the names of the runs that failed, or could not start."""
  r = _Runner(study, study_dir, processes, cores, max_group)
  names = [run["name"] for run in study.all_runs()]
  done = sum(studies.finished(os.path.join(study_dir, n)) for n in names)
  print(f"{len(names)} runs: {done} finished already, {len(names) - done} to run, {processes} "
        "at a time" + (f", {r.threads} threads each" if r.threads else ""), flush=True)
  todo, changed = [], True
  while True:
    if changed:
      todo = r.plan()
    while todo and len(r.active) < processes:
      r.start_next(todo)
    if not r.active:
      if todo:
        continue
      if not changed:
        r.stuck()
        break
      changed = False
      continue
    time.sleep(poll)
    changed = r.reap()
  return [n for n in names if n in r.failed]
