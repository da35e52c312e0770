"""The train step of two checkouts of cnn_jax (before and after a change), timed in
alternating rounds, one model at a time.

Separate runs minutes apart cannot resolve a 5% change on this machine, whose speed drifts by
10% and more. Here each checkout's step is compiled once in its own worker process (its own
code, on sys.path first), and the two workers take turns: one round is `--steps` steps of
one, then of the other. The median of each and their ratio are printed, with the range of the
round-by-round ratios. Both workers start themselves again with glibc's huge-page tunable, as
`run.py` does, when their checkout has cnn_jax/huge_pages.py.

  .venv/bin/python benchmarks/before_after.py --before=/tmp/base [--after=.] [--rounds=7] \\
      [--cases=simple_cnn,lenet5,alexnet_torchvision,alexnet_paper,vgg_A]

A checkout is a directory holding cnn_jax/ (e.g. `git archive COMMIT | tar -x -C DIR`).
The cases are benchmarks/peers.py's: the same configs and batches.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# case: (config, batch, steps per round)
CASES = {"simple_cnn": ("configs/simple_cnn.py", 128, 60),
         "lenet5": ("configs/lenet5.py", 128, 100),
         "alexnet_torchvision": ("configs/alexnet.py:torchvision", 32, 3),
         "alexnet_paper": ("configs/alexnet.py:paper", 32, 3),
         "vgg_A": ("configs/vgg.py:A", 8, 2)}


def worker(repo: str, config_path: str, batch_size: int) -> None:
  """Compiles the checkout's train step, prints 'ready', then times `N` steps for each line N
  read from stdin and prints the milliseconds per step."""
  sys.path.insert(0, repo)
  try:  # the process set up as that checkout's run.py sets it
    from cnn_jax import startup
    startup.configure()
  except ImportError:  # before cnn_jax.startup: huge pages by hand, XLA options on import
    try:
      from cnn_jax import huge_pages
      huge_pages.reexec()
    except ImportError:
      pass
  import jax
  from absl import flags
  from ml_collections import config_flags
  from cnn_jax import bench, config, parallel, train
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file("config", os.path.join(repo, config_path), flag_values=fv)
  fv(["worker", f"--config={os.path.join(repo, config_path)}"])
  cfg = fv.config
  cfg.train.batch_size = batch_size
  cfg = config.validate(cfg)
  mesh = parallel.make_mesh(cfg.mesh)
  with jax.set_mesh(mesh):
    b = train.build_steps(cfg, mesh, cfg.model.num_classes, 1000, 1_000_000)
    batches = bench.synthetic_batches(cfg, b.batch_sharding, batch_size)
    step = b.train_step.lower(b.state, batches[0]).compile()
  state = b.state
  print("ready", flush=True)
  for line in sys.stdin:
    steps = int(line)
    state = step(state, batches[0])  # warm
    jax.block_until_ready(state)
    start = time.perf_counter()
    for i in range(steps):
      state = step(state, batches[i % len(batches)])
    jax.block_until_ready(state)
    print(f"{(time.perf_counter() - start) / steps * 1e3:.4f}", flush=True)


def start(repo: str, case: str):
  config_path, batch, _ = CASES[case]
  p = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker", f"--repo={repo}",
                        f"--config={config_path}", f"--batch_size={batch}"],
                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=repo)
  line = p.stdout.readline()
  if line.strip() != "ready":
    raise RuntimeError(f"the worker for {case} in {repo} did not start")
  return p


def compare(case: str, checkouts: dict, rounds: int) -> dict:
  steps = CASES[case][2]
  workers = {name: start(repo, case) for name, repo in checkouts.items()}
  times = {name: [] for name in workers}
  try:
    for _ in range(rounds):
      for name, p in workers.items():
        p.stdin.write(f"{steps}\n")
        p.stdin.flush()
        times[name].append(float(p.stdout.readline()))
  finally:
    for p in workers.values():
      p.stdin.close()
      p.wait()
  med = {name: statistics.median(t) for name, t in times.items()}
  per_round = [a / b for a, b in zip(times["after"], times["before"])]
  for name, t in times.items():
    print(f"{case} {name:6s}: median {med[name]:9.2f} ms per step "
          f"(rounds: {', '.join(f'{x:.1f}' for x in t)})")
  print(f"{case} batch {CASES[case][1]}: after / before = {med['after'] / med['before']:.3f} "
        f"(round by round {min(per_round):.3f} to {max(per_round):.3f})", flush=True)
  return med


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--before", help="the checkout timed as 'before'")
  p.add_argument("--after", default=REPO, help="the checkout timed as 'after' (default: this)")
  p.add_argument("--rounds", type=int, default=7)
  p.add_argument("--cases", default=",".join(CASES))
  p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
  p.add_argument("--repo", help=argparse.SUPPRESS)
  p.add_argument("--config", help=argparse.SUPPRESS)
  p.add_argument("--batch_size", type=int, help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  if args.worker:
    worker(args.repo, args.config, args.batch_size)
    return
  if not args.before:
    p.error("--before is required")
  checkouts = {"before": os.path.abspath(args.before), "after": os.path.abspath(args.after)}
  for case in args.cases.split(","):
    compare(case, checkouts, args.rounds)


if __name__ == "__main__":
  main()
