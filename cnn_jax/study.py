"""Studies (ablations, scaling sweeps) as data, and the one command that runs them.

A study file under experiments/ defines `get_study(scale)` returning a `Study`: the arms (each a
variant name and its config overrides, optionally its own config file), the seeds, overrides
for every run, and for scaling studies the quantity to fit a power law against.

  python run.py study --study=experiments/lrn.py:small                 # one run after another
  python run.py study --study=experiments/lrn.py:small --processes=2   # two at once
  python run.py study --study=experiments/lrn.py:paper --slurm         # a SLURM job array

Each run trains in `<study dir>/<variant>__seed<k>` with `run.py train` (`__seed<k>_data<j>`
where its data seed j, which sets data order and augmentation, differs from its initialisation
seed k); finished runs are skipped, so a half-finished study resumes. Then `collect` writes the
table (means with 95% intervals over seeds), the declared comparisons with their verdicts, and
the plots to experiments/results/<study name>/. `cnn_jax.studyplan.plan` prices a study first.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import itertools
import json
import os
import re
import shlex
import subprocess
import sys
import time

from cnn_jax import metrics
from cnn_jax.comparisons import Comparison
from cnn_jax.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "experiments", "results")
# The small studies' budget: two epochs on a quarter of the training split, evaluated each epoch
SMALL = {"train.epochs": 2.0, "data.train_split": "train[:25%]", "train.eval_every_epochs": 1.0}
# Seeds per arm at the small scale: three, so every interval and comparison has two degrees of
# freedom (two seeds give a t interval 12.7 standard errors wide).
SMALL_SEEDS = (0, 1, 2)
SCALINGS = ("params", "train_examples", "joint")
__all__ = ["Comparison", "SMALL", "SMALL_SEEDS", "Study", "at_scale", "grid", "load", "main"]


@dataclasses.dataclass(frozen=True)
class Study:
  name: str
  arms: tuple                      # ((variant name, {dotted config key: value}), ...)
  config: str = "configs/simple_cnn.py"  # file[:arg]; an arm may set its own under "config"
  base: dict = dataclasses.field(default_factory=dict)  # overrides for every run
  seeds: tuple = SMALL_SEEDS       # initialisation (and dropout) seeds: config key `seed`
  # Data-order and augmentation seeds (config key `data.seed`), crossed with `seeds`; None:
  # each run's data seed is its initialisation seed (data.seed left at -1, "same as seed").
  data_seeds: tuple | None = None
  # 'params' or 'train_examples': fit error(N) = a N^-b + c; 'joint': error(N, D) over a
  # width x data grid (cnn_jax.joint_fit)
  scaling: str | None = None
  title: str = ""
  comparisons: tuple = ()          # Comparison(a, b, metric, claim, size, source): the papers'
                                   # claims, checked by the collector (cnn_jax.comparisons)
  train_examples: int | None = None  # the full train split's size, for studyplan where the
                                     # dataset is not one it knows (fractions are parsed)

  def __post_init__(self):
    if self.scaling not in (None, *SCALINGS):
      raise ValueError(f"scaling must be one of {SCALINGS} or None, got {self.scaling!r}")
    variants = {v for v, _ in self.arms}
    for c in self.comparisons:
      if not isinstance(c, Comparison) or {c.a, c.b} - variants:
        raise ValueError(f"comparison {c!r} must be a Comparison of two of the arms "
                         f"{sorted(variants)}")

  def runs(self) -> list[dict]:
    """Every (arm, seed, data seed): name, variant, seed, data_seed, config file, overrides.

    A run whose data seed equals its seed is `<variant>__seed<k>` and leaves data.seed unset
    (-1: the same as seed); otherwise it is `<variant>__seed<k>_data<j>` with data.seed=j.
    """
    out = []
    for (order, (variant, overrides)), seed in itertools.product(enumerate(self.arms),
                                                                 self.seeds):
      arm = dict(overrides)
      config = arm.pop("config", self.config)
      for data_seed in (seed,) if self.data_seeds is None else self.data_seeds:
        name = f"{_slug(variant)}__seed{seed}"
        seeds = {"seed": seed}
        if data_seed != seed:
          name += f"_data{data_seed}"
          seeds["data.seed"] = data_seed
        out.append({"name": name, "variant": variant, "seed": seed, "data_seed": data_seed,
                    "order": order, "config": config,
                    "overrides": {**self.base, **arm, **seeds}})
    return out


def at_scale(scale: str, name: str, arms: tuple, configs: tuple[str, str], title: str,
             **kwargs) -> Study:
  """The study `name` at `scale`: 'small' (configs[0], the SMALL budget, SMALL_SEEDS) or
  'paper' (configs[1], the config's own recipe, seed 0)."""
  if scale not in ("small", "paper"):
    raise KeyError(scale)
  small = scale == "small"
  return Study(f"{name}_{scale}", arms, config=configs[0] if small else configs[1],
               base=dict(SMALL) if small else {}, seeds=SMALL_SEEDS if small else (0,),
               title=f"{title} ({'Fashion-MNIST, small' if small else 'ImageNet'})", **kwargs)


def grid(**axes) -> tuple:
  """Arms for every combination of the values of `axes` ({'model.width': (0.5, 1.0)})."""
  keys = list(axes)
  return tuple((",".join(f"{k.split('.')[-1]}={v}" for k, v in zip(keys, values)),
                dict(zip(keys, values))) for values in itertools.product(*axes.values()))


def _slug(text: str) -> str:
  return re.sub(r"[^A-Za-z0-9_.=,+-]", "_", text)


def load(spec: str) -> Study:
  """The Study of 'experiments/<file>.py[:scale]'."""
  path, _, scale = spec.partition(":")
  full = path if os.path.isabs(path) else os.path.join(ROOT, path)
  if not os.path.isfile(full):
    raise UserError(f"--study={spec}: no such study file; see experiments/ for the studies")
  module_spec = importlib.util.spec_from_file_location(f"study_{os.path.basename(path)[:-3]}",
                                                       full)
  module = importlib.util.module_from_spec(module_spec)
  try:
    module_spec.loader.exec_module(module)
  except SyntaxError as e:
    raise UserError(f"--study={spec}: {e.filename} line {e.lineno}: {e.msg}; fix the study "
                    "file") from None
  except Exception as e:  # noqa: BLE001 - the study file's own code failed
    raise UserError(f"--study={spec}: {type(e).__name__}: {e}; fix the study file") from None
  if not callable(getattr(module, "get_study", None)):
    raise UserError(f"--study={spec}: the file defines no get_study(scale); see "
                    "experiments/lrn.py for the shape of a study file")
  try:
    study = module.get_study(scale or "small")
  except KeyError as e:
    raise UserError(f"--study={spec}: unknown scale {scale!r}; use small or paper") from e
  if not isinstance(study, Study):
    raise UserError(f"--study={spec}: get_study returned {type(study).__name__}, not a Study")
  return study


def _value(v) -> str:
  return repr(tuple(v)) if isinstance(v, (tuple, list)) else str(v)


def command(run: dict, workdir: str) -> list[str]:
  """The run.py train command of one run."""
  return [sys.executable, os.path.join(ROOT, "run.py"), "train", f"--config={run['config']}",
          f"--workdir={workdir}",
          *[f"--config.{k}={_value(v)}" for k, v in run["overrides"].items()]]


def finished(workdir: str) -> bool:
  path = os.path.join(workdir, "metrics.jsonl")
  return os.path.exists(path) and any(r.get("final") for r in metrics.read_jsonl(path))


def prepare(study: Study, study_dir: str) -> list[tuple[dict, str, list[str]]]:
  """(run, its work directory, its command) for every run; records study_run.json."""
  out = []
  for run in study.runs():
    workdir = os.path.join(study_dir, run["name"])
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "study_run.json"), "w") as f:
      json.dump({k: run[k] for k in ("variant", "order", "seed", "data_seed", "config",
                                     "overrides")}, f, indent=2)
    out.append((run, workdir, command(run, workdir)))
  return out


def run_local(runs, processes: int = 1) -> list[str]:
  """Runs the unfinished runs, `processes` at a time; returns the names of those that failed."""
  todo = [(run, wd, cmd) for run, wd, cmd in runs if not finished(wd)]
  skipped = len(runs) - len(todo)
  print(f"{len(runs)} runs: {skipped} finished already, {len(todo)} to run, {processes} at a "
        "time", flush=True)
  active, failed = [], []
  while todo or active:
    while todo and len(active) < processes:
      run, wd, cmd = todo.pop(0)
      log = open(os.path.join(wd, "log.txt"), "a")
      active.append((run, log, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                                cwd=ROOT), time.monotonic()))
      print(f"started {run['name']}", flush=True)
    for item in list(active):
      run, log, proc, start = item
      if proc.poll() is None:
        continue
      active.remove(item)
      log.close()
      status = "done" if proc.returncode == 0 else f"FAILED (exit {proc.returncode})"
      print(f"{status}: {run['name']} in {metrics.format_duration(time.monotonic() - start)}",
            flush=True)
      if proc.returncode:
        failed.append(run["name"])
    time.sleep(0.5)
  return failed


def write_slurm(study: Study, runs, study_dir: str, options: str = "") -> str:
  """A SLURM job-array script over the unfinished runs; returns its path."""
  todo = [cmd for _, wd, cmd in runs if not finished(wd)]
  commands = os.path.join(study_dir, "runs.txt")
  with open(commands, "w") as f:
    f.writelines(shlex.join(cmd) + "\n" for cmd in todo)
  script = os.path.join(study_dir, "slurm.sh")
  extra = "".join(f"#SBATCH {o}\n" for o in shlex.split(options))
  with open(script, "w") as f:
    f.write("#!/bin/bash\n"
            f"#SBATCH --job-name={study.name}\n"
            f"#SBATCH --array=0-{max(len(todo) - 1, 0)}\n"
            f"#SBATCH --output={study_dir}/slurm-%A_%a.out\n"
            f"{extra}"
            f"cd {shlex.quote(ROOT)}\n"
            f'eval "$(sed -n "$((SLURM_ARRAY_TASK_ID + 1))p" {shlex.quote(commands)})"\n')
  os.chmod(script, 0o755)
  return script


def main(spec: str, study_dir: str | None, processes: int, slurm: bool, collect_only: bool,
         slurm_options: str = "", results: str = RESULTS) -> int:
  """`python run.py study`: runs (or writes the SLURM array of) a study, then collects it."""
  from cnn_jax import collect
  if processes < 1:
    raise UserError(f"--processes={processes} must be at least 1 (runs trained at once)")
  study = load(spec)
  study_dir = study_dir or os.path.join(ROOT, "studies", study.name)
  runs = prepare(study, study_dir)
  if slurm:
    script = write_slurm(study, runs, study_dir, slurm_options)
    print(f"one command per run in {study_dir}/runs.txt; launch them all with:\n"
          f"  sbatch {script}\nthen collect with:\n"
          f"  python run.py study --study={spec} --workdir={study_dir} --collect_only")
    return 0
  failed = [] if collect_only else run_local(runs, processes)
  out_dir = os.path.join(results, study.name)
  os.makedirs(out_dir, exist_ok=True)
  collect.collect(study_dir, out_dir, title=study.title or study.name, scaling=study.scaling,
                  comparisons=study.comparisons)
  with open(os.path.join(out_dir, "command.txt"), "w") as f:
    f.write(f"python run.py study --study={spec}"
            + (f" --processes={processes}" if processes > 1 else "") + "\n")
  print(f"table and plots in {out_dir}")
  if failed:
    print(f"{len(failed)} runs failed: {', '.join(failed)}; see their log.txt, fix, and run "
          "the same command again", file=sys.stderr)
    return 1
  return 0
