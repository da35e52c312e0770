"""The layers the classic CNNs are made of, as Flax NNX modules (NHWC throughout).

Every layer states its spatial `geometry` (kernel, stride, padding), from which the receptive
field and the smallest usable input are computed, and its `macs(output_shape)`: the
multiply-accumulates of its weights per image. MACs are counted for weighted layers only
(convolutions, fully connected layers, LeNet's subsampling coefficients and RBF distances), the
way the papers count connections and VGG's Table 2 era counted cost; pooling, normalisation and
activations are not counted.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

Shape = tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class Window:
  """A sliding window over the two spatial axes: kernel, stride and padding.

  padding is 'SAME', 'VALID', or explicit ((top, bottom), (left, right)) zero padding. Every
  layer's `geometry` and the builder's spec windows are made by `Window.of`, the one place
  where kernel, stride and padding are normalised.
  """
  kernel: tuple[int, int]
  stride: tuple[int, int]
  padding: str | tuple[tuple[int, int], tuple[int, int]] = "VALID"

  @classmethod
  def of(cls, kernel, stride=1, padding="VALID") -> "Window":
    """kernel and stride as ints or pairs; padding 'same' or 'valid' (any case), an int p
    (every side padded by p, as PyTorch does) or explicit pairs."""
    return cls(pair(kernel), pair(stride), explicit_padding(padding))

  def pads(self, spatial: Sequence[int]) -> tuple[tuple[int, int], tuple[int, int]]:
    """Explicit ((top, bottom), (left, right)) padding for an input of (H, W) `spatial`, as
    XLA resolves 'SAME' and 'VALID'."""
    if isinstance(self.padding, str):
      return tuple(jax.lax.padtype_to_pads(tuple(spatial), self.kernel, self.stride,
                                           self.padding))
    return self.padding

  @property
  def padded(self) -> bool:
    """Whether the window reaches past the input's border (anything but 'VALID' or zeros)."""
    if isinstance(self.padding, str):
      return self.padding != "VALID"
    return any(map(any, self.padding))


GLOBAL = "global"  # The layer sees the whole feature map (flatten, global pooling, dense).


def pair(v: int | Sequence[int]) -> tuple[int, int]:
  return (int(v), int(v)) if isinstance(v, (int, np.integer)) else (int(v[0]), int(v[1]))


def explicit_padding(padding) -> str | tuple[tuple[int, int], tuple[int, int]]:
  """'SAME' and 'VALID' (any case) as upper case; an int p pads every side by p (as PyTorch
  does); explicit ((top, bottom), (left, right)) pairs as a tuple of int pairs."""
  if isinstance(padding, str):
    return padding.upper()
  if isinstance(padding, (int, np.integer)):
    return ((int(padding),) * 2,) * 2
  return tuple(tuple(int(p) for p in side) for side in padding)


_DIMS = ("NHWC", "HWIO", "NHWC")


def conv2d(x, kernel, window: Window, groups: int = 1):
  """XLA's 2-D convolution of NHWC `x` with the HWIO `kernel` over `window`'s stride and
  padding, in `groups` feature groups."""
  return jax.lax.conv_general_dilated(x, kernel, window.stride, window.pads(x.shape[1:3]),
                                      dimension_numbers=_DIMS, feature_group_count=groups)


# ---------------------------------------------------------------------------------------------
# Initialisers, named in specs and config ('normal:0.01', 'constant:1', 'lecun98', 'he', ...).

def lecun98_uniform(key, shape, dtype=jnp.float32):
  """U(-2.4/F, 2.4/F) with F the fan-in: LeCun et al. 1998, Appendix A."""
  fan_in = math.prod(shape[:-1])
  limit = 2.4 / fan_in
  return jax.random.uniform(key, shape, dtype, -limit, limit)


def initializer(name: str):
  """Maps an initialiser name to a JAX initialiser; `name:arg` passes one number."""
  kind, _, arg = name.partition(":")
  inits = nnx.initializers
  if kind == "normal":
    return inits.normal(float(arg or 0.01))
  if kind == "constant":
    return inits.constant(float(arg or 0.0))
  table = {
      "zeros": inits.zeros_init(),
      "lecun98": lecun98_uniform,
      "he": inits.he_normal(),
      "glorot": inits.glorot_uniform(),
      "lecun": inits.lecun_normal(),
  }
  if kind not in table:
    raise ValueError(f"unknown initialiser {name!r}")
  return table[kind]


def weight_count(module: nnx.Module, kind=nnx.Param) -> int:
  """Number of scalars in the module's variables of `kind` (trainable parameters by default)."""
  leaves = jax.tree.leaves(nnx.state(module, kind))
  return int(sum(math.prod(x.shape) for x in leaves))


def spatial_positions(shape: Shape) -> int:
  """Output positions per image: H*W for a feature map (H, W, C), 1 for a vector."""
  return math.prod(shape[:-1])


# ---------------------------------------------------------------------------------------------
# Weighted layers.

class Conv(nnx.Conv):
  """2-D convolution; `feature_group_count=2` is AlexNet's two-tower grouping (Sec. 3.2, 3.5):
  each half of the output maps sees only its own half of the input maps."""

  def __call__(self, x):
    x, kernel, bias = self.operands(x)
    y = conv2d(x, kernel, self.geometry, self.feature_group_count)
    return y if bias is None else y + bias

  def operands(self, x):
    """x, the kernel and the bias (None without one) in the compute dtype."""
    dtype = self.dtype or x.dtype
    bias = None if self.bias is None else self.bias[...].astype(dtype)
    return x.astype(dtype), self.kernel[...].astype(dtype), bias

  @property
  def geometry(self) -> Window:
    return Window.of(self.kernel_size, self.strides, self.padding)

  def macs(self, output_shape: Shape) -> int:
    return spatial_positions(output_shape) * int(self.kernel.size)


class Dense(nnx.Linear):
  """Fully connected layer over the last axis (the flattened features)."""
  geometry = None

  def macs(self, output_shape: Shape) -> int:
    return int(self.kernel.size)


# ---------------------------------------------------------------------------------------------
# Layers without weights (BatchNorm has a scale and bias but no spatial extent).

def inverse_power(t, beta: float):
  """t ** -beta; for the paper's beta=0.75 as rsqrt(t) * rsqrt(sqrt(t)): the same values from
  two square roots instead of a general power, whose forward and backward passes cost several
  times more (`python run.py bench --config=configs/alexnet.py:paper`)."""
  if beta == 0.75:
    return jax.lax.rsqrt(t) * jax.lax.rsqrt(jnp.sqrt(t))
  if beta == 0.5:
    return jax.lax.rsqrt(t)
  return t ** -beta


class LRN(nnx.Module):
  """Local response normalisation, Krizhevsky et al. 2012, Sec. 3.3:

      b[x,y,i] = a[x,y,i] / (k + alpha * sum_{j=max(0,i-n/2)}^{min(N-1,i+n/2)} a[x,y,j]^2)^beta

  with the paper's k=2, n=5, alpha=1e-4, beta=0.75. As in the paper, alpha is not divided by n
  (PyTorch's and Caffe's LRN divide it). With `groups=2` the sum runs within each half of the
  maps, as when each of the two GPUs normalises its own tower. Computed in float32.
  """

  def __init__(self, size: int = 5, k: float = 2.0, alpha: float = 1e-4, beta: float = 0.75,
               groups: int = 1):
    self.size, self.k, self.alpha, self.beta, self.groups = size, k, alpha, beta, groups

  def __call__(self, x):
    dtype = x.dtype
    a = x.astype(jnp.float32)
    n, h, w, c = a.shape
    if c % self.groups:
      raise ValueError(f"LRN groups={self.groups} does not divide {c} channels")
    a = a.reshape(n, h, w, self.groups, c // self.groups)
    half = self.size // 2
    sums = jax.lax.reduce_window(a * a, 0.0, jax.lax.add, (1, 1, 1, 1, self.size),
                                 (1, 1, 1, 1, 1),
                                 ((0, 0), (0, 0), (0, 0), (0, 0), (half, self.size - 1 - half)))
    b = a * inverse_power(self.k + self.alpha * sums, self.beta)
    return b.reshape(n, h, w, c).astype(dtype)

  geometry = None


class Pool(nnx.Module):
  """Max or average pooling. AlexNet overlaps its windows (3x3, stride 2; Sec. 3.4); VGG does
  not (2x2, stride 2; Sec. 2.1)."""

  def __init__(self, window: int, stride: int, kind: str = "max", padding="VALID"):
    if kind not in ("max", "avg"):
      raise ValueError(f"unknown pooling {kind!r}")
    self.window, self.stride, self.kind = pair(window), pair(stride), kind
    self.padding = explicit_padding(padding)

  def __call__(self, x):
    g = self.geometry
    dims, strides = (1, *g.kernel, 1), (1, *g.stride, 1)
    padding = ((0, 0), *g.pads(x.shape[1:3]), (0, 0))
    if self.kind == "max":  # padding counts as -inf
      return jax.lax.reduce_window(x, np.array(-np.inf, x.dtype), jax.lax.max, dims, strides,
                                   padding)
    total = jax.lax.reduce_window(x, np.array(0, x.dtype), jax.lax.add, dims, strides, padding)
    return total / math.prod(self.window)

  @property
  def geometry(self) -> Window:
    return Window.of(self.window, self.stride, self.padding)


def scaled_tanh(x):
  """LeCun et al. 1998, Appendix A (Eq. 6): f(a) = A tanh(S a), A = 1.7159, S = 2/3."""
  return 1.7159 * jnp.tanh(x * (2.0 / 3.0))


ACTIVATIONS = {
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
    "scaled_tanh": scaled_tanh,
    "sigmoid": jax.nn.sigmoid,
    "gelu": jax.nn.gelu,
    "elu": jax.nn.elu,
    "leaky_relu": jax.nn.leaky_relu,
    "silu": jax.nn.silu,
}


class Activation(nnx.Module):
  """An elementwise non-linearity, by name (see ACTIVATIONS)."""

  def __init__(self, name: str):
    if name not in ACTIVATIONS:
      raise ValueError(f"unknown activation {name!r}")
    self.name = name

  def __call__(self, x):
    return ACTIVATIONS[self.name](x)

  geometry = None


class Dropout(nnx.Dropout):
  """Dropout (Krizhevsky et al. 2012, Sec. 4.2); training mode is set with nnx.view."""
  geometry = None


class BatchNorm(nnx.BatchNorm):
  """Batch normalisation over N, H, W per channel (Ioffe & Szegedy 2015); an ablation knob."""
  geometry = None


class Flatten(nnx.Module):
  """Flattens (H, W, C) to H*W*C in row-major order, as the papers' first FC layer sees it."""

  def __call__(self, x):
    return x.reshape(x.shape[0], -1)

  geometry = GLOBAL


class GlobalAvgPool(nnx.Module):
  """Averages over all spatial positions. Used as the global-average-pooling head, and to
  average the class score map of the fully convolutional head (Simonyan & Zisserman 2015,
  Sec. 3.2)."""

  def __call__(self, x):
    return jnp.mean(x, axis=(1, 2))

  geometry = GLOBAL
