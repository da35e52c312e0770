"""Training throughput of cnn_jax beside PyTorch (CPU, channels_last) and Keras 3 (TensorFlow).

The same network (layers, parameter count, input size, batch, optimiser) is trained in each
framework on synthetic batches held in memory; steady-state training images/s (forward,
backward, update; compile and warm-up steps excluded) are compared. Each measurement runs in
its own process, the frameworks alternating (cnn_jax, torch, keras, cnn_jax, ...) for
`--repeats` rounds; the median per framework is reported.

  .venv/bin/python benchmarks/peers.py [--cases=simple_cnn,lenet5] [--repeats=2] \\
      [--seconds=10] [--json_out=PATH] [--params_only]

Time to accuracy of the main job against Keras: benchmarks/time_to_accuracy.py.

cnn_jax is timed by `run.py bench --json` (its `train_images_per_sec`); the parameter counts
of the torch and Keras models are asserted equal to `run.py summary --json`'s.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import itertools
import json
import math
import os
import re
import statistics
import subprocess
import sys
import time
from functools import partial

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FRAMEWORKS = ("cnn_jax", "torch", "keras")
# Distinct synthetic batches taken in turn (as cnn_jax's bench does): one batch repeated is
# memorised within tens of steps, and its vanishing gradients (likely denormal) ran LeNet-5
# 22-41% slower in each framework: that, not the network, would be measured.
BATCHES = 16
INSTALL = {"torch": "pip install torch==2.13.0",
           "keras": "pip install tensorflow-cpu==2.21.0 (Keras 3 comes with it)"}

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


# ---------------------------------------------------------------------------------------------
# PyTorch.

def torch_model(case: Case):
  """The case as a torch nn.Sequential (NCHW logical layout), built layer by layer on a dummy
  input so every layer knows its input size."""
  import torch
  from torch import nn
  import torch.nn.functional as F

  class ScaledTanh(nn.Module):
    def forward(self, x):
      return 1.7159 * torch.tanh(x * (2.0 / 3.0))

  class GroupLRN(nn.Module):
    """cnn_jax's LRN (alpha not divided by the size; within each of `groups` channel groups).
    torch divides alpha by the size, so it is given 5 x 1e-4."""
    def __init__(self, groups):
      super().__init__()
      self.groups, self.lrn = groups, nn.LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2.0)

    def forward(self, x):
      return torch.cat([self.lrn(c) for c in x.chunk(self.groups, 1)], 1)

  class Subsampling(nn.Module):
    def __init__(self, maps):
      super().__init__()
      self.coefficient = nn.Parameter(torch.full((maps,), 0.25))
      self.bias = nn.Parameter(torch.zeros(maps))

    def forward(self, x):  # 2x2 sums, times a coefficient, plus a bias, per map
      c = self.coefficient.view(1, -1, 1, 1)
      return F.avg_pool2d(x, 2) * 4.0 * c + self.bias.view(1, -1, 1, 1)

  class PartialConv(nn.Module):
    def __init__(self, in_maps, table, kernel):
      super().__init__()
      s = selection(table, in_maps)
      self.register_buffer("select", torch.from_numpy(s), persistent=False)
      self.kernel = nn.Parameter(0.05 * torch.randn(s.shape[0], kernel, kernel))
      self.bias = nn.Parameter(torch.zeros(len(table)))

    def forward(self, x):
      dense = torch.einsum("chw,cio->oihw", self.kernel, self.select)
      return F.conv2d(x, dense, self.bias)

  class RBF(nn.Module):
    def __init__(self, in_features, units):
      super().__init__()
      codes = torch.tensor(rbf_codes(in_features, units), dtype=torch.float32)
      self.register_buffer("centres", codes)

    def forward(self, x):
      c = self.centres
      return -(x.pow(2).sum(-1, keepdim=True) - 2 * x @ c + c.pow(2).sum(0))

  def make(layer, n_in: int):
    """The module for `layer`, whose input has `n_in` channels or features."""
    kind, *a = layer
    if kind == "conv":
      features, kernel, stride, padding, groups = a
      padding = 0 if padding == "valid" else padding
      return nn.Conv2d(n_in, features, kernel, stride, padding, groups=groups)
    if kind == "act":
      return nn.ReLU() if a[0] == "relu" else ScaledTanh()
    return {"pool": nn.MaxPool2d, "lrn": GroupLRN, "dropout": nn.Dropout, "flatten": nn.Flatten,
            "dense": partial(nn.Linear, n_in), "subsample": partial(Subsampling, n_in),
            "partial_conv": partial(PartialConv, n_in), "rbf": partial(RBF, n_in)}[kind](*a)

  h, w, c = case.input_shape
  x, layers = torch.zeros(1, c, h, w), []
  with torch.no_grad():
    for layer in case.layers:
      layers.append(make(layer, x.shape[1]))
      x = layers[-1](x)
  return nn.Sequential(*layers)


def torch_worker(case: Case, seconds: float, min_steps: int, params_only: bool) -> dict:
  import torch
  import torch.nn.functional as F
  torch.set_num_threads(os.cpu_count())
  torch.manual_seed(0)
  model = torch_model(case).to(memory_format=torch.channels_last).train()
  count = sum(p.numel() for p in model.parameters())
  result = {"params": count,  # constants: fixed tensors in the state (LeNet-5's RBF codes)
            "constants": sum(v.numel() for v in model.state_dict().values()) - count,
            "version": torch.__version__, "threads": torch.get_num_threads()}
  if params_only:
    return result
  if case.optimiser == "adam":
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-8)
  else:  # weight decay on the kernels only, as cnn_jax's weight_decay_params='kernel$'
    params = list(model.parameters())
    groups = [{"params": [p for p in params if p.dim() > 1], "weight_decay": 5e-4},
              {"params": [p for p in params if p.dim() <= 1], "weight_decay": 0.0}]
    opt = torch.optim.SGD(groups, lr=0.01, momentum=0.9)
  h, w, c = case.input_shape
  xs = [torch.randn(case.batch, c, h, w).contiguous(memory_format=torch.channels_last)
        for _ in range(BATCHES)]
  ys = [torch.randint(0, case.num_classes, (case.batch,)) for _ in range(BATCHES)]
  turn = itertools.count()

  def step():
    i = next(turn) % BATCHES
    opt.zero_grad(set_to_none=True)
    F.cross_entropy(model(xs[i]), ys[i]).backward()
    opt.step()
  return {**result, **time_steps(step, case.batch, seconds, min_steps)}


# ---------------------------------------------------------------------------------------------
# Keras 3 on TensorFlow.

def keras_model(case: Case, init: str = "glorot_uniform"):
  """The case as a keras.Sequential (NHWC). `init`: the conv/hidden kernel initialiser."""
  os.environ.setdefault("KERAS_BACKEND", "tensorflow")
  import keras
  import tensorflow as tf
  from keras import layers as K, ops

  class Subsampling(K.Layer):
    def build(self, shape):
      quarter = keras.initializers.Constant(0.25)
      self.coefficient = self.add_weight((shape[-1],), initializer=quarter)
      self.bias = self.add_weight((shape[-1],), initializer="zeros")

    def call(self, x):
      return ops.average_pool(x, 2, 2, "valid") * 4.0 * self.coefficient + self.bias

  class PartialConv(K.Layer):
    def __init__(self, table, kernel, **kw):
      super().__init__(**kw)
      self.table, self.size = table, kernel

    def build(self, shape):
      self.select = ops.convert_to_tensor(selection(self.table, shape[-1]))
      k = self.size
      self.kernel = self.add_weight((k, k, self.select.shape[0]), initializer="glorot_uniform")
      self.bias = self.add_weight((len(self.table),), initializer="zeros")

    def call(self, x):
      dense = ops.einsum("hwc,cio->hwio", self.kernel, self.select)
      return ops.conv(x, dense, padding="valid") + self.bias

  class RBF(K.Layer):
    def __init__(self, units, **kw):
      super().__init__(**kw)
      self.units = units

    def build(self, shape):
      codes = rbf_codes(shape[-1], self.units)
      self.centres = self.add_weight(codes.shape, trainable=False,
                                     initializer=keras.initializers.Constant(codes))

    def call(self, x):
      c = self.centres
      return -(ops.sum(x * x, -1, keepdims=True) - 2 * x @ c + ops.sum(c * c, 0))

  def lrn(groups):  # cnn_jax's LRN; TF's alpha is, like cnn_jax's, not divided by the size
    return K.Lambda(lambda x: tf.concat([tf.nn.local_response_normalization(
        t, depth_radius=2, bias=2.0, alpha=1e-4, beta=0.75) for t in tf.split(x, groups, -1)],
        -1))

  def scaled_tanh(x):
    return 1.7159 * ops.tanh(x * (2.0 / 3.0))

  def make(layer) -> list:
    """The Keras layers for `layer` (an explicitly padded convolution takes two)."""
    kind, *a = layer
    if kind == "conv":
      features, kernel, stride, padding, groups = a
      pad = []
      if isinstance(padding, int) and stride == 1 and 2 * padding == kernel - 1:
        padding = "same"
      elif isinstance(padding, int):
        pad, padding = [K.ZeroPadding2D(padding)], "valid"
      return pad + [K.Conv2D(features, kernel, stride, padding, groups=groups,
                             kernel_initializer=init)]
    if kind == "act":
      return [K.Activation("relu" if a[0] == "relu" else scaled_tanh)]
    return [{"pool": K.MaxPooling2D, "lrn": lrn, "dropout": K.Dropout, "flatten": K.Flatten,
             "dense": partial(K.Dense, kernel_initializer=init), "subsample": Subsampling,
             "partial_conv": PartialConv, "rbf": RBF}[kind](*a)]

  layers = [l for layer in case.layers for l in make(layer)]
  if case.layers[-1][0] == "dense":  # cnn_jax's output layers use LeCun normal
    layers[-1] = K.Dense(case.layers[-1][1], kernel_initializer="lecun_normal")
  return keras.Sequential([keras.Input(case.input_shape), *layers])


def keras_optimiser(case: Case, lr=1e-3):
  import keras
  if case.optimiser == "adam":
    return keras.optimizers.Adam(lr, epsilon=1e-8)  # optax's epsilon (Keras's default 1e-7)
  # Keras's weight decay is decoupled (w -= lr * wd * w), cnn_jax's is L2 added to the
  # gradient: the same cost per step. Biases are excluded in both.
  opt = keras.optimizers.SGD(0.01, momentum=0.9, weight_decay=5e-4)
  opt.exclude_from_weight_decay(var_names=["bias"])
  return opt


def keras_worker(case: Case, seconds: float, min_steps: int, params_only: bool,
                 jit: str = "auto") -> dict:
  """Times train_on_batch with jit_compile off and on (or as `jit` says); keeps the faster."""
  os.environ.setdefault("KERAS_BACKEND", "tensorflow")
  import keras
  import tensorflow as tf
  keras.utils.set_random_seed(0)
  model = keras_model(case)
  result = {"params": sum(math.prod(w.shape) for w in model.trainable_weights),
            "constants": sum(math.prod(w.shape) for w in model.non_trainable_weights),
            "version": f"keras {keras.__version__}, tensorflow {tf.__version__}"}
  if params_only:
    return result
  rng = np.random.default_rng(0)
  xs = [tf.constant(rng.standard_normal((case.batch, *case.input_shape), dtype=np.float32))
        for _ in range(BATCHES)]
  ys = [tf.constant(rng.integers(0, case.num_classes, case.batch), tf.int32)
        for _ in range(BATCHES)]
  turn = itertools.count()

  def step():
    i = next(turn) % BATCHES
    return model.train_on_batch(xs[i], ys[i])
  for flag in {"auto": (False, True), "on": (True,), "off": (False,)}[jit]:
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    model = keras_model(case)
    model.compile(keras_optimiser(case), keras.losses.SparseCategoricalCrossentropy(
        from_logits=True), jit_compile=flag)
    timing = time_steps(step, case.batch, seconds, min_steps)
    result[f"images_per_sec[jit_compile={flag}]"] = timing["images_per_sec"]
    if timing["images_per_sec"] > result.get("images_per_sec", 0.0):
      result.update(timing, jit_compile=flag)
  return result


# ---------------------------------------------------------------------------------------------
# The driver: one subprocess per measurement.

def last_error_line(text: str) -> str:
  """The line that says what went wrong: the last one that is not a log line."""
  lines = [l.strip() for l in text.splitlines() if l.strip()
           and not re.match(r"^([IWE]\d{4} |WARNING: All log messages)", l.strip())]
  return lines[-1] if lines else "no output"


def run_json(cmd: list[str], key: str, timeout: float) -> dict:
  """Runs `cmd`; its last stdout line that is a JSON object with `key`, or {'error': ...}."""
  try:
    p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)
  except subprocess.TimeoutExpired:
    return {"error": f"timed out after {timeout:.0f} s"}
  for line in reversed(p.stdout.splitlines()):
    if line.startswith("{"):
      try:
        out = json.loads(line)
      except json.JSONDecodeError:
        continue
      if key in out or "error" in out:
        return out
  return {"error": f"exit {p.returncode}: {last_error_line(p.stderr + p.stdout)}"}


def cnn_jax_params(case: Case, timeout: float) -> dict:
  out = run_json([sys.executable, "run.py", "summary", f"--config={case.config}", "--json"],
                 "params", timeout)
  return {"params": out.get("params"), "constants": out.get("constants", 0), **(
      {"error": out["error"]} if "error" in out else {})}


def cnn_jax_bench(case: Case, seconds: float, timeout: float) -> dict:
  """`run.py bench` for the case; without --input/--seconds should its flags have changed."""
  base = [sys.executable, "run.py", "bench", f"--config={case.config}",
          f"--config.train.batch_size={case.batch}", "--json"]
  out = run_json(base + ["--input=none", f"--seconds={seconds}"], "train_images_per_sec",
                 timeout)
  if "unknown command line flag" in out.get("error", "").lower():
    out = run_json(base, "train_images_per_sec", timeout)
  if "train_images_per_sec" in out:
    out["images_per_sec"] = out["train_images_per_sec"]
  return out


def peer(framework: str, name: str, args) -> dict:
  cmd = [sys.executable, os.path.abspath(__file__), f"--worker={framework}", f"--case={name}",
         f"--seconds={args.seconds}", f"--min_steps={args.min_steps}",
         f"--keras_jit={args.keras_jit}"] + (["--params_only"] if args.params_only else [])
  return run_json(cmd, "params", args.timeout)


def check_params(name: str, framework: str, got: dict, want: dict) -> None:
  """Asserts a peer's trainable (and fixed) parameter counts equal cnn_jax's."""
  if "error" in got or want.get("params") is None:
    return
  tol = CASES[name].param_tolerance
  assert abs(got["params"] - want["params"]) <= tol and got["constants"] == want["constants"], (
      f"{name}: {framework} has {got['params']:,} trainable + {got['constants']:,} fixed "
      f"parameters, cnn_jax {want['params']:,} + {want['constants']:,} (tolerance {tol})")


def available(framework: str) -> str | None:
  """None, or why the framework cannot be measured."""
  module = {"torch": "torch", "keras": "keras", "cnn_jax": "jax"}[framework]
  if framework == "keras" and importlib.util.find_spec("tensorflow") is None:
    module = "tensorflow"
  if importlib.util.find_spec(module) is None:
    return f"{module} is not installed: {INSTALL.get(framework, 'pip install -e .')}"
  return None


def measure(names: list[str], args) -> dict:
  results = {}
  missing = {fw: available(fw) for fw in FRAMEWORKS}
  for fw, why in missing.items():
    if why:
      print(f"{fw}: {why}", file=sys.stderr)
  for name in names:
    case, record = CASES[name], {fw: {"runs": []} for fw in FRAMEWORKS}
    record["cnn_jax"].update(cnn_jax_params(CASES[name], args.timeout))
    for round_ in range(1 if args.params_only else args.repeats):
      for fw in FRAMEWORKS:
        if missing[fw]:
          record[fw]["error"] = missing[fw]
          continue
        if fw == "cnn_jax":
          if args.params_only:
            continue
          out = cnn_jax_bench(case, args.seconds, args.timeout)
        else:
          out = peer(fw, name, args)
          check_params(name, fw, out, record["cnn_jax"])
          record[fw].update({k: out[k] for k in ("params", "constants", "version") if k in out})
        record[fw]["runs"].append(out)
        rate = out.get("images_per_sec")
        print(f"[{name} round {round_ + 1}] {fw}: "
              + (f"{rate:,.1f} images/s" if rate else out.get("error", "built")),
              file=sys.stderr, flush=True)
    for fw in FRAMEWORKS:
      rates = [r["images_per_sec"] for r in record[fw]["runs"] if "images_per_sec" in r]
      record[fw]["median"] = statistics.median(rates) if rates else None
      errors = [r["error"] for r in record[fw]["runs"] if "error" in r]
      if not rates and errors:
        record[fw]["error"] = errors[-1]
    jits = [r.get("jit_compile") for r in record["keras"]["runs"] if "jit_compile" in r]
    record["keras"]["jit_compile"] = max(set(jits), key=jits.count) if jits else None
    results[name] = record
  return results


def rate_cell(r: dict) -> str:
  if r.get("median"):
    return f"{r['median']:,.1f}"
  return f"n/a ({r['error'][:70]})" if r.get("error") else "n/a"


def throughput_table(results: dict) -> str:
  """Markdown: median training images/s per framework, and cnn_jax over the faster peer."""
  rows = ["| case | batch | cnn_jax img/s | PyTorch img/s | Keras img/s | "
          "cnn_jax / faster peer |", "|---|---:|---:|---:|---:|---:|"]
  for name, r in results.items():
    jax_rate = r["cnn_jax"].get("median")
    peers = [r[fw]["median"] for fw in ("torch", "keras") if r[fw].get("median")]
    ratio = f"{jax_rate / max(peers):.2f}" if jax_rate and peers else "n/a"
    keras = rate_cell(r["keras"])
    if r["keras"].get("median"):
      keras += f" (jit_compile={r['keras']['jit_compile']})"
    rows.append(f"| {name} | {CASES[name].batch} | {rate_cell(r['cnn_jax'])} | "
                f"{rate_cell(r['torch'])} | {keras} | {ratio} |")
  return "\n".join(rows)


def params_table(results: dict) -> str:
  """Markdown: trainable parameters per framework (fixed ones, LeNet-5's codes, noted)."""
  rows = ["| case | cnn_jax params | PyTorch params | Keras params | match |",
          "|---|---:|---:|---:|---|"]
  for name, r in results.items():
    counts = [r[fw].get("params") for fw in FRAMEWORKS]
    cells = " | ".join(f"{c:,}" if c is not None else "n/a" for c in counts)
    match = "exact" if None not in counts and len(set(counts)) == 1 else "not checked"
    fixed = r["cnn_jax"].get("constants")
    rows.append(f"| {name} | {cells} | {match}" + (f" (+{fixed:,} fixed in each)" if fixed
                                                  else "") + " |")
  return "\n".join(rows)


# ---------------------------------------------------------------------------------------------

def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--cases", default=",".join(CASES), help="comma-separated: " + ", ".join(CASES))
  p.add_argument("--repeats", type=int, default=3, help="rounds of jax, torch, keras (median)")
  p.add_argument("--seconds", type=float, default=10.0, help="timed seconds per measurement")
  p.add_argument("--min_steps", type=int, default=5, help="timed steps at least")
  p.add_argument("--keras_jit", choices=("auto", "on", "off"), default="auto",
                 help="Keras jit_compile: auto times both and keeps the faster")
  p.add_argument("--json_out", help="also write the results here")
  p.add_argument("--params_only", action="store_true",
                 help="only build the models and compare parameter counts")
  p.add_argument("--timeout", type=float, default=1800.0, help="seconds per subprocess")
  p.add_argument("--worker", choices=("torch", "keras"), help=argparse.SUPPRESS)
  p.add_argument("--case", help=argparse.SUPPRESS)
  return p.parse_args(argv)


def main(argv=None) -> None:
  args = parse_args(argv)
  if args.worker:  # one measurement, printed as one JSON line
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    case = CASES[args.case]
    work = (torch_worker(case, args.seconds, args.min_steps, args.params_only)
            if args.worker == "torch" else
            keras_worker(case, args.seconds, args.min_steps, args.params_only, args.keras_jit))
    print(json.dumps(work), flush=True)
    return
  names = [n.strip() for n in args.cases.split(",") if n.strip()]
  unknown = [n for n in names if n not in CASES]
  if unknown:
    sys.exit(f"unknown case(s) {unknown}; use some of {list(CASES)}")
  results = measure(names, args)
  if not args.params_only:
    print(throughput_table(results) + "\n")
  print(params_table(results))
  if args.json_out:
    with open(args.json_out, "w") as f:
      json.dump({"seconds": args.seconds, "repeats": args.repeats, "cpu_count": os.cpu_count(),
                 "results": results}, f, indent=1)


if __name__ == "__main__":
  main()
