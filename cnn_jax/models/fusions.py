"""The CPU route's kernels for conv -> ReLU -> max-pool: the layers' values, computed in
fewer passes over memory. The execution plan (plan.py) uses them where its rewrites say.

  - 'pool_first': conv -> ReLU -> max-pool (unpadded windows) as relu(max_pool(conv(x)) +
    bias), the same values (a per-channel bias and ReLU are monotone, so they commute with
    the maximum), with the bias, the ReLU and their gradients on the pooled map, and the
    pooling gradient sent to each window's first maximum (max_pool_bias_relu);
  - 'shallow_conv': within those, a shallow convolution (stride 1, at most SHALLOW_FAN_IN
    inputs per output: the small CNN's conv1) computed inside the pooling, from strided views
    of the input, so the full-resolution map is never written (conv_max_pool_bias_relu);
  - 'relu_in_reduction': within both, for non-overlapping windows, the bias added inside the
    pooling reduction and the ReLU as its initial value (0), so the activation is the
    reduction's output, which XLA does not recompute inside its consumers.
Each is timed on against off with `benchmarks/lowering_ab.py --rewrite=NAME`; what was kept
and why is in benchmarks/HISTORY.md, "Execution plan (issue 19)".
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from cnn_jax.models import lowering as K


def pools_first(window, strides, padded: bool, overlapping: bool) -> bool:
  """Whether max-pooling with this geometry can be computed pool-first (max_pool_bias_relu):
  no padding, at most MAX_WINDOW_POSITIONS positions in a window, and non-overlapping
  windows unless `overlapping`."""
  return (not padded and math.prod(window) <= K.MAX_WINDOW_POSITIONS
          and (tuple(window) == tuple(strides) or overlapping))


def max_pool_bias_relu(y, bias, window, strides, relu_in_reduction: bool = True):
  """relu(max_pool(y + bias)) for unpadded windows (pools_first), computed as
  relu(max_pool(y) + bias): the same values, since adding a per-channel bias and ReLU are
  monotone and so commute with the maximum. `bias` may be None.

  With `relu_in_reduction`, for non-overlapping windows the bias is added inside the pooling
  reduction and the ReLU is its initial value (0): XLA does not recompute a reduction inside
  its consumers, whereas an elementwise bias and ReLU after it were recomputed inside the
  transposed copy that feeds the next convolution's kernel gradient. Overlapping windows keep
  the ReLU after XLA's reduce_window (with the bias inside it, torchvision's AlexNet was
  slower)."""
  window, strides = tuple(window), tuple(strides)
  if window != strides or not relu_in_reduction:
    return bias_relu(K.first_max_pool(y, window, strides), bias)
  if bias is None:
    bias = jnp.zeros(y.shape[-1:], y.dtype)
  return _pool_bias_relu(y, bias, window)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _pool_bias_relu(y, bias, window):
  return _pool_bias_relu_fwd(y, bias, window)[0]


def _pool_bias_relu_fwd(y, bias, window):
  tiles = K.tiles(y + bias, window)  # the bias is fused into the reduction, not written
  out = jax.lax.reduce(tiles, np.array(0, y.dtype), jax.lax.max, (2, 4))
  views = [tiles[:, :, i, :, j, :] for i in range(window[0]) for j in range(window[1])]
  # where out is 0 no view need equal it, but the ReLU passes no gradient there
  return out, (K.first_max(views, out), out, y.shape)


def relu_grad(out, dout):
  """The gradient through a ReLU from its output: none where it is 0 (as jax.nn.relu)."""
  return jnp.where(out > 0, dout, jnp.zeros((), dout.dtype))


def _pool_bias_relu_bwd(window, residuals, dout):
  first, out, shape = residuals
  g = relu_grad(out, dout)
  (dy,) = K.max_pool_bwd(window, (first, shape), g)
  return dy, K.bias_grad(g)


_pool_bias_relu.defvjp(_pool_bias_relu_fwd, _pool_bias_relu_bwd)


def bias_relu(pooled, bias):
  """relu(pooled + bias), the bias gradient a matrix product (lowering.bias_add); `bias` may
  be None."""
  if bias is not None:
    pooled = K.bias_add(pooled, bias)
  return jax.nn.relu(pooled)


SHALLOW_FAN_IN = 18  # inputs per output (kh * kw * in_features); see conv_max_pool_bias_relu


def shallow(kernel_shape, strides, groups: int) -> bool:
  """Whether a convolution is computed inside its max-pool (conv_max_pool_bias_relu): stride 1,
  one group, and at most SHALLOW_FAN_IN inputs per output."""
  kh, kw, ci, _ = kernel_shape
  return tuple(strides) == (1, 1) and groups == 1 and kh * kw * ci <= SHALLOW_FAN_IN


def conv_max_pool_bias_relu(x, kernel, bias, padding, window, relu_in_reduction: bool = True):
  """relu(max_pool(conv(x, kernel)) + bias) for a `shallow` convolution with explicit
  `padding` and non-overlapping unpadded windows (pools_first), without the full-resolution
  convolution output. `bias` may be None.

  The outputs at position (a, b) of every window are sums of kh*kw*in_features strided views
  of the padded input, each times one kernel entry (float32), plus the bias; one variadic
  reduction over the window positions, initialised at 0 (the ReLU, with
  `relu_in_reduction`; see max_pool_bias_relu), gives the activation and the first position
  that attains the maximum (int8). XLA's CPU convolution writes and rereads the whole map
  instead, and with so few inputs per output that traffic is most of its cost. The gradient
  goes to each window's first maximum, as select-and-scatter sends it; the kernel's and the
  input's gradients are XLA's. SHALLOW_FAN_IN comes from `python benchmarks/conv_max_pool.py`
  (faster up to 18 inputs per output, slower from 20, where XLA stops vectorising the
  reduction)."""
  if bias is None:
    bias = jnp.zeros(kernel.shape[-1:], x.dtype)
  if not relu_in_reduction:
    return jax.nn.relu(_conv_max_pool(x, kernel, bias, padding, tuple(window), False))
  return _conv_max_pool(x, kernel, bias, padding, tuple(window), True)


def _pooled_shapes(x_shape, kernel_shape, padding, window):
  """(the convolution's output shape, the pooled (Ho, Wo))."""
  (n, h, w, _), (kh, kw, _, co) = x_shape, kernel_shape
  hc, wc = h + sum(padding[0]) - kh + 1, w + sum(padding[1]) - kw + 1
  return (n, hc, wc, co), (hc // window[0], wc // window[1])


def _kernel_views(x, kernel_shape, padding, window):
  """Per window position (a, b), the strided views (N, Ho, Wo) of the padded input (float32)
  that the kernel's entries (i, j, c) multiply, in the kernel's row-major order."""
  kh, kw, ci, _ = kernel_shape
  xp = jnp.pad(x, ((0, 0), *padding, (0, 0))).astype(jnp.float32)
  _, out_hw = _pooled_shapes(x.shape, kernel_shape, padding, window)
  return [[K.view(xp, a + i, b + j, window, out_hw)[..., c]
           for i in range(kh) for j in range(kw) for c in range(ci)]
          for a in range(window[0]) for b in range(window[1])]


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def _conv_max_pool(x, kernel, bias, padding, window, relu):
  return _conv_max_pool_fwd(x, kernel, bias, padding, window, relu)[0]


def _conv_max_pool_fwd(x, kernel, bias, padding, window, relu):
  k = kernel.astype(jnp.float32).reshape(-1, kernel.shape[-1])
  b = bias.astype(jnp.float32)
  views = [sum(v[..., None] * k[t] for t, v in enumerate(entries)) + b
           for entries in _kernel_views(x, kernel.shape, padding, window)]
  out, first = _max_and_first(views, 0.0 if relu else -np.inf)
  out = out.astype(x.dtype)
  return out, (x, kernel, first, out if relu else None)


def _max_and_first(views, initial):
  """The elementwise maximum of `views` and `initial`, and the index (int8) of the first view
  that attains it, from one variadic reduction: XLA fuses the views into it once and, a
  reduction not being duplicated into its consumers, computes them only there. Where only
  `initial` attains it, the index is the last view's."""
  def pick(a, b):  # (value, index) pairs: the larger value; on a tie, the earlier index
    take_a = (a[0] > b[0]) | ((a[0] == b[0]) & (a[1] < b[1]))
    return jnp.where(take_a, a[0], b[0]), jnp.where(take_a, a[1], b[1])
  stacked = jnp.stack(views)  # fused into the reduction, not written
  index = jax.lax.broadcasted_iota(jnp.int8, stacked.shape, 0)
  return jax.lax.reduce((stacked, index),
                        (np.array(initial, stacked.dtype), np.int8(len(views) - 1)), pick, (0,))


def _conv_max_pool_bwd(padding, window, relu, residuals, dout):
  x, kernel, first, out = residuals
  if relu:
    dout = relu_grad(out, dout)
  conv_shape, _ = _pooled_shapes(x.shape, kernel.shape, padding, window)
  (dy,) = K.max_pool_bwd(window, (first, conv_shape), dout)
  _, conv_vjp = jax.vjp(lambda x, k: K.conv2d(x, k, (1, 1), padding, 1, whole_input_dot=False,
                                               column_input_grad=False), x, kernel)
  # XLA's gradients; XLA drops dx where x needs no gradient (a network's input)
  return (*conv_vjp(dy), K.bias_grad(dout))


_conv_max_pool.defvjp(_conv_max_pool_fwd, _conv_max_pool_bwd)
