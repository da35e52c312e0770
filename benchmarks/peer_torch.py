"""PyTorch's side of benchmarks/peers.py: a case's network as a torch model (CPU,
channels_last) and one timed measurement of its training step."""

from __future__ import annotations

import itertools
import os
from functools import partial

from benchmarks.peer_cases import BATCHES, Case, rbf_codes, selection, time_steps


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
