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

from cnn_jax.models import lowering as lowering_

Shape = tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class Window:
  """A sliding window over the two spatial axes: kernel, stride and padding.

  padding is 'SAME', 'VALID', or explicit ((top, bottom), (left, right)) zero padding.
  """
  kernel: tuple[int, int]
  stride: tuple[int, int]
  padding: str | tuple[tuple[int, int], tuple[int, int]] = "VALID"


GLOBAL = "global"  # The layer sees the whole feature map (flatten, global pooling, dense).


def pair(v: int | Sequence[int]) -> tuple[int, int]:
  return (int(v), int(v)) if isinstance(v, (int, np.integer)) else (int(v[0]), int(v[1]))


def explicit_padding(padding: str | int) -> str | tuple[tuple[int, int], tuple[int, int]]:
  """'SAME' and 'VALID' stay as they are; an int p pads every side by p (as PyTorch does)."""
  if isinstance(padding, str):
    return padding.upper()
  return ((int(padding),) * 2,) * 2


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
  each half of the output maps sees only its own half of the input maps. `lowering` chooses
  how it is computed (lowering.py); the parameters and results are the same."""

  def __init__(self, *args, lowering: str = "xla", **kwargs):
    super().__init__(*args, **kwargs)
    self.lowering = lowering

  def __call__(self, x, add_bias: bool = True):
    dtype = self.dtype or x.dtype
    y = lowering_.conv2d(x.astype(dtype), self.kernel[...].astype(dtype), pair(self.strides),
                         self.geometry.padding, self.feature_group_count, self.lowering)
    if self.bias is None or not add_bias:
      return y
    return lowering_.bias_add(y, self.bias[...].astype(dtype), self.lowering)

  @property
  def geometry(self) -> Window:
    padding = self.padding
    if isinstance(padding, str):
      padding = padding.upper()
    else:
      padding = tuple(tuple(int(p) for p in side) for side in padding)
    return Window(pair(self.kernel_size), pair(self.strides), padding)

  def macs(self, output_shape: Shape) -> int:
    return spatial_positions(output_shape) * int(self.kernel.size)


class Dense(nnx.Linear):
  """Fully connected layer over the last axis (the flattened features)."""
  geometry = None

  def macs(self, output_shape: Shape) -> int:
    return int(self.kernel.size)


class PartialConv(nnx.Module):
  """A convolution whose output maps each see a chosen subset of the input maps.

  LeNet-5's C3 (LeCun et al. 1998, Sec. II.B and Table I): 16 maps of 5x5 kernels over the 6
  maps of S2, connected by `table` (table[j] lists the S2 maps feeding C3 map j). Only the
  connected kernels are parameters (1,516 for Table I); they are scattered into a dense kernel
  with zeros elsewhere so that one convolution computes the layer.
  """

  def __init__(self, in_features: int, table: Sequence[Sequence[int]], kernel_size: int, *,
               padding="VALID", kernel_init=lecun98_uniform, bias_init=lecun98_uniform,
               dtype=None, param_dtype=jnp.float32, lowering: str = "xla", rngs: nnx.Rngs):
    self.lowering = lowering
    self.table = tuple(tuple(int(i) for i in inputs) for inputs in table)
    self.in_features = in_features
    self.out_features = len(self.table)
    self.kernel_size = pair(kernel_size)
    self.padding = explicit_padding(padding)
    self.dtype = dtype
    if any(i >= in_features or i < 0 for inputs in self.table for i in inputs):
      raise ValueError(f"connection table refers to input maps outside 0..{in_features - 1}")
    # Static (tuples, not arrays), so they are not part of the model's state.
    self.in_index = tuple(i for inputs in self.table for i in inputs)
    self.out_index = tuple(j for j, inputs in enumerate(self.table) for _ in inputs)
    kh, kw = self.kernel_size
    key_k, key_b = rngs.params(), rngs.params()
    # Each C3 map's fan-in is 25 times the number of S2 maps it sees.
    fan_in = np.array([kh * kw * len(inputs) for inputs in self.table], np.float32)
    if kernel_init is lecun98_uniform:
      limit = 2.4 / fan_in
      kernel = jax.random.uniform(key_k, (kh, kw, len(self.in_index)), param_dtype, -1, 1)
      kernel = kernel * limit[list(self.out_index)]
      bias = jax.random.uniform(key_b, (self.out_features,), param_dtype, -1, 1) * limit
    else:  # Other initialisers see the dense kernel's shape; keep the connected entries.
      dense = kernel_init(key_k, (kh, kw, in_features, self.out_features), param_dtype)
      kernel = dense[:, :, list(self.in_index), list(self.out_index)]
      bias = bias_init(key_b, (self.out_features,), param_dtype)
    self.kernel = nnx.Param(kernel)
    self.bias = nnx.Param(bias)

  def dense_kernel(self) -> jax.Array:
    """The (kh, kw, in, out) kernel with zeros where Table I has no connection."""
    kh, kw = self.kernel_size
    dense = jnp.zeros((kh, kw, self.in_features, self.out_features), self.kernel.dtype)
    return dense.at[:, :, np.array(self.in_index), np.array(self.out_index)].set(self.kernel[...])

  def __call__(self, x):
    dtype = self.dtype or x.dtype
    y = lowering_.conv2d(x.astype(dtype), self.dense_kernel().astype(dtype), (1, 1),
                         self.padding, lowering=self.lowering)
    return y + self.bias[...].astype(dtype)

  @property
  def geometry(self) -> Window:
    return Window(self.kernel_size, (1, 1), self.padding)

  def macs(self, output_shape: Shape) -> int:
    return spatial_positions(output_shape) * int(self.kernel.size)


class Subsampling(nnx.Module):
  """LeNet-5's S2 and S4 (LeCun et al. 1998, Sec. II.B): the inputs of each 2x2 window are
  added, multiplied by one trainable coefficient per map, and a trainable bias per map is added
  (2 parameters per map; the squashing function follows as a separate layer)."""

  def __init__(self, features: int, window: int = 2, stride: int = 2, *,
               init=lecun98_uniform, dtype=None, param_dtype=jnp.float32, rngs: nnx.Rngs):
    self.window = pair(window)
    self.stride = pair(stride)
    self.dtype = dtype
    # The fan-in of a subsampling unit is its window (4 inputs for 2x2).
    fan_in = math.prod(self.window)
    self.coefficient = nnx.Param(init(rngs.params(), (fan_in, features), param_dtype)[0])
    self.bias = nnx.Param(init(rngs.params(), (fan_in, features), param_dtype)[0])

  def __call__(self, x):
    dtype = self.dtype or x.dtype
    x = x.astype(dtype)
    total = jax.lax.reduce_window(x, np.array(0, dtype), jax.lax.add,
                                  (1, *self.window, 1), (1, *self.stride, 1), "VALID")
    return total * self.coefficient[...].astype(dtype) + self.bias[...].astype(dtype)

  @property
  def geometry(self) -> Window:
    return Window(self.window, self.stride, "VALID")

  def macs(self, output_shape: Shape) -> int:
    return math.prod(output_shape)


class RBF(nnx.Module):
  """LeNet-5's output layer of Euclidean radial basis units (LeCun et al. 1998, Eq. 7):
  y_i = sum_j (x_j - w_ij)^2 with fixed +-1 parameter vectors.

  The paper drew its 84-dimensional codes as 7x12 bitmaps of the characters and notes that
  codes chosen at random with equal probabilities for -1 and +1 serve the same purpose; here
  they are random +-1 from a fixed seed, and not trainable. The layer returns -y, so a softmax
  cross-entropy over its output is the paper's MAP criterion (Eq. 9) with the j term dropped.
  """

  def __init__(self, in_features: int, out_features: int, seed: int = 1998):
    codes = np.random.default_rng(seed).choice([-1.0, 1.0], size=(in_features, out_features))
    self.centres = nnx.Variable(jnp.asarray(codes, jnp.float32))  # not an nnx.Param
    self.in_features = in_features
    self.out_features = out_features

  def __call__(self, x):
    c = self.centres[...].astype(x.dtype)
    # |x - c|^2 = |x|^2 - 2 x.c + |c|^2, over the last axis.
    sq = (jnp.sum(x * x, axis=-1, keepdims=True) - 2 * x @ c + jnp.sum(c * c, axis=0))
    return -sq

  geometry = None  # acts on the last axis only

  def macs(self, output_shape: Shape) -> int:
    return spatial_positions(output_shape) * self.in_features * self.out_features


# ---------------------------------------------------------------------------------------------
# Layers without weights (BatchNorm has a scale and bias but no spatial extent).

def inverse_power(t, beta: float):
  """t ** -beta; for the paper's beta=0.75 as rsqrt(t) * rsqrt(sqrt(t)), which on CPU runs
  forward and backward several times faster than a general power."""
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

  def __init__(self, window: int, stride: int, kind: str = "max", padding="VALID",
               lowering: str = "xla"):
    if kind not in ("max", "avg"):
      raise ValueError(f"unknown pooling {kind!r}")
    self.window, self.stride, self.kind = pair(window), pair(stride), kind
    self.padding = explicit_padding(padding)
    self.lowering = lowering

  def __call__(self, x):
    if self.kind == "max":
      return lowering_.max_pool(x, self.window, self.stride, self.padding, self.lowering)
    dims, strides = (1, *self.window, 1), (1, *self.stride, 1)
    padding = self.padding if isinstance(self.padding, str) else ((0, 0), *self.padding, (0, 0))
    total = jax.lax.reduce_window(x, np.array(0, x.dtype), jax.lax.add, dims, strides, padding)
    return total / math.prod(self.window)

  @property
  def geometry(self) -> Window:
    return Window(self.window, self.stride, self.padding)


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


def pools_first(conv, activation, pool) -> bool:
  """Whether the layers conv -> ReLU -> max-pool run pool-first on their lowering
  (lowering.max_pool_bias_relu: the same values, less elementwise work; the CPU route, with
  non-overlapping windows)."""
  return (_conv_relu_on_cpu(conv, activation) and isinstance(pool, Pool) and pool.kind == "max"
          and lowering_.pools_first(pool.window, pool.stride, pool.padding))


def _conv_relu_on_cpu(conv, activation) -> bool:
  return (isinstance(conv, Conv) and isinstance(activation, Activation)
          and activation.name == "relu" and lowering_.resolve(conv.lowering) == "cpu")


def relu_as_reduction(conv, activation) -> bool:
  """Whether the layers conv -> ReLU (with no max-pool after them: pools_first) compute their
  bias and ReLU as a reduction (lowering.bias_relu_as_reduction; the CPU route)."""
  return (_conv_relu_on_cpu(conv, activation) and conv.bias is not None
          and lowering_.CONV_RELU_AS_REDUCTION)


def conv_relu(conv, x):
  """relu(conv(x)) for layers where `relu_as_reduction` holds."""
  dtype = conv.dtype or x.dtype
  return lowering_.bias_relu_as_reduction(conv(x, add_bias=False),
                                          conv.bias[...].astype(dtype))


def conv_relu_max_pool(conv, pool, x):
  """pool(relu(conv(x))) for layers where `pools_first` holds, computed pool-first; a
  `shallow` convolution inside the pooling (lowering.conv_max_pool_bias_relu)."""
  dtype = conv.dtype or x.dtype
  bias = None if conv.bias is None else conv.bias[...].astype(dtype)
  if (pool.window == pool.stride
      and lowering_.shallow(conv.kernel.shape, pair(conv.strides), conv.feature_group_count)):
    return lowering_.conv_max_pool_bias_relu(x.astype(dtype), conv.kernel[...].astype(dtype),
                                             bias, conv.geometry.padding, pool.window)
  return lowering_.max_pool_bias_relu(conv(x, add_bias=False), bias, pool.window, pool.stride)


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
