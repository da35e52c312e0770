"""Where the time of the train step goes, with one of lowering_ab's rewrites on and off: a
jax.profiler trace of each, the host events summed by name.

A step ratio inside lowering_ab's A/A band says nothing either way; a trace says whether the
operations a rewrite is meant to remove (a recomputed activation inside a transposed copy, a
reduction written out and read back) took time without it. Fusion names come from each
compiled program, so the same name can be a different fusion in the other one: read the
lines with the largest differences next to the two programs' HLO.

  .venv/bin/python benchmarks/profile_ab.py --config=configs/vgg.py:A --batch_size=8 \\
      --rewrite=relu_in_reduction [--steps=3] [--top=25]
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import jax  # noqa: E402
from jax.profiler import ProfileData  # noqa: E402

from benchmarks import lowering_ab  # noqa: E402


def traced_ms(entry, steps: int) -> collections.Counter:
  """Milliseconds per step by host event name, over `steps` steps of entry [step, state,
  batches] (its state advanced)."""
  step, state, batches = entry
  state = step(state, batches[0])
  jax.block_until_ready(state)
  with tempfile.TemporaryDirectory() as d:
    with jax.profiler.trace(d):
      for i in range(steps):
        state = step(state, batches[i % len(batches)])
      jax.block_until_ready(state)
    entry[1] = state
    data = ProfileData.from_file(glob.glob(f"{d}/**/*.xplane.pb", recursive=True)[0])
    out = collections.Counter()
    for plane in data.planes:
      if "Host" in plane.name or "CPU" in plane.name:
        for line in plane.lines:
          for event in line.events:
            out[event.name] += event.duration_ns / 1e6 / steps
  return out


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--config", required=True)
  p.add_argument("--rewrite", required=True, choices=lowering_ab.REWRITES)
  p.add_argument("--batch_size", type=int)
  p.add_argument("--steps", type=int, default=3, help="traced steps per variant per round")
  p.add_argument("--top", type=int, default=25)
  args = p.parse_args(argv)
  cfg = lowering_ab.load(args.config, args.batch_size)
  steps = lowering_ab.compiled_steps(cfg, args.rewrite)
  totals = {"on": collections.Counter(), "off": collections.Counter()}
  for _ in range(2):  # on, off, on, off: the machine's drift falls on both
    for variant in ("on", "off"):
      for name, ms in traced_ms(steps[variant], args.steps).items():
        totals[variant][name] += ms / 2
  on, off = totals["on"], totals["off"]
  print(f"{cfg.model.name}:{cfg.model.variant} batch {cfg.train.batch_size} "
        f"--rewrite={args.rewrite}: ms per step by host event (on, off, on - off)")
  for name in sorted(set(on) | set(off), key=lambda n: -abs(on[n] - off[n]))[:args.top]:
    print(f"{on[name]:10.2f} {off[name]:10.2f} {on[name] - off[name]:+10.2f}  {name[:80]}")


if __name__ == "__main__":
  from cnn_jax import startup
  startup.configure()  # huge pages and XLA's options, as run.py sets them
  main()
