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
table (means with 95% intervals over seeds of the test metrics, selection on validation), the
declared comparisons with their verdicts, and the plots to experiments/results/<study name>/.
`cnn_jax.studyplan.plan` prices a study first.

Tuning (`tune={"optim.lr": (0.007, 0.02, 0.06)}`): each arm first trains once per grid point
(seed `tune_seed`) under `<study dir>/tune/`, the best validation top-1 picks its values
(`cnn_jax.tuning`, recorded in tuned.json), and its seeds then run with them. The tuning run
is not reused as the seed-`tune_seed` run even where it is the same training (simpler, and a
run's directory holds one role): each arm costs len(grid) + len(seeds) runs.

Budgets: `budget_flops=` sets train.flops (3 x MACs x images trained; the trainer derives the
steps from it) for every arm that does not set its own, so arms of different cost are
compute-matched.

Runs that depend on runs: an override's string may name another run of the study by template,
`"model.init_from": "{study_dir}/A__seed{seed}"` (fields study_dir, seed, data_seed, variant;
write {{ and }} for literal braces); a run whose formatted overrides name another run's work
directory starts once that one has finished and fails, in one line, if it failed
(`cnn_jax.study_runner`).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import itertools
import json
import os
import re
import shlex
import sys

from cnn_jax import runlog, tuning
from cnn_jax.comparisons import Comparison
from cnn_jax.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "experiments", "results")
# The small studies' shared budget: 2 epochs on 30% of the training split (of the 54,000 left
# after the 6,000 held out for validation: 16,200 images, 252 updates of 128), evaluated after
# each epoch (each evaluation reads the 6,000 validation images). Sized with `--plan` so that a
# study of 4 tuned arms (24 runs) fits about 20 minutes of the 2-core CPU with start-up; a
# study sets its own where it can afford more (experiments/pooling.py).
SMALL = {"train.epochs": 2.0, "data.train_split": "train[:30%]",
         "train.eval_every_epochs": 1.0}
# Seeds per arm at the small scale: three, so every interval and comparison has two degrees of
# freedom (two seeds give a t interval 12.7 standard errors wide).
SMALL_SEEDS = (0, 1, 2)
# The learning rates tried per arm where small-scale arms differ in architecture: the small
# configs' SGD rate (0.02) and a factor of 3 either side.
SMALL_LR_GRID = {"optim.lr": (0.007, 0.02, 0.06)}
SCALINGS = ("params", "train_examples", "joint")
SEED_KEYS = ("seed", "data.seed")
TEMPLATE_FIELDS = ("study_dir", "seed", "data_seed", "variant")
__all__ = ["Comparison", "SMALL", "SMALL_LR_GRID", "SMALL_SEEDS", "Study", "at_scale", "grid",
           "load", "main"]


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
  # {dotted key: (values, ...)}: each arm is trained at every point of the grid (the product
  # over the keys) once, seed `tune_seed`, and its seeds run with the point of best validation
  # top-1 (cnn_jax.tuning); None: no tuning.
  tune: dict | None = None
  tune_seed: int = 0
  budget_flops: float | None = None  # train.flops of every arm that does not set its own
  # Train runs that differ only in seeds or shape-keeping values (cnn_jax.stacked) as one
  # stacked group where they are ready together; None: where measured faster
  # (study_runner.STACKED_CONFIGS).
  stack: bool | None = None

  def __post_init__(self):
    if self.scaling not in (None, *SCALINGS):
      raise ValueError(f"scaling must be one of {SCALINGS} or None, got {self.scaling!r}")
    if self.tune is not None:
      if not isinstance(self.tune, dict) or not self.tune:
        raise ValueError(f"tune must be a dict {{dotted key: (values, ...)}}, got {self.tune!r}")
      for key, values in self.tune.items():
        if key in SEED_KEYS or key == "config":
          raise ValueError(f"tune cannot vary {key!r}: seeds and configs are not tuned")
        if not isinstance(values, (tuple, list)) or not values or len(set(values)) != len(values):
          raise ValueError(f"tune[{key!r}] must be a non-empty tuple of distinct values, got "
                           f"{values!r}")
    if self.budget_flops is not None and not self.budget_flops > 0:
      raise ValueError(f"budget_flops must be positive (training FLOPs), got {self.budget_flops}")
    variants = {v for v, _ in self.arms}
    for c in self.comparisons:
      if not isinstance(c, Comparison) or {c.a, c.b} - variants:
        raise ValueError(f"comparison {c!r} must be a Comparison of two of the arms "
                         f"{sorted(variants)}")

  def _arm(self, overrides: dict) -> tuple[str, dict]:
    """(config file, overrides before seeds and tuning) of an arm: the study's base, its
    FLOP budget unless the arm sets train.flops, then the arm's own."""
    arm = dict(overrides)
    config = arm.pop("config", self.config)
    budget = {} if self.budget_flops is None else {"train.flops": self.budget_flops}
    return config, {**self.base, **budget, **arm}

  def tune_points(self) -> list[dict]:
    """Every point of the tuning grid, {key: value}, in the grid's order ([] without one)."""
    if not self.tune:
      return []
    keys = list(self.tune)
    return [dict(zip(keys, values)) for values in itertools.product(*self.tune.values())]

  def runs(self, tuned: dict | None = None) -> list[dict]:
    """Every (arm, seed, data seed): name, variant, seed, data_seed, config file, overrides,
    and "tuned": the values `tuned` ({variant: {key: value}}, from the tuning phase) gives the
    arm, which are among its overrides ({} where the arm is not tuned or not yet).

    A run whose data seed equals its seed is `<variant>__seed<k>` and leaves data.seed unset
    (-1: the same as seed); otherwise it is `<variant>__seed<k>_data<j>` with data.seed=j.
    """
    out = []
    for (order, (variant, overrides)), seed in itertools.product(enumerate(self.arms),
                                                                 self.seeds):
      config, arm = self._arm(overrides)
      chosen = dict((tuned or {}).get(variant, {}))
      for data_seed in (seed,) if self.data_seeds is None else self.data_seeds:
        name = f"{_slug(variant)}__seed{seed}"
        seeds = {"seed": seed}
        if data_seed != seed:
          name += f"_data{data_seed}"
          seeds["data.seed"] = data_seed
        out.append({"name": name, "variant": variant, "seed": seed, "data_seed": data_seed,
                    "order": order, "config": config, "tuning": False, "tuned": chosen,
                    "overrides": {**arm, **chosen, **seeds}})
    return out

  def tuning_runs(self) -> list[dict]:
    """The tuning phase's runs: each arm at each grid point, seed `tune_seed`, named
    `tune/<variant>__<point>` ([] without a grid); "point" is the grid point."""
    out = []
    for order, (variant, overrides) in enumerate(self.arms):
      config, arm = self._arm(overrides)
      for point in self.tune_points():
        name = f"{_slug(variant)}__{_slug(tuning.point_name(point))}"
        out.append({"name": f"{tuning.TUNE_DIR}/{name}",
                    "variant": variant, "seed": self.tune_seed, "data_seed": self.tune_seed,
                    "order": order, "config": config, "tuning": True, "point": point,
                    "overrides": {**arm, **point, "seed": self.tune_seed}})
    return out

  def all_runs(self) -> list[dict]:
    """The tuning runs, then the study's own (their tuned values not yet known)."""
    return self.tuning_runs() + self.runs()


def at_scale(scale: str, name: str, arms: tuple, configs: tuple[str, str], title: str,
             budget: dict | None = None, tune: dict | None = None, **kwargs) -> Study:
  """The study `name` at `scale`: 'small' (configs[0], the `budget` overrides, default SMALL,
  SMALL_SEEDS, tuned over `tune`) or 'paper' (configs[1], the config's own recipe, seed 0, no
  tuning)."""
  if scale not in ("small", "paper"):
    raise KeyError(scale)
  small = scale == "small"
  return Study(f"{name}_{scale}", arms, config=configs[0] if small else configs[1],
               base=dict(SMALL if budget is None else budget) if small else {},
               seeds=SMALL_SEEDS if small else (0,), tune=tune if small else None,
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


def train_args(run: dict, workdir: str) -> list[str]:
  """The arguments of one run's run.py train command, after `train`."""
  return [f"--config={run['config']}", f"--workdir={workdir}",
          *[f"--config.{k}={_value(v)}" for k, v in run["overrides"].items()]]


def command(run: dict, workdir: str) -> list[str]:
  """The run.py train command of one run."""
  return [sys.executable, os.path.join(ROOT, "run.py"), "train", *train_args(run, workdir)]


def finished(workdir: str) -> bool:
  return runlog.final(workdir) is not None


def formatted(run: dict, study_dir: str) -> dict:
  """`run` with the templates in its string overrides filled in (TEMPLATE_FIELDS)."""
  fields = {"study_dir": study_dir, "seed": run["seed"], "data_seed": run["data_seed"],
            "variant": run["variant"]}
  overrides = {}
  for key, value in run["overrides"].items():
    if isinstance(value, str) and "{" in value:
      try:
        value = value.format(**fields)
      except (KeyError, IndexError, ValueError) as e:
        raise UserError(f"{run['name']}: override {key}={value!r} is not a template of "
                        f"{', '.join(TEMPLATE_FIELDS)} ({type(e).__name__}: {e}); write {{{{ "
                        "and }} for literal braces") from None
    overrides[key] = value
  return {**run, "overrides": overrides}


RUN_KEYS = ("variant", "order", "seed", "data_seed", "config", "overrides", "tuning", "point",
            "tuned")


def record(run: dict, workdir: str) -> None:
  """Writes the run's study_run.json (what the collector reads), where it changed."""
  os.makedirs(workdir, exist_ok=True)
  text = json.dumps({k: run[k] for k in RUN_KEYS if run.get(k) not in (None, {})}, indent=2)
  path = os.path.join(workdir, "study_run.json")
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      if f.read() == text:
        return
  with open(path, "w", encoding="utf-8") as f:
    f.write(text)


def prepare(study: Study, study_dir: str, tuned: dict | None = None
            ) -> list[tuple[dict, str, list[str]]]:
  """(run, its work directory, its command) for every run that can be named now: the tuning
  runs and the runs of the arms that are untuned or whose values `tuned` gives ({variant:
  point}); records each one's study_run.json."""
  out = []
  tuned = tuned or {}
  untuned = not study.tune
  for run in study.tuning_runs() + [r for r in study.runs(tuned)
                                    if untuned or r["variant"] in tuned]:
    run = formatted(run, study_dir)
    workdir = os.path.join(study_dir, run["name"])
    record(run, workdir)
    out.append((run, workdir, command(run, workdir)))
  return out


def run_local(study: Study, study_dir: str, processes: int = 1) -> list[str]:
  """Runs the study's unfinished runs, `processes` at a time, in dependency and tuning order;
  returns the names of those that failed (`cnn_jax.study_runner.run_local`)."""
  from cnn_jax import study_runner  # pylint: disable=g-import-not-at-top
  return study_runner.run_local(study, study_dir, processes)


def write_slurm(study: Study, runs, study_dir: str, options: str = "") -> str:
  """A SLURM job-array script over the unfinished runs that can start now (those another
  unfinished run, or an unfinished tuning phase, does not hold back); returns its path."""
  from cnn_jax import study_runner  # pylint: disable=g-import-not-at-top
  todo = [cmd for run, wd, cmd in runs
          if not finished(wd) and study_runner.ready(study, run, study_dir)]
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
  study_dir = os.path.abspath(study_dir or os.path.join(ROOT, "studies", study.name))
  if slurm:
    runs = prepare(study, study_dir, tuning.resolve(study, study_dir))
    script = write_slurm(study, runs, study_dir, slurm_options)
    later = len(study.all_runs()) - sum(finished(wd) for _, wd, _ in runs) - sum(
        1 for _ in open(os.path.join(study_dir, "runs.txt")))
    print(f"one command per run in {study_dir}/runs.txt; launch them all with:\n"
          f"  sbatch {script}\n"
          + (f"{later} runs wait on these (tuning, or runs they start from): when the array "
             "is done, run this command again for the next one; " if later else "")
          + f"then collect with:\n"
          f"  python run.py study --study={spec} --workdir={study_dir} --collect_only")
    return 0
  failed = [] if collect_only else run_local(study, study_dir, processes)
  out_dir = os.path.join(results, study.name)
  os.makedirs(out_dir, exist_ok=True)
  collect.collect(study_dir, out_dir, title=study.title or study.name, scaling=study.scaling,
                  comparisons=study.comparisons)
  with open(os.path.join(out_dir, "command.txt"), "w") as f:
    f.write(f"python run.py study --study={spec}"
            + (f" --processes={processes}" if processes > 1 else "") + "\n")
  from cnn_jax import claims_table  # pylint: disable=g-import-not-at-top
  claims_table.write(results)  # the results README's table of claims, from every study
  print(f"table and plots in {out_dir}")
  if failed:
    print(f"{len(failed)} runs failed: {', '.join(failed)}; see their log.txt, fix, and run "
          "the same command again", file=sys.stderr)
    return 1
  return 0
