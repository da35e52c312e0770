"""How convolutions, their bias and max-pooling are computed: the same numbers, two routes.

'xla' hands XLA one convolution (grouped ones included), a plain bias add and one
reduce_window, and lets autodiff derive the backward pass. On GPUs and TPUs that is the fast
route (cuDNN, the TPU's convolution units).

'cpu' is for XLA's CPU backend, where these are slow (measured with `python run.py bench`
or in-process A/B timing of the train step, 2 cores):
  - a grouped convolution (AlexNet's two towers) is computed as one plain convolution per
    group;
  - a convolution's bias gradient is a matrix product with ones, not a reduction, which XLA
    fuses with the gradient's producers into one single-threaded loop (AlexNet's conv2 after
    LRN and pooling: about 300 ms of a 2.1 s step);
  - max-pooling is the elementwise maximum of the kh*kw strided views of the input, which XLA
    fuses, forward and backward, into one loop; the backward pass of reduce_window max
    (select-and-scatter) is a scalar loop (small CNN, pool1 forward and backward: 56 ms
    against 13 ms at batch 128);
  - conv -> ReLU -> non-overlapping max-pool is computed pool-first, relu(max_pool(conv(x)) +
    bias): the same values (a per-channel bias and ReLU are monotone, so they commute with the
    maximum), with the bias, the ReLU and their gradients on the pooled map (a quarter of the
    size for 2x2 windows), and the pooling gradient sent to each window's first maximum, as
    select-and-scatter sends it, from int8 positions kept by the forward pass (small CNN
    step: 36.3 -> 33.2 ms, benchmarks/lowering_ab.py).
Plain convolutions are XLA's either way: its kernel gradients beat an im2col matrix product on
every shape measured (README, "Performance"); that product contracts over N*H*W, a shape the
CPU's matrix kernels handle slowly.

'auto' is 'cpu' on the CPU backend and 'xla' elsewhere. `python run.py bench --peer_lowering`
measures one against the other.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

LOWERINGS = ("auto", "xla", "cpu")
_DIMS = ("NHWC", "HWIO", "NHWC")


def resolve(lowering: str) -> str:
  """'auto' -> 'cpu' on the CPU backend, 'xla' on GPU and TPU."""
  if lowering not in LOWERINGS:
    raise ValueError(f"unknown lowering {lowering!r}; use one of {LOWERINGS}")
  if lowering == "auto":
    return "cpu" if jax.default_backend() == "cpu" else "xla"
  return lowering


def _padding(padding, kernel, strides, spatial):
  """Explicit ((top, bottom), (left, right)) padding, as XLA resolves 'SAME' and 'VALID'."""
  if not isinstance(padding, str):
    return tuple(tuple(int(p) for p in side) for side in padding)
  return tuple(jax.lax.padtype_to_pads(spatial, kernel, strides, padding))


def _conv(x, kernel, strides, padding, groups):
  return jax.lax.conv_general_dilated(x, kernel, strides, padding, dimension_numbers=_DIMS,
                                      feature_group_count=groups)


def _view(xp, i, j, strides, out_hw):
  """The (Ho, Wo) positions of a window's element (i, j): a strided view of the padded input."""
  (sh, sw), (ho, wo) = strides, out_hw
  n, c = xp.shape[0], xp.shape[-1]
  return jax.lax.slice(xp, (0, i, j, 0), (n, i + sh * (ho - 1) + 1, j + sw * (wo - 1) + 1, c),
                       (1, sh, sw, 1))


def conv2d(x, kernel, strides=(1, 1), padding="VALID", groups: int = 1, lowering="xla"):
  """A 2-D convolution, NHWC input and HWIO kernel, `groups` feature groups."""
  strides = tuple(int(s) for s in strides)
  padding = _padding(padding, kernel.shape[:2], strides, x.shape[1:3])
  if resolve(lowering) == "xla":
    return _conv(x, kernel, strides, padding, groups)
  if groups == 1:
    return _conv(x, kernel, strides, padding, 1)
  xs = jnp.split(x, groups, axis=-1)
  ks = jnp.split(kernel, groups, axis=-1)
  return jnp.concatenate([_conv(a, k, strides, padding, 1) for a, k in zip(xs, ks)], axis=-1)


@jax.custom_vjp
def _bias_add_product_grad(y, bias):
  return y + bias


def _bias_add_fwd(y, bias):
  return y + bias, None


def _bias_add_bwd(_, dy):
  flat = dy.reshape(-1, dy.shape[-1])
  ones = jnp.ones((1, flat.shape[0]), dy.dtype)
  return dy, jnp.dot(ones, flat, preferred_element_type=jnp.float32)[0].astype(dy.dtype)


_bias_add_product_grad.defvjp(_bias_add_fwd, _bias_add_bwd)


def bias_add(y, bias, lowering="xla"):
  """y + bias over the last axis."""
  if resolve(lowering) == "xla":
    return y + bias
  return _bias_add_product_grad(y, bias)


def max_pool(x, window, strides, padding="VALID", lowering="xla"):
  """Max-pooling over the two spatial axes of NHWC `x` (padding counts as -inf)."""
  window, strides = tuple(window), tuple(strides)
  padding = _padding(padding, window, strides, x.shape[1:3])
  (kh, kw), (sh, sw) = window, strides
  n, h, w, c = x.shape
  h, w = h + sum(padding[0]), w + sum(padding[1])
  ho, wo = (h - kh) // sh + 1, (w - kw) // sw + 1
  if resolve(lowering) == "xla" or min(ho, wo) < 1:  # (an empty output: the input is too small)
    return jax.lax.reduce_window(x, np.array(-np.inf, x.dtype), jax.lax.max, (1, *window, 1),
                                 (1, *strides, 1), ((0, 0), *padding, (0, 0)))
  xp = jnp.pad(x, ((0, 0), *padding, (0, 0)), constant_values=-jnp.inf)
  if (kh, kw) == (sh, sw):  # non-overlapping: a reshape, then one reduction
    return _tiles(xp, window).max(axis=(2, 4))
  views = [_view(xp, i, j, strides, (ho, wo)) for i in range(kh) for j in range(kw)]
  return functools.reduce(jnp.maximum, views)


def _tiles(x, window):
  """NHWC `x` cropped to whole non-overlapping windows, viewed as (N, Ho, kh, Wo, kw, C)."""
  (kh, kw), (n, h, w, c) = window, x.shape
  return x[:, :h // kh * kh, :w // kw * kw].reshape(n, h // kh, kh, w // kw, kw, c)


def pools_first(window, strides, padding) -> bool:
  """Whether max-pooling with this geometry can be computed pool-first (max_pool_bias_relu):
  non-overlapping windows (window == stride) and no padding."""
  unpadded = padding == "VALID" if isinstance(padding, str) else not any(map(any, padding))
  return tuple(window) == tuple(strides) and unpadded


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _max_pool_first_max_grad(y, window):
  return _window_argmax(y, window)[0]


def _window_argmax(y, window):
  """The maxima of the non-overlapping `window`s of NHWC `y` (cropped to whole windows) and
  the position of each window's first maximum in row-major order (int8)."""
  kh, kw = window
  y6 = _tiles(y, window)
  out = y6.max(axis=(2, 4))  # a reduction: XLA does not recompute it inside its consumers
  views = [y6[:, :, i, :, j, :] for i in range(kh) for j in range(kw)]
  first = jnp.full(out.shape, len(views) - 1, jnp.int8)
  for k in reversed(range(len(views) - 1)):
    first = jnp.where(views[k] == out, jnp.int8(k), first)
  return out, first


def _max_pool_fwd(y, window):
  out, first = _window_argmax(y, window)
  return out, (first, y.shape)


def _max_pool_bwd(window, residuals, dout):
  """The gradient goes to each window's first maximum, as XLA's select-and-scatter sends it;
  only the positions are kept from the forward pass, not the input."""
  first, (n, h, w, c) = residuals
  (kh, kw), (_, ho, wo, _) = window, first.shape
  position = (jnp.arange(kh, dtype=jnp.int8)[:, None] * kw
              + jnp.arange(kw, dtype=jnp.int8)).reshape(1, 1, kh, 1, kw, 1)
  dy = jnp.where(position == first[:, :, None, :, None], dout[:, :, None, :, None],
                 jnp.zeros((), dout.dtype)).reshape(n, ho * kh, wo * kw, c)
  return (jnp.pad(dy, ((0, 0), (0, h - ho * kh), (0, w - wo * kw), (0, 0))),)


_max_pool_first_max_grad.defvjp(_max_pool_fwd, _max_pool_bwd)


def max_pool_bias_relu(y, bias, window):
  """relu(max_pool(y + bias)) for non-overlapping windows (pools_first), computed as
  relu(max_pool(y) + bias): the same values, since adding a per-channel bias and ReLU are
  monotone and so commute with the maximum. `bias` may be None."""
  pooled = _max_pool_first_max_grad(y, tuple(window))
  if bias is not None:
    pooled = _bias_add_product_grad(pooled, bias)
  return jax.nn.relu(pooled)
