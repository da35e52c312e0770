"""k runs trained as one stacked group (cnn_jax/stacked.py) against the same k runs one after
another, in alternating rounds; the median of each and their ratio, measured in the same
invocation.

  .venv/bin/python benchmarks/stacked.py --part=runs [--cases=width_0.125,width_1,main] \\
      [--k=3] [--rounds=3]
  .venv/bin/python benchmarks/stacked.py --part=step [--widths=0.125,1] [--k=3] [--rounds=7]

`--part=runs` (what a study sees): after `--warmup` rounds that are not counted (they fill
JAX's compilation cache, which a study's later runs find filled), each round runs the k
configs (seeds 0..k-1) as k `run.py train` processes one after another, as `run.py study`
starts them, and as one `python -m cnn_jax.stacked --program=P` process (`--program`, default
each); the order alternates between rounds. It prints the wall time of each, the group's
training images/s (the sum of its runs' logged rates) against the separate runs' mean, and
checks each stacked run's params_sha256 against its separate run's. The cases: `width_<w>`:
the width study's recipe and small budget (experiments/width.py:small with
configs/simple_cnn.py:long: 2 epochs on 30% of the training split, evaluated after each) at
model.width=w; `main`: the main job (configs/simple_cnn.py) cut to `--main_epochs` epochs.

`--part=step` (the program alone): the train step of k runs of the small CNN at each width
on random batches of 128, timed as k calls of the jitted step, as one jitted program over the
tuple of states (stacked.py's program 'tuple'), the same with each run's step ordered after
the one before (an optimization_barrier between them), and as jax.vmap of the step over
stacked states; milliseconds per group step, the ratios to the k calls, and whether each
run's parameters are bitwise equal to its separate run's after the timed steps.

This machine's speed drifts and other jobs may share it: read the ratios, within a round
and across rounds, not the absolute figures.
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
SMALL = {"train.epochs": 2.0, "data.train_split": "train[:30%]", "train.eval_every_epochs": 1.0}


def case_overrides(case: str, main_epochs: float) -> dict:
  if case == "main":
    return {"train.epochs": main_epochs}
  if case.startswith("width_"):
    return {**SMALL, "model.width": float(case[len("width_"):])}
  raise SystemExit(f"unknown case {case!r}: width_<w> or main")


def case_config(case: str) -> str:
  """The config a case trains: the main job's for `main`, the width study's recipe
  (configs/simple_cnn.py:long) for `width_<w>`."""
  return "configs/simple_cnn.py" if case == "main" else "configs/simple_cnn.py:long"


def run_args(spec: str, overrides: dict, seed: int, workdir: str) -> list[str]:
  return [f"--config={spec}", f"--workdir={workdir}",
          *[f"--config.{k}={v}" for k, v in {**overrides, "seed": seed}.items()]]


def final(workdir: str) -> dict:
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  return next(r for r in reversed(rows) if r.get("final"))


def train_rate(workdir: str) -> float:
  """The median logged training images/s of a run."""
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  return statistics.median(r["images_per_sec"] for r in rows if r.get("images_per_sec"))


def timed(command: list[str], log: str) -> float:
  begun = time.monotonic()
  with open(log, "w") as out:
    status = subprocess.call(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
  if status:
    raise SystemExit(f"{' '.join(command[:4])} ... failed with exit {status}; see {log}")
  return time.monotonic() - begun


def runs_round(case: str, overrides: dict, k: int, root: str, stacked_first: bool,
               program: str) -> dict:
  sep = [os.path.join(root, f"separate{i}") for i in range(k)]
  stk = [os.path.join(root, f"stacked{i}") for i in range(k)]
  config = case_config(case)

  def separate():
    return sum(timed([sys.executable, "run.py", "train", *run_args(config, overrides, i, wd)],
                     wd + ".log") for i, wd in enumerate(sep))

  def stacked():
    spec = json.dumps([run_args(config, overrides, i, wd) for i, wd in enumerate(stk)])
    return timed([sys.executable, "-m", "cnn_jax.stacked", f"--program={program}", spec],
                 stk[0] + ".log")

  if stacked_first:
    t_stk, t_sep = stacked(), separate()
  else:
    t_sep, t_stk = separate(), stacked()
  bitwise = all(final(a)["params_sha256"] == final(b)["params_sha256"] for a, b in zip(sep, stk))
  out = {"separate_s": t_sep, "stacked_s": t_stk, "bitwise": bitwise,
         "separate_rate": statistics.mean(train_rate(wd) for wd in sep),
         "stacked_rate": sum(train_rate(wd) for wd in stk)}
  for wd in sep + stk:
    shutil.rmtree(wd, ignore_errors=True)
  return out


def part_runs(args) -> None:
  for case in args.cases.split(","):
    overrides = case_overrides(case, args.main_epochs)
    rounds = []
    for r in range(args.warmup + args.rounds):
      with tempfile.TemporaryDirectory(prefix="stacked_bench_") as root:
        x = runs_round(case, overrides, args.k, root, r % 2 == 1, args.program)
      if r >= args.warmup:
        rounds.append(x)
      label = "warm-up" if r < args.warmup else "round"
      print(f"{case} {label} {r + 1}: {args.k} separate {x['separate_s']:.1f} s, stacked "
            f"{x['stacked_s']:.1f} s ({x['separate_s'] / x['stacked_s']:.2f}x); training "
            f"images/s {x['separate_rate']:,.0f} alone, {x['stacked_rate']:,.0f} for the group; "
            f"params_sha256 equal: {x['bitwise']}", flush=True)
    med = {key: statistics.median(x[key] for x in rounds)
           for key in ("separate_s", "stacked_s", "separate_rate", "stacked_rate")}
    ratios = [x["separate_s"] / x["stacked_s"] for x in rounds]
    print(f"{case}: k={args.k}, --program={args.program}, median of {args.rounds}: separate "
          f"{med['separate_s']:.1f} s, stacked {med['stacked_s']:.1f} s; wall-time speed-up "
          f"{statistics.median(ratios):.2f}x (rounds {min(ratios):.2f} to {max(ratios):.2f}); "
          f"training images/s {med['stacked_rate'] / med['separate_rate']:.2f}x; bitwise in "
          f"every round: {all(x['bitwise'] for x in rounds)}", flush=True)


def part_step(args) -> None:
  import jax
  import jax.numpy as jnp
  import numpy as np
  from absl import flags
  from ml_collections import config_flags

  from cnn_jax import checkpoint, config, parallel, steps as steps_lib
  path = os.path.join(REPO, "configs", "simple_cnn.py")
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file("config", path, flag_values=fv)
  fv(["bench", f"--config={path}"])
  k, batch = args.k, 128
  rng = np.random.default_rng(0)
  for width in (float(w) for w in args.widths.split(",")):
    cfgs = []
    for seed in range(k):
      cfg = fv.config.copy_and_resolve_references()
      cfg.model.width, cfg.seed, cfg.train.batch_size = width, seed, batch
      cfgs.append(config.validate(cfg))
    mesh = parallel.make_mesh(cfgs[0].mesh)
    with jax.set_mesh(mesh):
      built = [steps_lib.build_steps(c, mesh, 10, 422, 5064) for c in cfgs]
      batches = [parallel.global_batch(
          {"image": rng.standard_normal((batch, 28, 28, 1)).astype(np.float32),
           "label": rng.integers(0, 10, batch).astype(np.int32)}, built[0].batch_sharding)
          for _ in range(k)]
      fns = tuple(b.train_fn for b in built)
      tuple_step = jax.jit(lambda ss, bs: tuple(f(s, b) for f, s, b in zip(fns, ss, bs)),
                           donate_argnums=0)

      def in_sequence(ss, bs):  # each step after the one before: no interleaving
        out = []
        for f, s, b in zip(fns, ss, bs):
          if out:
            out[-1], s, b = jax.lax.optimization_barrier((out[-1], s, b))
          out.append(f(s, b))
        return tuple(out)
      sequence_step = jax.jit(in_sequence, donate_argnums=0)
      vmap_step = jax.jit(jax.vmap(built[0].train_fn), donate_argnums=0)
      stacked_batch = jax.tree.map(lambda *x: jnp.stack(x), *batches)
      fresh = lambda: [jax.tree.map(jnp.copy, b.state) for b in built]  # noqa: E731
      held = {"separate": fresh(), "tuple": tuple(fresh()), "sequence": tuple(fresh()),
              "vmap": jax.tree.map(lambda *x: jnp.stack(x), *fresh())}

      def one(name):
        s = held[name]
        if name == "separate":
          s = [b.train_step(x, y) for b, x, y in zip(built, s, batches)]
        elif name == "tuple":
          s = tuple_step(s, tuple(batches))
        elif name == "sequence":
          s = sequence_step(s, tuple(batches))
        else:
          s = vmap_step(s, stacked_batch)
        held[name] = s
        jax.block_until_ready(s)

      names = ("separate", "tuple", "sequence", "vmap")
      for name in names:  # compile and warm up
        for _ in range(3):
          one(name)
      times = {n: [] for n in names}
      for _ in range(args.rounds):
        for name in names:
          begun = time.perf_counter()
          for _ in range(args.steps):
            one(name)
          times[name].append((time.perf_counter() - begun) / args.steps)
      sep_params = [checkpoint.fingerprint(s.params) for s in held["separate"]]
      same = {"tuple": [checkpoint.fingerprint(s.params) for s in held["tuple"]] == sep_params,
              "sequence": [checkpoint.fingerprint(s.params) for s in held["sequence"]]
              == sep_params,
              "vmap": [checkpoint.fingerprint(jax.tree.map(lambda x, i=i: x[i],
                                                           held["vmap"].params))
                       for i in range(k)] == sep_params}
      vdiff = max(float(jnp.max(jnp.abs(a[i] - b))) for i in range(k) for a, b in zip(
          jax.tree.leaves(held["vmap"].params), jax.tree.leaves(held["separate"][i].params)))
      med = {n: statistics.median(t) for n, t in times.items()}
      print(f"width {width}, k={k}, batch {batch}: {k} separate steps "
            f"{med['separate'] * 1e3:.2f} ms ({k * batch / med['separate']:,.0f} images/s); one "
            f"program over the tuple {med['tuple'] * 1e3:.2f} ms "
            f"({med['separate'] / med['tuple']:.2f}x, bitwise {same['tuple']}); the same with "
            f"each step after the one before {med['sequence'] * 1e3:.2f} ms "
            f"({med['separate'] / med['sequence']:.2f}x, bitwise {same['sequence']}); vmap "
            f"{med['vmap'] * 1e3:.2f} ms ({med['separate'] / med['vmap']:.2f}x, bitwise "
            f"{same['vmap']}, largest parameter difference {vdiff:.2g}); median of "
            f"{args.rounds} rounds of {args.steps} steps", flush=True)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--part", choices=("runs", "step"), default="runs")
  parser.add_argument("--cases", default="width_0.125,width_1,main")
  parser.add_argument("--widths", default="0.125,1")
  parser.add_argument("--k", type=int, default=3)
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--warmup", type=int, default=1, help="runs: rounds not counted (the "
                      "first compiles the group's program, unless the compilation cache has it)")
  parser.add_argument("--steps", type=int, default=30, help="step: steps per timed round")
  parser.add_argument("--main_epochs", type=float, default=1.0)
  parser.add_argument("--program", default="each", help="runs: the group's program, "
                      "cnn_jax.stacked.PROGRAMS")
  args = parser.parse_args()
  if args.part == "runs":
    part_runs(args)
  else:
    part_step(args)


if __name__ == "__main__":
  sys.path.insert(0, REPO)
  from cnn_jax import startup
  startup.configure()  # as run.py: huge pages, XLA's options, the compilation cache
  main()
