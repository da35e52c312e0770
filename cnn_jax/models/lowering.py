"""How convolutions and max-pooling are computed: the same numbers, by two routes.

'xla' hands XLA one convolution (and one reduce_window) and lets autodiff derive the backward
pass. On GPUs and TPUs that is the fast route (cuDNN, the TPU's convolution units).

'matmul' is for XLA's CPU backend, where the forward convolution is a fast Eigen kernel but the
convolutions autodiff derives for the kernel gradient are not (often 5-20x slower than the
forward pass), and the backward pass of reduce_window max (select-and-scatter) is a scalar loop:
  - the kernel gradient is one matrix product of the input patches (im2col) with the output
    gradient, sum_{n,y,x} patch(n,y,x)^T dy(n,y,x), for the layers where that was measured to
    win (`patches_win`: few input maps, or large maps); the forward pass and the input gradient
    stay XLA convolutions;
  - a grouped convolution (AlexNet's two towers) is one plain convolution per group;
  - max-pooling is the elementwise maximum of the kh*kw strided views of the input, which XLA
    fuses, forward and backward, into one loop.

'auto' is 'matmul' on the CPU backend and 'xla' elsewhere. `python run.py bench` measures both.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

LOWERINGS = ("auto", "xla", "matmul")
_DIMS = ("NHWC", "HWIO", "NHWC")


def resolve(lowering: str) -> str:
  """'auto' -> 'matmul' on CPU, 'xla' on GPU and TPU."""
  if lowering not in LOWERINGS:
    raise ValueError(f"unknown lowering {lowering!r}; use one of {LOWERINGS}")
  if lowering == "auto":
    return "matmul" if jax.default_backend() == "cpu" else "xla"
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


def patches(x, kernel_shape, strides, padding, out_hw):
  """im2col: (N, Ho, Wo, kh*kw*C) with the (i, j, c) order of an HWIO kernel's rows."""
  kh, kw = kernel_shape
  xp = jnp.pad(x, ((0, 0), *padding, (0, 0)))
  views = [_view(xp, i, j, strides, out_hw) for i in range(kh) for j in range(kw)]
  return jnp.concatenate(views, axis=-1) if len(views) > 1 else views[0]


def patches_win(kernel_shape, out_hw) -> bool:
  """Whether the im2col kernel gradient beats XLA's on its CPU backend, by measurement
  (`python run.py bench` on 2 cores; dw alone, ms, XLA against im2col): few input maps
  (28x28x1 -> 32: 12.4 against 4.1; AlexNet's 11x11/4 stem: 472 against 252), or few patch
  columns over a large map (VGG 112x112x64 -> 128: 870 against 302). With many maps over
  small ones XLA's wins (14x14x32 -> 64: 20 against 49; 27x27x96 -> 256, 5x5: 285 against 408).
  """
  kh, kw, cg, _ = kernel_shape
  return cg <= 4 or (kh * kw * cg <= 576 and out_hw[0] * out_hw[1] >= 3000)


def kernel_gradient(x, dy, kernel_shape, strides, padding):
  """d loss / d kernel (kh, kw, C, O) as one matrix product: patches^T dy."""
  kh, kw, c, o = kernel_shape
  n, ho, wo, _ = dy.shape
  p = patches(x, (kh, kw), strides, padding, (ho, wo)).reshape(n * ho * wo, kh * kw * c)
  return jnp.dot(p.T, dy.reshape(n * ho * wo, o), preferred_element_type=jnp.float32
                 ).reshape(kh, kw, c, o).astype(dy.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv_matmul(x, kernel, strides, padding):
  return _conv(x, kernel, strides, padding, 1)


def _conv_matmul_fwd(x, kernel, strides, padding):
  return _conv(x, kernel, strides, padding, 1), (x, kernel)


def _conv_matmul_bwd(strides, padding, residuals, dy):
  x, kernel = residuals
  _, vjp = jax.vjp(lambda v, k: _conv(v, k, strides, padding, 1), x, kernel)
  dx, dk = vjp(dy)  # XLA drops dk's computation when it is not used
  if patches_win(kernel.shape, dy.shape[1:3]):
    dk = kernel_gradient(x, dy, kernel.shape, strides, padding).astype(kernel.dtype)
  return dx, dk


_conv_matmul.defvjp(_conv_matmul_fwd, _conv_matmul_bwd)


def conv2d(x, kernel, strides=(1, 1), padding="VALID", groups: int = 1, lowering="xla"):
  """A 2-D convolution, NHWC input and HWIO kernel, `groups` feature groups."""
  strides = tuple(int(s) for s in strides)
  padding = _padding(padding, kernel.shape[:2], strides, x.shape[1:3])
  if resolve(lowering) == "xla":
    return _conv(x, kernel, strides, padding, groups)
  if groups > 1:  # XLA's CPU grouped convolution is slow: one plain convolution per group
    xs = jnp.split(x, groups, axis=-1)
    ks = jnp.split(kernel, groups, axis=-1)
    return jnp.concatenate([_conv_matmul(a, k, strides, padding) for a, k in zip(xs, ks)],
                           axis=-1)
  return _conv_matmul(x, kernel, strides, padding)


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
    xp = xp[:, :ho * sh, :wo * sw]
    return xp.reshape(n, ho, kh, wo, kw, c).max(axis=(2, 4))
  views = [_view(xp, i, j, strides, (ho, wo)) for i in range(kh) for j in range(kw)]
  return functools.reduce(jnp.maximum, views)
