"""The train step with one of the CPU route's rewrites (or a config switch) on and off,
timed in one process.

This machine's speed drifts by 10% and more between runs minutes apart, which hides a 5%
change when two runs are compared. Here both steps are compiled in the same process and timed
in alternating rounds, and the median of each is printed with their ratio, and the range of
the ratios round by round.

`--rewrite=none` compiles the same step twice (an A/A comparison): the method's own noise,
which a rewrite's ratio has to clear. On 2026-11-30, nine such comparisons of identical
compiled steps gave 0.902 to 1.025 (README, "Performance"); on 2026-12-02, with another
user's jobs on the machine, 0.726 to 1.324 (benchmarks/HISTORY.md).

  .venv/bin/python benchmarks/lowering_ab.py --config=configs/simple_cnn.py \\
      --rewrite=pool_first [--rounds=6] [--steps=20] [--batch_size=N] [--width=W] \\
      [--rewrites=all]

Rewrites (cnn_jax/models/plan.py REWRITES; on: the config's `model.rewrites`, off: the same
without NAME; both on the 'cpu' route, which `model.lowering` must resolve to):
  pool_first      conv -> ReLU -> max-pool computed pool-first
  shallow_conv    within those, a shallow stride-1 convolution computed inside its max-pool
  overlapping_pool  overlapping max-pool windows: reduce_window and the first-maximum
                  gradient by stride phase, pool-first after conv -> ReLU (off: the maximum
                  of the strided views and its autodiff, and no pool-first there)
  relu_in_reduction  within pool_first and shallow_conv, the bias and ReLU inside the
                  non-overlapping pooling reduction (off: the ReLU elementwise after it,
                  and for pool_first the bias too)
  whole_input_dot  a convolution whose kernel spans its whole input as a matrix product
  column_input_grad  a stride-1 convolution of a large kernel over few input maps (LeNet-5's
                  C3): its input gradient as the kernel times the output gradient, the
                  columns added back into place
  winograd        3x3 stride-1 convolutions over many maps through F(2x2, 3x3)
                  (models/winograd.py; off: XLA's convolution)
  none            nothing: the same step twice (A/A), the noise floor
Config switches (on: True, off: False):
  skip_nonfinite  train.skip_nonfinite: the step keeps the old state where one is not finite
Huge pages (on: transparent huge pages allowed, off: disallowed with prctl, for the same
compiled step; the script starts itself again with glibc's tunable, as run.py does):
  huge_pages      glibc.malloc.hugetlb=1 (cnn_jax/huge_pages.py)
XLA options (on: the step compiled with the option, off: without it), for example
  --rewrite=xla --xla_option=xla_cpu_experimental_ynn_fusion_type=LIBRARY_FUSION_TYPE_DOT,LIBRARY_FUSION_TYPE_REDUCE
(compile-time options, XLA's DebugOptions field names, enum values by their proto names).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import jax  # noqa: E402

from cnn_jax import bench, config, huge_pages, parallel, train  # noqa: E402
from cnn_jax.models import plan  # noqa: E402

REWRITES = plan.REWRITES
# config switches timed the same way: (section, key) set to True for 'on', False for 'off'
SWITCHES = {"skip_nonfinite": ("train", "skip_nonfinite")}


def load(path: str, batch_size: int | None):
  from absl import flags
  from ml_collections import config_flags
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file("config", path, flag_values=fv)
  fv(["lowering_ab", f"--config={path}"])
  cfg = fv.config
  if batch_size:
    cfg.train.batch_size = batch_size
  return config.validate(cfg)


def compiled_steps(cfg, rewrite: str, xla_options: dict | None = None) -> dict:
  """{'on': [step, state, batches], 'off': ...}, both compiled for the same batches; 'on'
  with `xla_options` where rewrite is 'xla'."""
  mesh = parallel.make_mesh(cfg.mesh)
  out = {}
  for variant in ("on", "off"):
    options = xla_options if variant == "on" else None
    with switched(cfg, rewrite, variant == "on"), jax.set_mesh(mesh):
      b = train.build_steps(cfg, mesh, cfg.model.num_classes, 1000, 1_000_000)
      batches = bench.synthetic_batches(cfg, b.batch_sharding, cfg.train.batch_size)
      compiled = b.train_step.lower(b.state, batches[0]).compile(compiler_options=options)
      out[variant] = [compiled, b.state, batches]
  return out


@contextlib.contextmanager
def switched(cfg, rewrite: str, on: bool):
  """The config with the rewrite in `model.rewrites` (on) or not (off), or the config switch
  set to `on`; restored afterwards."""
  if rewrite in ("none", "xla", "huge_pages"):  # no difference, or in the options, or at run time
    yield
    return
  if rewrite in SWITCHES:
    section, key = SWITCHES[rewrite]
    cfg[section][key] = on
    yield
    return
  if plan.resolve(cfg.model.lowering) != "cpu":
    raise ValueError(f"--rewrite={rewrite}: model.lowering={cfg.model.lowering!r} is not the "
                     "cpu route, which has the rewrites")
  original = cfg.model.rewrites
  names = set(plan.parse_rewrites(original))
  names = names | {rewrite} if on else names - {rewrite}
  cfg.model.rewrites = ",".join(sorted(names)) or "none"
  try:
    yield
  finally:
    cfg.model.rewrites = original


def allow_huge_pages(allow: bool) -> None:
  """Transparent huge pages for this process's later page faults, or not
  (prctl PR_SET_THP_DISABLE, Linux)."""
  import ctypes
  if ctypes.CDLL(None).prctl(41, 0 if allow else 1, 0, 0, 0) != 0:
    raise OSError("prctl(PR_SET_THP_DISABLE) failed")


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--config", required=True, help="a config file, with :arg if it takes one")
  p.add_argument("--rewrite", required=True,
                 choices=sorted({*REWRITES, *SWITCHES, "none", "xla", "huge_pages"}))
  p.add_argument("--xla_option", action="append", default=[],
                 help="with --rewrite=xla: NAME=VALUE, an XLA compile option for 'on'")
  p.add_argument("--rounds", type=int, default=6)
  p.add_argument("--steps", type=int, default=20, help="timed steps per variant per round")
  p.add_argument("--batch_size", type=int, help="default: the config's")
  p.add_argument("--width", type=float, help="model.width for both steps; default: the config's")
  p.add_argument("--rewrites", help="model.rewrites for both steps before NAME is added (on) "
                 "or taken out (off), e.g. 'pool_first' to time it without shallow_conv; "
                 "default: the config's")
  args = p.parse_args(argv)
  if (args.rewrite == "xla") != bool(args.xla_option):
    p.error("--xla_option goes with --rewrite=xla, and --rewrite=xla needs one")
  xla_options = dict(o.split("=", 1) for o in args.xla_option)
  cfg = load(args.config, args.batch_size)
  if args.rewrites is not None:
    cfg.model.rewrites = args.rewrites
  if args.width is not None:
    cfg.model.width = args.width
  try:
    config.validate(cfg)
  except config.ConfigError as e:
    p.error(str(e))
  steps = compiled_steps(cfg, args.rewrite, xla_options)
  times = {v: [] for v in steps}
  if args.rewrite == "huge_pages" and not huge_pages.active():
    p.error("huge_pages: the process did not start with glibc's tunable (see huge_pages.py)")
  for _ in range(args.rounds):
    for variant, entry in steps.items():
      if args.rewrite == "huge_pages":
        allow_huge_pages(variant == "on")
      step, state, batches = entry
      state = step(state, batches[0])  # warm
      jax.block_until_ready(state)
      start = time.perf_counter()
      for i in range(args.steps):
        state = step(state, batches[i % len(batches)])
      jax.block_until_ready(state)
      times[variant].append((time.perf_counter() - start) / args.steps * 1e3)
      entry[1] = state
  med = {v: statistics.median(t) for v, t in times.items()}
  for variant, t in times.items():
    print(f"{args.rewrite} {variant:3s}: median {med[variant]:8.2f} ms per step "
          f"(rounds: {', '.join(f'{x:.1f}' for x in t)})")
  per_round = [a / b for a, b in zip(times["on"], times["off"])]
  print(f"{cfg.model.name}:{cfg.model.variant} batch {cfg.train.batch_size}: on / off = "
        f"{med['on'] / med['off']:.3f} (round by round {min(per_round):.3f} to "
        f"{max(per_round):.3f})")


if __name__ == "__main__":
  from cnn_jax import startup
  startup.configure()  # huge pages and XLA's options, as run.py sets them
  main()
