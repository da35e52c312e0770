"""The CPU route's kernels: convolutions, their bias and max-pooling for XLA's CPU backend,
the same numbers as the layers' own (XLA's) forms.

The execution plan (plan.py) runs the layers through these where `model.lowering` resolves to
'cpu'; models/fusions.py holds the kernels for conv -> ReLU -> max-pool groups. On XLA's CPU
backend the layers' own forms are slow here (measured with `python run.py bench
--peer_lowering=xla`, or one piece at a time with `benchmarks/lowering_ab.py`, 2 cores):
  - a grouped convolution (AlexNet's two towers) is computed as one plain convolution per
    group;
  - a convolution's bias gradient is a matrix product with ones, not a reduction, which XLA
    fuses with the gradient's producers into one single-threaded loop (AlexNet's conv2 after
    LRN and pooling);
  - max-pooling keeps from its forward pass the position (int8) of each window's first
    maximum and sends the gradient there, as select-and-scatter does, without
    select-and-scatter's scalar loop: for non-overlapping windows through a reshape, for
    overlapping ones (AlexNet's 3x3 stride 2) one stride phase at a time
    (_strided_max_pool_bwd; rewrite 'overlapping_pool');
  - a convolution whose kernel spans its whole input (LeNet-5's C5) is a matrix product
    (rewrite 'whole_input_dot');
  - a stride-1 convolution of a large kernel over few input channels (LeNet-5's C3) takes its
    input gradient as the output gradient times the kernel, the columns added back into place
    (rewrite 'column_input_grad');
  - a 3x3 stride-1 convolution over many maps (VGG's middle stages) runs through Winograd's
    F(2x2, 3x3), its value and input gradient (rewrite 'winograd', models/winograd.py).
Other convolutions, and the other kernel gradients, are XLA's: its kernel
gradients beat an im2col matrix product on every shape measured (benchmarks/HISTORY.md).

Every function takes explicit ((top, bottom), (left, right)) padding (layers.Window.pads).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from cnn_jax.models import winograd as W

_DIMS = ("NHWC", "HWIO", "NHWC")


def _conv(x, kernel, strides, padding, groups):
  return jax.lax.conv_general_dilated(x, kernel, strides, padding, dimension_numbers=_DIMS,
                                      feature_group_count=groups)


def view(xp, i, j, strides, out_hw):
  """The (Ho, Wo) positions of a window's element (i, j): a strided view of the padded input."""
  (sh, sw), (ho, wo) = strides, out_hw
  n, c = xp.shape[0], xp.shape[-1]
  return jax.lax.slice(xp, (0, i, j, 0), (n, i + sh * (ho - 1) + 1, j + sw * (wo - 1) + 1, c),
                       (1, sh, sw, 1))


def conv2d(x, kernel, strides, padding, groups: int = 1, whole_input_dot: bool = True,
           column_input_grad: bool = True, winograd: bool = True):
  """A 2-D convolution, NHWC input and HWIO kernel, `groups` feature groups, one plain
  convolution per group; with `whole_input_dot`, a kernel over the whole input
  (`covers_input`) as a matrix product (_whole_input_product); with `column_input_grad`, a
  stride-1 convolution of a large kernel over few input channels (`column_grad_applies`) takes its
  input gradient from its columns (_column_input_grad_conv); with `winograd`, a 3x3 stride-1
  convolution where `winograd.applies`, its value and input gradient through F(2x2, 3x3)
  (models/winograd.py)."""
  strides = tuple(int(s) for s in strides)
  if winograd and W.applies(x.shape, kernel.shape, strides, groups):
    return W.conv(x, kernel, tuple(map(tuple, padding)))
  if groups == 1 and whole_input_dot and covers_input(x.shape, kernel.shape, padding):
    return _whole_input_product(x, kernel)
  if (groups == 1 and column_input_grad
      and column_grad_applies(x.shape, kernel.shape, strides, padding)):
    return _column_input_grad_conv(x, kernel, tuple(map(tuple, padding)))
  if groups == 1:
    return _conv(x, kernel, strides, padding, 1)
  xs = jnp.split(x, groups, axis=-1)
  ks = jnp.split(kernel, groups, axis=-1)
  return jnp.concatenate([_conv(a, k, strides, padding, 1) for a, k in zip(xs, ks)], axis=-1)


def covers_input(x_shape, kernel_shape, padding) -> bool:
  """Whether the kernel spans the whole unpadded input: one output position (LeNet-5's C5,
  Sec. II-B; a fully convolutional head's first layer), which is a dense layer."""
  return (tuple(x_shape[1:3]) == tuple(kernel_shape[:2])
          and not any(map(any, padding)))


def _whole_input_product(x, kernel):
  """conv2d where `covers_input`: the flattened input times the flattened kernel, both in
  (row, column, channel) order. XLA's CPU convolution computes the input gradient as a
  convolution of the 1x1 output gradient padded to the kernel's size, several times slower
  than the product (LeNet-5's C5; step with against without: `benchmarks/lowering_ab.py
  --config=configs/lenet5.py --batch_size=128 --rewrite=whole_input_dot`)."""
  n, (kh, kw, ci, co) = x.shape[0], kernel.shape
  y = jnp.dot(x.reshape(n, kh * kw * ci), kernel.reshape(kh * kw * ci, co),
              preferred_element_type=x.dtype)
  return y.reshape(n, 1, 1, co)


# Where `column_input_grad` applies: a stride-1 convolution with a kernel of at least
# COLUMN_MIN_POSITIONS positions over at most COLUMN_MAX_INPUTS input channels (its input
# gradient has that many channels), and at most COLUMN_MAX_VALUES values in one example's
# columns (kernel positions x input channels x output positions; 2^18 is 1 MiB in f32).
# LeNet-5's C3 (5x5 over 6 maps, 15,000 values) is the case measured faster; the small CNN's
# 3x3 conv2 was slower with 6, 8 and 32 input maps (benchmarks/HISTORY.md, "Column input
# gradients").
COLUMN_MIN_POSITIONS = 25
COLUMN_MAX_INPUTS = 8
COLUMN_MAX_VALUES = 2 ** 18


def column_grad_applies(x_shape, kernel_shape, strides, padding) -> bool:
  """Whether `column_input_grad` applies to a convolution (the bounds above)."""
  if tuple(strides) != (1, 1):
    return False
  (kh, kw, ci, _), (h, w) = kernel_shape, x_shape[1:3]
  ho, wo = h + sum(padding[0]) - kh + 1, w + sum(padding[1]) - kw + 1
  return (kh * kw >= COLUMN_MIN_POSITIONS and ci <= COLUMN_MAX_INPUTS and ho > 0 and wo > 0
          and kh * kw * ci * ho * wo <= COLUMN_MAX_VALUES)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _column_input_grad_conv(x, kernel, padding):
  """A stride-1 convolution whose input gradient is computed from columns
  (column_input_grad); its value and kernel gradient are XLA's."""
  return _conv(x, kernel, (1, 1), padding, 1)


def _column_input_grad_fwd(x, kernel, padding):
  return _conv(x, kernel, (1, 1), padding, 1), (x, kernel)


def _column_input_grad_bwd(padding, residuals, dy):
  x, kernel = residuals
  _, kernel_vjp = jax.vjp(lambda k: _conv(x, k, (1, 1), padding, 1), kernel)
  return column_input_grad(dy, kernel, padding), kernel_vjp(dy)[0]


def column_input_grad(dy, kernel, padding):
  """The input gradient of a stride-1 convolution: the kernel times the output gradient gives
  each output position's column (its kh x kw x in window), and the columns are added back
  where their windows lie, along the rows of each kernel row first, then down the rows.
  XLA's CPU convolution computes it as a convolution of the padded output gradient with the
  flipped kernel, which with few channels out (LeNet-5's C3: 6) runs at a fraction of the
  forward convolution's speed (`benchmarks/lowering_ab.py --config=configs/lenet5.py
  --rewrite=column_input_grad`)."""
  (pt, pb), (pl, pr) = padding
  n, ho, wo, co = dy.shape
  kh, kw, ci, _ = kernel.shape
  hp, wp = ho + kh - 1, wo + kw - 1  # the padded input's extent
  # (kh, kw, in, N, Ho, Wo): each kernel position's column is a contiguous map of the batch,
  # so the shifted sums below run along contiguous rows; the channels go last at the end.
  columns = jax.lax.dot_general(kernel.reshape(kh * kw * ci, co), dy.reshape(-1, co),
                                (((1,), (1,)), ((), ())), preferred_element_type=dy.dtype)
  columns = columns.reshape(kh, kw, ci, n, ho, wo)
  rows = [sum(jnp.pad(columns[p, q], ((0, 0), (0, 0), (0, 0), (q, kw - 1 - q)))
              for q in range(kw)) for p in range(kh)]
  dxp = sum(jnp.pad(rows[p], ((0, 0), (0, 0), (p, kh - 1 - p), (0, 0))) for p in range(kh))
  return dxp.transpose(1, 2, 3, 0)[:, pt:hp - pb, pl:wp - pr]


_column_input_grad_conv.defvjp(_column_input_grad_fwd, _column_input_grad_bwd)


@jax.custom_vjp
def bias_add(y, bias):
  """y + bias over the last axis, the bias gradient a matrix product with ones (_bias_grad)."""
  return y + bias


def _bias_add_fwd(y, bias):
  return y + bias, None


def _bias_add_bwd(_, dy):
  return dy, bias_grad(dy)


def bias_grad(dy):
  """The sum of `dy` over all but its last axis, as a matrix product with ones (see bias_add)."""
  flat = dy.reshape(-1, dy.shape[-1])
  ones = jnp.ones((1, flat.shape[0]), dy.dtype)
  return jnp.dot(ones, flat, preferred_element_type=jnp.float32)[0].astype(dy.dtype)


bias_add.defvjp(_bias_add_fwd, _bias_add_bwd)


def max_pool(x, window, strides, padding, overlapping_first_max: bool = True):
  """Max-pooling over the two spatial axes of NHWC `x` (padding counts as -inf), the gradient
  sent to each window's first maximum (first_max_pool); overlapping windows without
  `overlapping_first_max` as the maximum of strided views, with autodiff's gradient."""
  window, strides = tuple(window), tuple(strides)
  (kh, kw), (sh, sw) = window, strides
  n, h, w, c = x.shape
  h, w = h + sum(padding[0]), w + sum(padding[1])
  if min((h - kh) // sh + 1, (w - kw) // sw + 1) < 1:  # an empty output: the input is too small
    return xla_max_pool(x, window, strides, padding)
  xp = jnp.pad(x, ((0, 0), *padding, (0, 0)), constant_values=-jnp.inf)
  return first_max_pool(xp, window, strides, overlapping_first_max)


def xla_max_pool(x, window, strides, padding=((0, 0), (0, 0))):
  """XLA's reduce_window max-pooling of NHWC `x` (padding counts as -inf), with autodiff's
  select-and-scatter gradient."""
  return jax.lax.reduce_window(x, np.array(-np.inf, x.dtype), jax.lax.max, (1, *window, 1),
                               (1, *strides, 1), ((0, 0), *padding, (0, 0)))


def tiles(x, window):
  """NHWC `x` cropped to whole non-overlapping windows, viewed as (N, Ho, kh, Wo, kw, C)."""
  (kh, kw), (n, h, w, c) = window, x.shape
  return x[:, :h // kh * kh, :w // kw * kw].reshape(n, h // kh, kh, w // kw, kw, c)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _max_pool_first_max_grad(y, window):
  return _window_argmax(y, window)[0]


def _window_argmax(y, window):
  """The maxima of the non-overlapping `window`s of NHWC `y` (cropped to whole windows) and
  the position of each window's first maximum in row-major order (int8)."""
  kh, kw = window
  y6 = tiles(y, window)
  out = y6.max(axis=(2, 4))  # a reduction: XLA does not recompute it inside its consumers
  return out, first_max([y6[:, :, i, :, j, :] for i in range(kh) for j in range(kw)], out)


def first_max(views, out):
  """Elementwise, the index (int8) of the first of `views` that equals their maximum `out`."""
  first = jnp.full(out.shape, len(views) - 1, jnp.int8)
  for k in reversed(range(len(views) - 1)):
    first = jnp.where(views[k] == out, jnp.int8(k), first)
  return first


def _max_pool_fwd(y, window):
  out, first = _window_argmax(y, window)
  return out, (first, y.shape)


def max_pool_bwd(window, residuals, dout):
  """The gradient goes to each window's first maximum, as XLA's select-and-scatter sends it;
  only the positions are kept from the forward pass, not the input."""
  first, (n, h, w, c) = residuals
  (kh, kw), (_, ho, wo, _) = window, first.shape
  position = (jnp.arange(kh, dtype=jnp.int8)[:, None] * kw
              + jnp.arange(kw, dtype=jnp.int8)).reshape(1, 1, kh, 1, kw, 1)
  dy = jnp.where(position == first[:, :, None, :, None], dout[:, :, None, :, None],
                 jnp.zeros((), dout.dtype)).reshape(n, ho * kh, wo * kw, c)
  return (jnp.pad(dy, ((0, 0), (0, h - ho * kh), (0, w - wo * kw), (0, 0))),)


_max_pool_first_max_grad.defvjp(_max_pool_fwd, max_pool_bwd)


MAX_WINDOW_POSITIONS = 127  # a window position is kept as an int8


def first_max_pool(x, window, strides, overlapping_first_max: bool = True):
  """Max-pooling of NHWC `x` (padded already), the gradient sent to each window's first
  maximum as select-and-scatter sends it: non-overlapping windows through a reshape
  (max_pool_bwd), overlapping ones one stride phase at a time (_strided_max_pool_bwd; without
  `overlapping_first_max`, the maximum of the strided views and autodiff's gradient).
  Windows of more positions than an int8 holds take autodiff's gradient of the maximum: of
  the tiles' where they do not overlap, else of XLA's reduce_window (the maximum of more than
  127 strided views took XLA ten seconds to compile with its gradient)."""
  window, strides = tuple(window), tuple(strides)
  too_many = math.prod(window) > MAX_WINDOW_POSITIONS
  if window == strides:
    return tiles(x, window).max(axis=(2, 4)) if too_many else _max_pool_first_max_grad(x, window)
  if too_many:
    return xla_max_pool(x, window, strides)
  if not overlapping_first_max:
    return functools.reduce(jnp.maximum, window_views(x, window, strides))
  return _strided_max_pool_first_max_grad(x, window, strides)


def window_views(x, window, strides):
  """The strided views (N, Ho, Wo, C) of each window position, in row-major order."""
  (kh, kw), (sh, sw) = window, strides
  out_hw = ((x.shape[1] - kh) // sh + 1, (x.shape[2] - kw) // sw + 1)
  return [view(x, i, j, strides, out_hw) for i in range(kh) for j in range(kw)]


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _strided_max_pool_first_max_grad(x, window, strides):
  return _strided_max_pool_fwd(x, window, strides)[0]


def _strided_max_pool_fwd(x, window, strides):
  """The maximum by XLA's reduce_window, which XLA computes once; written over the views
  (a running maximum, or a reduction over their stack, which XLA turns into one) it was
  recomputed inside the consumers, and _max_and_first's variadic reduction wrote the views
  of a convolution's output out first (AlexNet, throwaway in-process timing: the three
  forms' steps equal within noise). The positions come from the maximum, as
  _window_argmax's do."""
  out = xla_max_pool(x, window, strides)
  return out, (first_max(window_views(x, window, strides), out), x.shape)


def _strided_max_pool_bwd(window, strides, residuals, dout):
  """The input gradient, one stride phase at a time: the inputs at rows sh*m + p (p < sh)
  are element p + sh*t of window m - t, so each phase sums at most ceil(kh/sh) *
  ceil(kw/sw) shifted slices of the pooled gradient (where that element was the first
  maximum), and the phases interleave into the input's shape. This writes the gradient once,
  where autodiff of the views' maximum pads and adds kh*kw input-sized maps."""
  first, (n, h, w, c) = residuals
  (kh, kw), (sh, sw) = window, strides
  th, tw = -(-kh // sh), -(-kw // sw)  # the most windows that share an input, per axis
  _, ho, wo, _ = first.shape
  m, l = ho + th - 1, wo + tw - 1  # rows and columns of each phase
  pads = ((0, 0), (th - 1, th - 1), (tw - 1, tw - 1), (0, 0))
  dpad, fpad = jnp.pad(dout, pads), jnp.pad(first, pads, constant_values=-1)
  zero = jnp.zeros((), dout.dtype)

  def shifted(a, t, u):  # rows m - t, columns l - u of the pooled map (zero outside it)
    return jax.lax.slice(a, (0, th - 1 - t, tw - 1 - u, 0), (n, th - 1 - t + m, tw - 1 - u + l, c))

  phases = []
  for p in range(sh):
    row = []
    for q in range(sw):
      acc = jnp.zeros((n, m, l, c), dout.dtype)
      for t in range(max(0, -(-(kh - p) // sh))):
        for u in range(max(0, -(-(kw - q) // sw))):
          k = (p + sh * t) * kw + q + sw * u
          acc = acc + jnp.where(shifted(fpad, t, u) == k, shifted(dpad, t, u), zero)
      row.append(acc)
    phases.append(jnp.stack(row, axis=3))  # (N, m, l, sw, C)
  dx = jnp.stack(phases, axis=2).reshape(n, m * sh, l * sw, c)  # rows sh*m + p
  dx = dx[:, :h, :w]
  return (jnp.pad(dx, ((0, 0), (0, h - dx.shape[1]), (0, w - dx.shape[2]), (0, 0))),)


_strided_max_pool_first_max_grad.defvjp(_strided_max_pool_fwd, _strided_max_pool_bwd)


