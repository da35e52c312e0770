"""The networks benchmarks/peers.py times, as framework-neutral layer lists (each framework's
builder reads them: peer_torch.py, peer_keras.py), and the timing loop the peers share."""

from __future__ import annotations

import dataclasses
import time

import numpy as np

# Distinct synthetic batches taken in turn (as cnn_jax's bench does): one batch repeated is
# memorised within tens of steps, and its vanishing gradients (likely denormal) ran LeNet-5
# 22-41% slower in each framework: that, not the network, would be measured.
BATCHES = 16

# ---------------------------------------------------------------------------------------------
# The cases, as framework-neutral layer lists. A layer is a tuple (kind, *arguments):
#   ("conv", features, kernel, stride, padding: 'same'|'valid'|int, groups)
#   ("act", 'relu'|'scaled_tanh'), ("pool", window, stride) (max), ("lrn", groups),
#   ("flatten",), ("dense", units), ("dropout", rate),
#   LeNet-5's ("subsample",), ("partial_conv", table, kernel), ("rbf", units).


def conv(features, kernel, stride=1, padding="same", groups=1, act="relu"):
  return [("conv", features, kernel, stride, padding, groups), ("act", act)]


def head(hidden, classes, dropout=0.5):
  """Flatten, hidden FC layers each with ReLU then dropout (cnn_jax's order), output FC."""
  layers = [("flatten",)]
  for units in hidden:
    layers += [("dense", units), ("act", "relu"), ("dropout", dropout)]
  return layers + [("dense", classes)]


# LeNet-5 Table I (copied from cnn_jax/models/lenet.py so the peers need not import cnn_jax):
# the S2 maps each C3 map sees.
C3_TABLE = ((0, 1, 2), (1, 2, 3), (2, 3, 4), (3, 4, 5), (0, 4, 5), (0, 1, 5),
            (0, 1, 2, 3), (1, 2, 3, 4), (2, 3, 4, 5), (0, 3, 4, 5), (0, 1, 4, 5), (0, 1, 2, 5),
            (0, 1, 3, 4), (1, 2, 4, 5), (0, 2, 3, 5), (0, 1, 2, 3, 4, 5))
TANH = "scaled_tanh"
POOL2, POOL3 = [("pool", 2, 2)], [("pool", 3, 2)]

SIMPLE_CNN = (conv(32, 3) + POOL2 + conv(64, 3) + POOL2
              + [("flatten",), ("dense", 100), ("act", "relu"), ("dense", 10)])
# configs/lenet5.py's default variant, 'paper'. Its trainable subsampling, Table I's partial C3
# and the fixed-code RBF output are written out exactly in both peers (same parameters: 60,000
# trainable, 840 fixed), computed as cnn_jax computes them (C3 as one dense convolution whose
# kernel has zeros where Table I has no connection).
LENET5 = (conv(6, 5, padding="valid", act=TANH) + [("subsample",), ("act", TANH)]
          + [("partial_conv", C3_TABLE, 5), ("act", TANH), ("subsample",), ("act", TANH)]
          + conv(120, 5, padding="valid", act=TANH)
          + [("flatten",), ("dense", 84), ("act", TANH), ("rbf", 10)])
# torchvision's AlexNet (its AdaptiveAvgPool2d(6) is the identity at 224x224, so left out).
ALEXNET_TV = (conv(64, 11, 4, 2) + POOL3 + conv(192, 5, padding=2) + POOL3
              + conv(384, 3, padding=1) + conv(256, 3, padding=1) + conv(256, 3, padding=1)
              + POOL3 + head((4096, 4096), 1000))
ALEXNET_PAPER = (conv(96, 11, 4, "valid") + [("lrn", 2)] + POOL3
                 + conv(256, 5, padding=2, groups=2) + [("lrn", 2)] + POOL3
                 + conv(384, 3, padding=1) + conv(384, 3, padding=1, groups=2)
                 + conv(256, 3, padding=1, groups=2) + POOL3 + head((4096, 4096), 1000))
VGG_A = (conv(64, 3) + POOL2 + conv(128, 3) + POOL2 + conv(256, 3) * 2 + POOL2
         + conv(512, 3) * 2 + POOL2 + conv(512, 3) * 2 + POOL2 + head((4096, 4096), 1000))


@dataclasses.dataclass(frozen=True)
class Case:
  config: str                 # cnn_jax config (file[:variant])
  batch: int
  input_shape: tuple          # (H, W, C)
  layers: tuple
  optimiser: str              # 'adam': Adam 1e-3; 'sgd': momentum 0.9, lr 0.01, wd 5e-4
  param_tolerance: int = 0    # allowed |peer - cnn_jax| trainable parameters: all exact

  @property
  def num_classes(self) -> int:
    return self.layers[-1][1]  # the output layer's units ('dense' or 'rbf')


CASES = {
    "simple_cnn": Case("configs/simple_cnn.py", 128, (28, 28, 1), tuple(SIMPLE_CNN), "adam"),
    "lenet5": Case("configs/lenet5.py", 128, (32, 32, 1), tuple(LENET5), "adam"),
    "alexnet_torchvision": Case("configs/alexnet.py:torchvision", 32, (224, 224, 3),
                                tuple(ALEXNET_TV), "sgd"),
    "alexnet_paper": Case("configs/alexnet.py:paper", 32, (227, 227, 3), tuple(ALEXNET_PAPER),
                          "sgd"),
    "vgg_A": Case("configs/vgg.py:A", 8, (224, 224, 3), tuple(VGG_A), "sgd"),
}


def selection(table, in_maps: int) -> np.ndarray:
  """(connections, in, out) one-hot: connection c joins input map i to output map j."""
  pairs = [(i, j) for j, inputs in enumerate(table) for i in inputs]
  s = np.zeros((len(pairs), in_maps, len(table)), np.float32)
  for c, (i, j) in enumerate(pairs):
    s[c, i, j] = 1.0
  return s


def rbf_codes(in_features: int, units: int) -> np.ndarray:
  """LeNet-5's fixed +-1 output codes, drawn exactly as cnn_jax's RBF draws them."""
  return np.random.default_rng(1998).choice([-1.0, 1.0], size=(in_features, units))


def time_steps(step, batch: int, seconds: float, min_steps: int, warmup: int = 3,
               warmup_s: float = 1.0) -> dict:
  """Runs `step` (synchronous) >= `warmup` times and >= `warmup_s` (compile, allocation,
  thread pools), then times it for >= `seconds` and >= `min_steps`."""
  start = time.perf_counter()
  step()
  first_s, done = time.perf_counter() - start, 1
  while done < warmup or time.perf_counter() - start < warmup_s:
    step()
    done += 1
  steps, start = 0, time.perf_counter()
  while steps < min_steps or time.perf_counter() - start < seconds:
    step()
    steps += 1
  elapsed = time.perf_counter() - start
  return {"images_per_sec": batch * steps / elapsed, "step_ms": 1e3 * elapsed / steps,
          "timed_steps": steps, "first_step_s": first_s}
