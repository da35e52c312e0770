"""The forward pass and gradients of 3x3 stride-1 convolutions through F(2x2, 3x3)
(models/winograd.py) against XLA's, shape by shape: the table behind winograd.applies.

  .venv/bin/python benchmarks/winograd.py [--rounds=5] [--shapes=vgg,alexnet,small]

For each convolution of the models here (VGG A at batch 8, torchvision's AlexNet at batch
32, the small CNN at batch 128, 'SAME' padding) it times, in alternating rounds in one
process, the forward pass, the input gradient and the kernel gradient, XLA's direct
convolution against F(2x2, 3x3) (winograd.conv3x3 and winograd.input_grad; for the kernel
gradient autodiff's of conv3x3, which winograd.conv does not use), and prints the medians in
ms, their ratios (F(2x2, 3x3) / XLA: below 1 is faster) and whether `winograd.applies`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import jax  # noqa: E402

from cnn_jax.models import winograd  # noqa: E402

# (model, batch, height = width, in maps, out maps): the 3x3 stride-1 convolutions
SHAPES = {
    "vgg": [("VGG A", 8, 224, 3, 64), ("VGG A", 8, 112, 64, 128), ("VGG A", 8, 56, 128, 256),
            ("VGG A", 8, 56, 256, 256), ("VGG A", 8, 28, 256, 512),
            ("VGG A", 8, 28, 512, 512), ("VGG A", 8, 14, 512, 512),
            ("VGG B", 8, 224, 64, 64)],
    "alexnet": [("AlexNet tv", 32, 13, 192, 384), ("AlexNet tv", 32, 13, 384, 256),
                ("AlexNet tv", 32, 13, 256, 256), ("AlexNet", 32, 13, 128, 192),
                ("AlexNet", 32, 13, 192, 128)],
    "small": [("small CNN", 128, 14, 32, 64), ("small CNN w/4", 128, 14, 8, 16),
              ("small CNN w/2", 128, 14, 16, 32)],
}
PAD = ((1, 1), (1, 1))


def direct(x, k):
  return winograd.direct(x, k, PAD)


def f23(x, k):
  return winograd.conv3x3(x, k, PAD)


def pieces(conv, input_grad):
  """{name: jitted function of (x, k, dy)}: the forward pass, the input gradient
  (`input_grad`, or autodiff's of `conv` where None) and the kernel gradient alone."""
  def forward(x, k, dy):
    return conv(x, k)

  def dx(x, k, dy):
    if input_grad is not None:
      return input_grad(dy, k, PAD)
    return jax.vjp(lambda a: conv(a, k), x)[1](dy)[0]

  def dk(x, k, dy):
    return jax.vjp(lambda b: conv(x, b), k)[1](dy)[0]
  return {"forward": jax.jit(forward), "dx": jax.jit(dx), "dk": jax.jit(dk)}


def seconds(fn, args) -> float:
  start = time.perf_counter()
  jax.block_until_ready(fn(*args))
  return time.perf_counter() - start


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--rounds", type=int, default=5)
  p.add_argument("--shapes", default="vgg,alexnet,small",
                 help=f"comma-separated groups from {sorted(SHAPES)}")
  args = p.parse_args(argv)
  print(f"ms, median of {args.rounds} alternating rounds; ratio F(2x2,3x3) / XLA")
  print(f"{'model':>14} {'shape':>22} {'applies':>7} | {'forward':>19} | {'dx':>19} | "
        f"{'dk':>19}")
  for group in args.shapes.split(","):
    for name, n, s, ci, co in SHAPES[group]:
      keys = jax.random.split(jax.random.key(0), 3)
      x = jax.random.normal(keys[0], (n, s, s, ci))
      k = jax.random.normal(keys[1], (3, 3, ci, co)) / (3 * ci ** 0.5)
      dy = jax.random.normal(keys[2], (n, s, s, co))
      routes = [pieces(direct, None), pieces(f23, winograd.input_grad)]
      cells = []
      for piece in ("forward", "dx", "dk"):
        fns = [r[piece] for r in routes]
        for fn in fns:
          jax.block_until_ready(fn(x, k, dy))
        times = [[], []]
        for _ in range(args.rounds):
          for i, fn in enumerate(fns):
            times[i].append(seconds(fn, (x, k, dy)))
        a, b = (statistics.median(t) * 1e3 for t in times)
        cells.append(f"{a:7.1f} {b:7.1f} {b / a:4.2f}")
      use = str(winograd.applies(x.shape, k.shape, (1, 1), 1))
      print(f"{name:>14} {f'{n}x{s}x{s}x{ci}->{co}':>22} {use:>7} | " + " | ".join(cells),
            flush=True)


if __name__ == "__main__":
  from cnn_jax import startup
  startup.configure()  # huge pages and XLA's options, as run.py sets them
  main()
