"""LeNet-5's own layers (LeCun et al. 1998, Sec. II.B): C3's partial connections (Table I),
the trainable subsampling of S2 and S4, and the Euclidean RBF output units (Eq. 7), as Flax
NNX modules with the same `geometry` and `macs` as the layers of layers.py."""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from cnn_jax.models.layers import (Shape, Window, conv2d, explicit_padding, lecun98_uniform,
                                   pair, spatial_positions)

class PartialConv(nnx.Module):
  """A convolution whose output maps each see a chosen subset of the input maps.

  LeNet-5's C3 (LeCun et al. 1998, Sec. II.B and Table I): 16 maps of 5x5 kernels over the 6
  maps of S2, connected by `table` (table[j] lists the S2 maps feeding C3 map j). Only the
  connected kernels are parameters (1,516 for Table I); they are scattered into a dense kernel
  with zeros elsewhere so that one convolution computes the layer.
  """

  def __init__(self, in_features: int, table: Sequence[Sequence[int]], kernel_size: int, *,
               padding="VALID", kernel_init=lecun98_uniform, bias_init=lecun98_uniform,
               dtype=None, param_dtype=jnp.float32, rngs: nnx.Rngs):
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
    """The (kh, kw, in, out) kernel with zeros where Table I has no connection: the connected
    kernels times a constant 0/1 matrix that places connection c at (in_index[c],
    out_index[c]). A product rather than a scatter: XLA's CPU backend computed the scatter's
    indices in every step, and its gradient is the product's transpose."""
    kh, kw = self.kernel_size
    place = np.zeros((len(self.in_index), self.in_features * self.out_features), np.float32)
    place[np.arange(len(self.in_index)),
          np.array(self.in_index) * self.out_features + np.array(self.out_index)] = 1.0
    kernel = self.kernel[...]
    dense = jnp.dot(kernel.reshape(kh * kw, -1), jnp.asarray(place, kernel.dtype),
                    precision=jax.lax.Precision.HIGHEST)
    return dense.reshape(kh, kw, self.in_features, self.out_features)

  feature_group_count = 1  # one convolution with the dense kernel computes the layer

  def __call__(self, x):
    x, kernel, bias = self.operands(x)
    return conv2d(x, kernel, self.geometry) + bias

  def operands(self, x):
    """x, the dense kernel and the bias in the compute dtype."""
    dtype = self.dtype or x.dtype
    return x.astype(dtype), self.dense_kernel().astype(dtype), self.bias[...].astype(dtype)

  @property
  def geometry(self) -> Window:
    return Window.of(self.kernel_size, 1, self.padding)

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
    return Window.of(self.window, self.stride, "VALID")

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
