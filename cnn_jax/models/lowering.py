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
  - max-pooling keeps from its forward pass the position (int8) of each window's first
    maximum and sends the gradient there, as select-and-scatter does, without
    select-and-scatter's scalar loop (small CNN, pool1 forward and backward: 56 ms against
    13 ms at batch 128): for non-overlapping windows through a reshape, for overlapping ones
    (AlexNet's 3x3 stride 2) one stride phase at a time (_strided_max_pool_bwd; AlexNet's
    train step, against the maximum of strided views and its autodiff: torchvision 0.83 to
    0.92 of the time, the paper's two towers 0.81 to 0.84, benchmarks/lowering_ab.py);
  - conv -> ReLU -> max-pool (unpadded windows) is computed pool-first,
    relu(max_pool(conv(x)) + bias): the same values (a per-channel bias and ReLU are
    monotone, so they commute with the maximum), with the bias, the ReLU and their gradients
    on the pooled map (a quarter of the size for 2x2 windows), and the pooling gradient sent
    to each window's first maximum (small CNN step: 36.3 -> 33.2 ms,
    benchmarks/lowering_ab.py);
  - where that convolution is shallow (stride 1, at most 18 inputs per output: the small
    CNN's conv1), it is computed inside the pooling, from strided views of the input, and the
    full-resolution map is never written (small CNN step: 0.78 to 0.89 of the time);
  - the bias and ReLU before a non-overlapping max-pool are computed inside the pooling
    reduction, and after a convolution with no max-pool as a reduction
    (bias_relu_as_reduction), so that XLA computes the activation once rather than inside
    the transposed copy for the next kernel gradient (small CNN 0.961, VGG A 0.969 and
    0.948 of the step);
  - a convolution whose kernel spans its whole input (LeNet-5's C5) is a matrix product
    (LeNet-5's step 0.829 at batch 128).
Other convolutions, and the gradients of all convolutions, are XLA's either way: its kernel
gradients beat an im2col matrix product on every shape measured (README, "Performance");
that product contracts over N*H*W, a shape the CPU's matrix kernels handle slowly.

'auto' is 'cpu' on the CPU backend and 'xla' elsewhere. `python run.py bench --peer_lowering`
measures one against the other.
"""

from __future__ import annotations

import functools
import math

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
  if groups == 1 and covers_input(x.shape, kernel.shape, padding) and WHOLE_INPUT_AS_DOT:
    return _whole_input_product(x, kernel)
  if groups == 1:
    return _conv(x, kernel, strides, padding, 1)
  xs = jnp.split(x, groups, axis=-1)
  ks = jnp.split(kernel, groups, axis=-1)
  return jnp.concatenate([_conv(a, k, strides, padding, 1) for a, k in zip(xs, ks)], axis=-1)


WHOLE_INPUT_AS_DOT = True  # see _whole_input_product; benchmarks/lowering_ab.py switches it off


def covers_input(x_shape, kernel_shape, padding) -> bool:
  """Whether the kernel spans the whole unpadded input: one output position (LeNet-5's C5,
  Sec. II-B; a fully convolutional head's first layer), which is a dense layer."""
  return (tuple(x_shape[1:3]) == tuple(kernel_shape[:2])
          and not any(map(any, padding)))


def _whole_input_product(x, kernel):
  """conv2d where `covers_input`: the flattened input times the flattened kernel, both in
  (row, column, channel) order. XLA's CPU convolution computes the input gradient as a
  convolution of the 1x1 output gradient padded to the kernel's size: LeNet-5's C5 at batch
  128, input and kernel gradients 2.89 ms as convolutions against 0.30 ms as products (a
  throwaway timing script). Step with against without (benchmarks/lowering_ab.py
  --rewrite=whole_input_dot): LeNet-5 0.829 at batch 128, 0.847 at 64."""
  n, (kh, kw, ci, co) = x.shape[0], kernel.shape
  y = jnp.dot(x.reshape(n, kh * kw * ci), kernel.reshape(kh * kw * ci, co),
              preferred_element_type=x.dtype)
  return y.reshape(n, 1, 1, co)


@jax.custom_vjp
def _bias_add_product_grad(y, bias):
  return y + bias


def _bias_add_fwd(y, bias):
  return y + bias, None


def _bias_add_bwd(_, dy):
  return dy, _bias_grad(dy)


def _bias_grad(dy):
  """The sum of `dy` over all but its last axis, as a matrix product with ones (see bias_add)."""
  flat = dy.reshape(-1, dy.shape[-1])
  ones = jnp.ones((1, flat.shape[0]), dy.dtype)
  return jnp.dot(ones, flat, preferred_element_type=jnp.float32)[0].astype(dy.dtype)


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
  return _first_max_pool(xp, window, strides)


def _tiles(x, window):
  """NHWC `x` cropped to whole non-overlapping windows, viewed as (N, Ho, kh, Wo, kw, C)."""
  (kh, kw), (n, h, w, c) = window, x.shape
  return x[:, :h // kh * kh, :w // kw * kw].reshape(n, h // kh, kh, w // kw, kw, c)


def pools_first(window, strides, padding) -> bool:
  """Whether max-pooling with this geometry can be computed pool-first (max_pool_bias_relu):
  no padding, and at most MAX_WINDOW_POSITIONS positions in a window."""
  unpadded = padding == "VALID" if isinstance(padding, str) else not any(map(any, padding))
  return unpadded and math.prod(window) <= MAX_WINDOW_POSITIONS


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _max_pool_first_max_grad(y, window):
  return _window_argmax(y, window)[0]


def _window_argmax(y, window):
  """The maxima of the non-overlapping `window`s of NHWC `y` (cropped to whole windows) and
  the position of each window's first maximum in row-major order (int8)."""
  kh, kw = window
  y6 = _tiles(y, window)
  out = y6.max(axis=(2, 4))  # a reduction: XLA does not recompute it inside its consumers
  return out, _first_max([y6[:, :, i, :, j, :] for i in range(kh) for j in range(kw)], out)


def _first_max(views, out):
  """Elementwise, the index (int8) of the first of `views` that equals their maximum `out`."""
  first = jnp.full(out.shape, len(views) - 1, jnp.int8)
  for k in reversed(range(len(views) - 1)):
    first = jnp.where(views[k] == out, jnp.int8(k), first)
  return first


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


def max_pool_bias_relu(y, bias, window, strides):
  """relu(max_pool(y + bias)) for unpadded windows (pools_first), computed as
  relu(max_pool(y) + bias): the same values, since adding a per-channel bias and ReLU are
  monotone and so commute with the maximum. `bias` may be None.

  For non-overlapping windows within the int8 bound the bias is added inside the pooling
  reduction and the ReLU is its initial value (0), so the activation is the reduction's
  output: XLA does not recompute a reduction inside its consumers, whereas an elementwise
  bias and ReLU after it were recomputed inside the transposed copy that feeds the next
  convolution's kernel gradient (3.5 to 3.9 ms of the small CNN's step in a jax.profiler
  trace; the copy alone, 0.3 ms). Step with against without (benchmarks/lowering_ab.py
  --rewrite=relu_in_reduction): small CNN 0.961, VGG A 0.969. Overlapping windows keep the
  ReLU after XLA's reduce_window: with the bias inside it, torchvision's AlexNet was slower
  (1.08)."""
  window, strides = tuple(window), tuple(strides)
  if window != strides or math.prod(window) > MAX_WINDOW_POSITIONS or not RELU_IN_REDUCTION:
    return bias_relu(_first_max_pool(y, window, strides), bias)
  if bias is None:
    bias = jnp.zeros(y.shape[-1:], y.dtype)
  return _pool_bias_relu(y, bias, window)


RELU_IN_REDUCTION = True  # see max_pool_bias_relu; benchmarks/lowering_ab.py switches it off


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _pool_bias_relu(y, bias, window):
  return _pool_bias_relu_fwd(y, bias, window)[0]


def _pool_bias_relu_fwd(y, bias, window):
  tiles = _tiles(y + bias, window)  # the bias is fused into the reduction, not written
  out = jax.lax.reduce(tiles, np.array(0, y.dtype), jax.lax.max, (2, 4))
  views = [tiles[:, :, i, :, j, :] for i in range(window[0]) for j in range(window[1])]
  # where out is 0 no view need equal it, but the ReLU passes no gradient there
  return out, (_first_max(views, out), out, y.shape)


def _relu_grad(out, dout):
  """The gradient through a ReLU from its output: none where it is 0 (as jax.nn.relu)."""
  return jnp.where(out > 0, dout, jnp.zeros((), dout.dtype))


def _pool_bias_relu_bwd(window, residuals, dout):
  first, out, shape = residuals
  g = _relu_grad(out, dout)
  (dy,) = _max_pool_bwd(window, (first, shape), g)
  return dy, _bias_grad(g)


_pool_bias_relu.defvjp(_pool_bias_relu_fwd, _pool_bias_relu_bwd)


MAX_WINDOW_POSITIONS = 127  # a window position is kept as an int8


def _first_max_pool(x, window, strides):
  """Max-pooling of NHWC `x` (padded already), the gradient sent to each window's first
  maximum as select-and-scatter sends it: non-overlapping windows through a reshape
  (_max_pool_bwd), overlapping ones one stride phase at a time (_strided_max_pool_bwd).
  Windows of more positions than an int8 holds take autodiff's gradient of the maximum."""
  window, strides = tuple(window), tuple(strides)
  if math.prod(window) > MAX_WINDOW_POSITIONS:
    if window == strides:
      return _tiles(x, window).max(axis=(2, 4))
    return functools.reduce(jnp.maximum, _window_views(x, window, strides))
  if window == strides:
    return _max_pool_first_max_grad(x, window)
  return _strided_max_pool_first_max_grad(x, window, strides)


def _window_views(x, window, strides):
  """The strided views (N, Ho, Wo, C) of each window position, in row-major order."""
  (kh, kw), (sh, sw) = window, strides
  out_hw = ((x.shape[1] - kh) // sh + 1, (x.shape[2] - kw) // sw + 1)
  return [_view(x, i, j, strides, out_hw) for i in range(kh) for j in range(kw)]


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
  out = jax.lax.reduce_window(x, np.array(-np.inf, x.dtype), jax.lax.max, (1, *window, 1),
                              (1, *strides, 1), "VALID")
  return out, (_first_max(_window_views(x, window, strides), out), x.shape)


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


def bias_relu(pooled, bias):
  """relu(pooled + bias), the bias gradient a matrix product (as bias_add's); `bias` may be
  None."""
  if bias is not None:
    pooled = _bias_add_product_grad(pooled, bias)
  return jax.nn.relu(pooled)


CONV_RELU_AS_REDUCTION = True  # benchmarks/lowering_ab.py switches it off


@jax.custom_vjp
def bias_relu_as_reduction(y, bias):
  """relu(y + bias) for a convolution's output `y`, as a max-reduction over the pair
  (y + bias, 0), so that XLA computes it once.

  XLA's CPU backend recomputes an elementwise producer inside each of its consumers, and one
  consumer of a convolution's activation is the transposed copy that feeds the next
  convolution's kernel gradient. XLA's CPU transposes are 5 to 6 times slower with anything
  fused into them: an 8x56x56x256 map (VGG's conv3_1) took 4.3 ms to transpose alone against
  22.6 to 26.8 ms with a bias, a ReLU or both (a throwaway timing script); VGG A's step spent
  44 ms in that one copy. A reduction is not recomputed in its consumers. Step with against
  without (benchmarks/lowering_ab.py --rewrite=conv_relu): VGG A 0.948, torchvision's
  AlexNet 0.968. The pair written as (y + bias, y + bias) is simplified back into the
  elementwise form. After overlapping max-pools, bias_relu keeps the elementwise form (this
  form: torchvision's AlexNet 1.035)."""
  return _bias_relu_as_reduction_fwd(y, bias)[0]


def _bias_relu_as_reduction_fwd(y, bias):
  pre = y + bias
  out = jax.lax.reduce(jnp.stack([pre, jnp.zeros_like(pre)]), np.array(0, y.dtype),
                       jax.lax.max, (0,))
  return out, out


def _bias_relu_as_reduction_bwd(out, dout):
  g = _relu_grad(out, dout)
  return g, _bias_grad(g)


bias_relu_as_reduction.defvjp(_bias_relu_as_reduction_fwd, _bias_relu_as_reduction_bwd)


SHALLOW_FAN_IN = 18  # inputs per output (kh * kw * in_features); see conv_max_pool_bias_relu


def shallow(kernel_shape, strides, groups: int) -> bool:
  """Whether a convolution is computed inside its max-pool (conv_max_pool_bias_relu): stride 1,
  one group, and at most SHALLOW_FAN_IN inputs per output."""
  kh, kw, ci, _ = kernel_shape
  return tuple(strides) == (1, 1) and groups == 1 and kh * kw * ci <= SHALLOW_FAN_IN


def conv_max_pool_bias_relu(x, kernel, bias, padding, window):
  """relu(max_pool(conv(x, kernel)) + bias) for a `shallow` convolution and non-overlapping
  unpadded windows (pools_first), without the full-resolution convolution output. `bias`
  may be None.

  The outputs at position (a, b) of every window are sums of kh*kw*in_features strided views
  of the padded input, each times one kernel entry (float32), plus the bias; one variadic
  reduction over the window positions, initialised at 0 (the ReLU; see max_pool_bias_relu),
  gives the activation and the first position that attains the maximum (int8). XLA's CPU
  convolution writes and rereads the whole map instead, and with so few inputs per output
  that traffic is most of its cost. The gradient goes to each window's first maximum, as
  select-and-scatter sends it; the kernel's and the input's gradients are XLA's.

  Forward and kernel gradient, batch 64, 28x28 inputs (`python benchmarks/conv_max_pool.py`):
  1.8 to 4.3x faster than the convolution then pool-first at 4 to 18 inputs per output; 2.1
  to 3.4x slower at 20 to 27, where XLA stops vectorising the reduction: SHALLOW_FAN_IN."""
  padding = _padding(padding, kernel.shape[:2], (1, 1), x.shape[1:3])
  if bias is None:
    bias = jnp.zeros(kernel.shape[-1:], x.dtype)
  if not RELU_IN_REDUCTION:
    return jax.nn.relu(_conv_max_pool(x, kernel, bias, padding, tuple(window), False))
  return _conv_max_pool(x, kernel, bias, padding, tuple(window), True)


def _pooled_shapes(x_shape, kernel_shape, padding, window):
  """(the convolution's output shape, the pooled (Ho, Wo))."""
  (n, h, w, _), (kh, kw, _, co) = x_shape, kernel_shape
  hc, wc = h + sum(padding[0]) - kh + 1, w + sum(padding[1]) - kw + 1
  return (n, hc, wc, co), (hc // window[0], wc // window[1])


def _tap_views(x, kernel_shape, padding, window):
  """Per window position (a, b), the strided views (N, Ho, Wo) of the padded input (float32)
  that the kernel's entries (i, j, c) multiply, in the kernel's row-major order."""
  kh, kw, ci, _ = kernel_shape
  xp = jnp.pad(x, ((0, 0), *padding, (0, 0))).astype(jnp.float32)
  _, out_hw = _pooled_shapes(x.shape, kernel_shape, padding, window)
  return [[_view(xp, a + i, b + j, window, out_hw)[..., c]
           for i in range(kh) for j in range(kw) for c in range(ci)]
          for a in range(window[0]) for b in range(window[1])]


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def _conv_max_pool(x, kernel, bias, padding, window, relu):
  return _conv_max_pool_fwd(x, kernel, bias, padding, window, relu)[0]


def _conv_max_pool_fwd(x, kernel, bias, padding, window, relu):
  k = kernel.astype(jnp.float32).reshape(-1, kernel.shape[-1])
  b = bias.astype(jnp.float32)
  views = [sum(v[..., None] * k[t] for t, v in enumerate(taps)) + b
           for taps in _tap_views(x, kernel.shape, padding, window)]
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
    dout = _relu_grad(out, dout)
  conv_shape, _ = _pooled_shapes(x.shape, kernel.shape, padding, window)
  (dy,) = _max_pool_bwd(window, (first, conv_shape), dout)
  _, conv_vjp = jax.vjp(lambda x, k: _conv(x, k, (1, 1), padding, 1), x, kernel)
  # XLA drops dx where x needs no gradient (a network's input)
  return (*conv_vjp(dy), _bias_grad(dout))


_conv_max_pool.defvjp(_conv_max_pool_fwd, _conv_max_pool_bwd)
