"""The main job's start-up, from the command to its first training step, broken into parts:
the array input path against the tf.data path, each with an empty and a filled compilation
cache, in alternating fresh processes; the median of `--rounds` rounds of each.

  .venv/bin/python benchmarks/startup.py [--rounds=3] [--config=configs/simple_cnn.py]

Each round starts `python benchmarks/startup.py --child ...` as `run.py train` would run: the
process set up by startup.configure() (its huge-page restart included), the flags parsed and
the config validated, then train.Run's set-up and its first train step, timed by wrappers
around data.build, build_steps and the step (nothing in cnn_jax is changed for it). The parts:

  imports      the interpreter starting (and restarting for huge pages) to the modules loaded
  flags        absl flags, the config file and its overrides, config.validate
  data         data.build: the dataset read (decoded cache or TFDS's records), splits, stats
  state        build_steps: the model built, initialised and laid out; its steps jitted
  first batch  the first epoch's first batch (tf.data: the cache's first pass, the shuffle)
  set-up       the rest of train.Run before the loop: mesh, checkpoints, logs, restore
  first step   the first train step called to done: trace, compile (or the cache's copy), run
  total        the command to the first step done

Each part's median is taken on its own, so the parts need not add up to the total's median.

The dataset must be prepared (run the main job once). A JAX compilation cache under a temporary
folder is used, emptied for the 'cold' rounds and filled by a first run for the 'warm' ones.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PARTS = ("imports", "flags", "data", "state", "first batch", "set-up", "first step", "total")


class _Stop(Exception):
  """Raised after the first train step: the run ends there."""


def child(spawned: float, config_file: str, input_path: str, workdir: str,
          overrides=()) -> None:
  """One start-up of the main job; prints a JSON object of marks (seconds since `spawned`)."""
  sys.path.insert(0, REPO)
  from cnn_jax import startup
  startup.configure()  # huge pages restart this process, as run.py's
  marks = {}
  mark = lambda name: marks.setdefault(name, time.time() - spawned)
  import run as runpy_module  # run.py's flags and imports
  from absl import flags
  from cnn_jax import config, parallel
  from cnn_jax import train as trainer
  mark("imports")
  argv = ["run.py", "train", f"--config={config_file}", f"--workdir={workdir}",
          f"--config.data.input={input_path}", *overrides]
  sys.argv = argv  # config_flags defines the override flags it finds in sys.argv
  runpy_module.define_flags()
  flags.FLAGS(argv)
  cfg = config.validate(flags.FLAGS.config)
  parallel.initialize(None, None, None, False)
  mark("flags")
  build, build_steps = trainer.data.build, trainer.build_steps

  def timed_build(*a, **k):
    mark("set-up start")
    ds = build(*a, **k)
    mark("data")
    batches = ds.train_batches

    def first_batches(*a, **k):
      mark("batches called")
      for i, batch in enumerate(batches(*a, **k)):
        if i == 0:
          mark("first batch")
        yield batch
    ds.train_batches = first_batches
    return ds

  def timed_steps(*a, **k):
    steps = build_steps(*a, **k)
    mark("state")
    step = steps.train_step

    def first(state, batch):
      mark("set-up")
      import jax
      out = jax.block_until_ready(step(state, batch))
      mark("first step")
      raise _Stop()
    steps.train_step = first
    return steps

  trainer.data.build, trainer.build_steps = timed_build, timed_steps
  try:
    trainer.train(cfg, workdir)
  except _Stop:
    pass
  marks["modules"] = sorted(m for m in ("tensorflow", "tensorflow_datasets", "orbax")
                            if m in sys.modules)
  print(json.dumps(marks), flush=True)
  os._exit(0)  # background writers (Orbax, events) need not be waited for


def one_round(config_file: str, input_path: str, cache: str, overrides=()) -> dict:
  """The parts of one start-up in a fresh process (seconds)."""
  workdir = tempfile.mkdtemp(prefix="cnn_jax_startup_")
  env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": cache}
  try:
    spawned = time.time()
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child",
                          f"--spawned={spawned!r}", f"--config={config_file}",
                          f"--input={input_path}", f"--workdir={workdir}",
                          *(f"--override={o}" for o in overrides)],
                         cwd=REPO, env=env, capture_output=True, text=True)
    if out.returncode:
      raise SystemExit(f"the child failed:\n{out.stderr[-3000:]}")
    m = json.loads(out.stdout.strip().splitlines()[-1])
  finally:
    shutil.rmtree(workdir, ignore_errors=True)
  data_s = m["data"] - m["set-up start"]
  batch_s = m["first batch"] - m["batches called"]
  state_s = m["state"] - m["data"]
  return {"imports": m["imports"], "flags": m["flags"] - m["imports"], "data": data_s,
          "state": state_s, "first batch": batch_s,
          "set-up": (m["set-up"] - m["flags"]) - data_s - state_s - batch_s,
          "first step": m["first step"] - m["set-up"], "total": m["first step"],
          "modules": m["modules"]}


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--rounds", type=int, default=3)
  ap.add_argument("--config", default="configs/simple_cnn.py")
  ap.add_argument("--inputs", default="arrays,tf.data")
  ap.add_argument("--override", action="append", default=[],
                  help="a config override for every run, e.g. --override=--config.seed=1")
  ap.add_argument("--json", action="store_true", help="print one JSON object")
  ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
  ap.add_argument("--spawned", type=float, help=argparse.SUPPRESS)
  ap.add_argument("--input", help=argparse.SUPPRESS)
  ap.add_argument("--workdir", help=argparse.SUPPRESS)
  a = ap.parse_args()
  if a.child:
    child(a.spawned, a.config, a.input, a.workdir, a.override)
    return
  inputs = a.inputs.split(",")
  root = tempfile.mkdtemp(prefix="cnn_jax_startup_cache_")
  warm, cold = os.path.join(root, "warm"), os.path.join(root, "cold")
  try:
    for path in inputs:  # fills the warm cache (and the decoded cache) first
      one_round(a.config, path, warm, a.override)
    results = {(p, c): [] for p in inputs for c in ("cold", "warm")}
    for r in range(a.rounds):
      for path in inputs:
        for c in ("cold", "warm"):
          shutil.rmtree(cold, ignore_errors=True)
          results[(path, c)].append(one_round(a.config, path, cold if c == "cold" else warm,
                                              a.override))
  finally:
    shutil.rmtree(root, ignore_errors=True)
  table = {f"{p} {c}": {k: statistics.median(r[k] for r in rs) for k in PARTS}
           | {"modules": rs[0]["modules"], "rounds": len(rs)}
           for (p, c), rs in results.items()}
  if a.json:
    print(json.dumps(table))
    return
  print(f"start-up of {a.config} to its first train step, median of {a.rounds} rounds (s; "
        "each part's median on its own)")
  print(f"{'':16s}" + "".join(f"{k:>12s}" for k in PARTS) + "  imported")
  for name, row in table.items():
    print(f"{name:16s}" + "".join(f"{row[k]:12.2f}" for k in PARTS)
          + "  " + (", ".join(row["modules"]) or "-"))


if __name__ == "__main__":
  main()
