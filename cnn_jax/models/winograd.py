"""Winograd's minimal filtering F(2x2, 3x3) for 3x3 stride-1 convolutions: the CPU route's
value and input gradient of such a convolution with fewer multiplications (rewrite
'winograd').

Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks" (CVPR 2016), Sec. 4: the
output is cut into 2x2 tiles, each computed from the 4x4 input tile around it as

    Y = A^T [ (G g G^T) * (B^T d B) ] A

with `*` elementwise over the 16 positions of the transformed tile and summed over the input
channels, which makes it 16 matrix products (transformed input tiles x channels, by
channels x output channels) where the direct convolution has 9 products of four times the
rows: 16/36 of the multiplications. The transforms (B, G, A below, the paper's Sec. 4.1) are
linear, so the gradients of Y are products of the same form: the input gradient is the
convolution of the output gradient with the kernel turned by 180 degrees (computed here by
`conv3x3` too), the kernel gradient a product of the transformed input with the output
gradient's tiles. In float32 the values agree with the direct convolution to about
1e-6 of their scale (tests/test_winograd.py).

On XLA's CPU backend F(2x2, 3x3) is faster than XLA's direct convolution for the forward
pass and the input gradient only on some shapes (`applies`), and for the kernel gradient on
none measured (`python benchmarks/winograd.py`, shape by shape): `conv` takes the value and
the input gradient through F(2x2, 3x3) and leaves the kernel gradient to XLA.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

# Lavin and Gray, Sec. 4.1: the input (B^T), kernel (G) and output (A^T) transforms
B_T = ((1, 0, -1, 0), (0, 1, 1, 0), (0, -1, 1, 0), (0, 1, 0, -1))
G = np.array(((1, 0, 0), (.5, .5, .5), (.5, -.5, .5), (0, 0, 1)), np.float32)
A_T = ((1, 1, 1, 0), (0, 1, -1, -1))

_DIMS = ("NHWC", "HWIO", "NHWC")

# Where F(2x2, 3x3) is used (`applies`), from `python benchmarks/winograd.py`: convolutions
# with at least MIN_MAPS input and output maps over MIN_SIDE to MAX_SIDE rows and columns
# (VGG's 56x56 and 28x28 stages). With fewer maps the transforms' memory traffic outweighs
# the products saved (VGG's 224x224 and 112x112 stages); on maps of 14x14 and less
# (AlexNet's 13x13, VGG's last stage) the products are too short to gain.
MIN_MAPS = 128
MIN_SIDE, MAX_SIDE = 28, 56


def applies(x_shape, kernel_shape, strides, groups: int) -> bool:
  """Whether `conv` is used for a convolution: a 3x3 kernel, stride 1, one group, and the
  bounds above."""
  kh, kw, ci, co = kernel_shape
  h, w = x_shape[1:3]
  return ((kh, kw) == (3, 3) and tuple(strides) == (1, 1) and groups == 1
          and min(ci, co) >= MIN_MAPS and MIN_SIDE <= min(h, w) <= max(h, w) <= MAX_SIDE)


def _combine(coefficients, arrays):
  """sum(c * a) over the nonzero coefficients, +-1 as an addition or a subtraction."""
  out = None
  for c, a in zip(coefficients, arrays):
    if c == 0:
      continue
    term = a if c == 1 else (-a if c == -1 else c * a)
    out = term if out is None else out + term
  return out


def conv3x3(x, kernel, padding):
  """The 3x3 stride-1 convolution of NHWC `x` with the HWIO `kernel` and explicit
  ((top, bottom), (left, right)) `padding`, computed by F(2x2, 3x3)."""
  n, h, w, ci = x.shape
  co = kernel.shape[-1]
  (pt, pb), (pl, pr) = padding
  ho, wo = h + pt + pb - 2, w + pl + pr - 2
  th, tw = -(-ho // 2), -(-wo // 2)  # tiles; an odd output gets one row or column extra
  xp = jax.lax.pad(x, jnp.zeros((), x.dtype),
                   ((0, 0, 0), (pt, 2 * th + 2 - h - pt, 0), (pl, 2 * tw + 2 - w - pl, 0),
                    (0, 0, 0)))
  # d[i][j]: element (i, j) of every 4x4 input tile, tiles overlapping by 2
  d = [[xp[:, i:i + 2 * th:2, j:j + 2 * tw:2, :] for j in range(4)] for i in range(4)]
  rows = [[_combine(B_T[a], [d[i][j] for i in range(4)]) for j in range(4)] for a in range(4)]
  v = jnp.stack([_combine(B_T[b], rows[a]) for a in range(4) for b in range(4)])
  u = jnp.einsum("ai,ijco,bj->abco", G.astype(kernel.dtype), kernel, G.astype(kernel.dtype))
  m = jnp.einsum("tpc,tco->tpo", v.reshape(16, n * th * tw, ci), u.reshape(16, ci, co),
                 preferred_element_type=x.dtype).reshape(4, 4, n, th, tw, co)
  cols = [[_combine(A_T[r], [m[a, b] for a in range(4)]) for b in range(4)] for r in range(2)]
  y = jnp.stack([jnp.stack([_combine(A_T[s], cols[r]) for s in range(2)], axis=3)
                 for r in range(2)], axis=2)  # (n, th, 2, tw, 2, co)
  return y.reshape(n, 2 * th, 2 * tw, co)[:, :ho, :wo]


def direct(x, kernel, padding):
  """XLA's convolution, stride 1."""
  return jax.lax.conv_general_dilated(x, kernel, (1, 1), padding, dimension_numbers=_DIMS)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv(x, kernel, padding):
  """The 3x3 stride-1 convolution and its input gradient through F(2x2, 3x3), its kernel
  gradient XLA's. `padding` is a tuple of tuples (hashable)."""
  return conv3x3(x, kernel, padding)


def _fwd(x, kernel, padding):
  return conv3x3(x, kernel, padding), (x, kernel)


def _bwd(padding, residuals, dy):
  x, kernel = residuals
  _, dk = jax.vjp(lambda k: direct(x, k, padding), kernel)
  return input_grad(dy, kernel, padding), dk(dy)[0]


def input_grad(dy, kernel, padding):
  """The input gradient of the 3x3 stride-1 convolution with `padding`: the convolution of
  the output gradient `dy` with the kernel turned by 180 degrees, its input and output maps
  swapped, and the padding's complement to 2, through F(2x2, 3x3). (Autodiff's transpose of
  conv3x3 scatters each tile element back as a separate pad, which XLA does not fuse.)"""
  (pt, pb), (pl, pr) = padding
  flipped = jnp.swapaxes(kernel[::-1, ::-1], 2, 3)
  return conv3x3(dy, flipped, ((2 - pt, 2 - pb), (2 - pl, 2 - pr)))


conv.defvjp(_fwd, _bwd)
