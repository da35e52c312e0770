"""conv -> 2x2 max-pool with the convolution inside the pooling (fusions.conv_max_pool_bias_relu)
against the convolution then pool-first (fusions.max_pool_bias_relu), over kernel shapes.

  .venv/bin/python benchmarks/conv_max_pool.py [--batch_size=64] [--size=28] [--repeats=5]

For each shape it prints the milliseconds of the forward pass and of the forward pass with
the kernel gradient, both routes, best of --repeats, and their ratio. The bound
fusions.SHALLOW_FAN_IN (inputs per output, kh * kw * in_features) comes from this table.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import cnn_jax  # noqa: E402,F401  (its XLA options, before the first computation)
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from cnn_jax.models import fusions, lowering  # noqa: E402

# (kernel size, in_features, out_features): 4 to 27 inputs per output
SHAPES = [(2, 1, 32), (3, 1, 8), (3, 1, 32), (3, 1, 64), (2, 3, 32), (4, 1, 32), (3, 2, 32),
          (2, 5, 32), (2, 6, 32), (5, 1, 16), (5, 1, 32), (3, 3, 32)]


def best_ms(fn, args, repeats: int, steps: int = 10) -> float:
  fn = jax.jit(fn)
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    for _ in range(steps):
      out = fn(*args)
    jax.block_until_ready(out)
    times.append((time.perf_counter() - start) / steps * 1e3)
  return min(times)


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--batch_size", type=int, default=64)
  p.add_argument("--size", type=int, default=28, help="input height and width")
  p.add_argument("--repeats", type=int, default=5)
  args = p.parse_args(argv)
  n, s = args.batch_size, args.size
  def same(k):  # 'SAME' padding for a stride-1 kernel k
    return ((((k - 1) // 2, k // 2),) * 2)

  routes = {
      "conv, then pool": lambda x, k, b: fusions.max_pool_bias_relu(
          lowering.conv2d(x, k, (1, 1), same(k.shape[0])), b, (2, 2), (2, 2)),
      "conv in pool": lambda x, k, b: fusions.conv_max_pool_bias_relu(
          x, k, b, same(k.shape[0]), (2, 2)),
  }
  print(f"batch {n}, {s}x{s} input, SAME padding, 2x2 pool; ms, best of {args.repeats}")
  print(f"{'kernel':>14} {'fan-in':>6} | {'forward':>17} {'ratio':>5} | "
        f"{'forward + dk':>17} {'ratio':>5}")
  for size, ci, co in SHAPES:
    keys = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(keys[0], (n, s, s, ci))
    k = jax.random.normal(keys[1], (size, size, ci, co)) * 0.3
    b = jnp.zeros((co,))
    dout = jax.random.normal(keys[2], (n, s // 2, s // 2, co))
    fwd = [best_ms(f, (x, k, b), args.repeats) for f in routes.values()]
    grad = [best_ms(lambda x, k, b, f=f: jax.grad(lambda k, b: jnp.vdot(f(x, k, b), dout),
                                                  (0, 1))(k, b), (x, k, b), args.repeats)
            for f in routes.values()]
    print(f"{f'{size}x{size}x{ci}->{co}':>14} {size * size * ci:>6} | "
          f"{fwd[0]:7.2f} -> {fwd[1]:7.2f} {fwd[1] / fwd[0]:5.2f} | "
          f"{grad[0]:7.2f} -> {grad[1]:7.2f} {grad[1] / grad[0]:5.2f}")


if __name__ == "__main__":
  from cnn_jax import startup
  startup.configure()  # huge pages and XLA's options, as run.py sets them
  main()
