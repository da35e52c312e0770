"""Each special layer against a direct implementation of its paper's formula."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from cnn_jax.models import layers as L
from cnn_jax.models import lenet_layers as LL
from cnn_jax.models.lenet import C3_TABLE


def lrn_reference(a, n=5, k=2.0, alpha=1e-4, beta=0.75, groups=1):
  """Krizhevsky et al. 2012, Sec. 3.3, summed literally, channel by channel."""
  a = np.asarray(a, np.float64)
  out = np.empty_like(a)
  channels = a.shape[-1]
  size = channels // groups
  for i in range(channels):
    g0 = (i // size) * size
    lo, hi = max(g0, i - n // 2), min(g0 + size - 1, i + n // 2)
    s = np.sum(a[..., lo:hi + 1] ** 2, axis=-1)
    out[..., i] = a[..., i] / (k + alpha * s) ** beta
  return out


@pytest.mark.parametrize("groups", [1, 2])
def test_lrn_matches_paper_formula(groups):
  # Large activations so that the alpha * sum term matters.
  a = jax.random.uniform(jax.random.key(0), (2, 3, 4, 12), minval=-60, maxval=60)
  got = L.LRN(groups=groups)(a)
  np.testing.assert_allclose(np.asarray(got), lrn_reference(a, groups=groups), rtol=1e-5)


def test_lrn_alpha_is_not_divided_by_n():
  a = jnp.full((1, 1, 1, 5), 100.0)
  # Centre channel sees all 5 maps: 100 / (2 + 1e-4 * 5 * 100^2)^0.75 = 100 / 7^0.75.
  np.testing.assert_allclose(float(L.LRN()(a)[0, 0, 0, 2]), 100 / 7 ** 0.75, rtol=1e-6)


def test_lrn_bfloat16_input_keeps_dtype():
  a = jnp.ones((1, 2, 2, 8), jnp.bfloat16)
  assert L.LRN()(a).dtype == jnp.bfloat16


def test_grouped_conv_equals_two_half_convolutions():
  rngs = nnx.Rngs(0)
  conv = L.Conv(8, 6, (3, 3), padding=((1, 1), (1, 1)), feature_group_count=2, rngs=rngs)
  x = jax.random.normal(jax.random.key(1), (2, 7, 7, 8))
  k, b = conv.kernel[...], conv.bias[...]  # kernel (3, 3, 4, 6): outputs 0-2 see inputs 0-3

  def half(xh, kh, bh):
    return jax.lax.conv_general_dilated(xh, kh, (1, 1), ((1, 1), (1, 1)),
                                        dimension_numbers=("NHWC", "HWIO", "NHWC")) + bh

  expected = jnp.concatenate([half(x[..., :4], k[..., :3], b[:3]),
                              half(x[..., 4:], k[..., 3:], b[3:])], axis=-1)
  np.testing.assert_allclose(conv(x), expected, rtol=1e-5, atol=1e-5)


def test_partial_conv_follows_table_one():
  rngs = nnx.Rngs(0)
  c3 = LL.PartialConv(6, C3_TABLE, 5, rngs=rngs)
  x = jax.random.normal(jax.random.key(2), (1, 14, 14, 6))
  # Which input maps does each output map depend on? Read it off the Jacobian.
  grads = jax.jacrev(lambda v: c3(v)[0, 4, 4, :])(x)  # (16, 1, 14, 14, 6)
  seen = [tuple(int(i) for i in np.nonzero(np.abs(np.asarray(g)).sum(axis=(0, 1, 2)))[0])
          for g in grads]
  assert seen == [tuple(sorted(t)) for t in C3_TABLE]
  # And it is a plain convolution with the dense, zero-filled kernel.
  dense = jax.lax.conv_general_dilated(x, c3.dense_kernel(), (1, 1), "VALID",
                                       dimension_numbers=("NHWC", "HWIO", "NHWC"))
  np.testing.assert_allclose(c3(x), dense + c3.bias[...], rtol=1e-5, atol=1e-6)


def test_subsampling_is_coefficient_times_window_sum_plus_bias():
  s2 = LL.Subsampling(3, rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(3), (2, 4, 6, 3))
  window_sum = np.asarray(x).reshape(2, 2, 2, 3, 2, 3).sum(axis=(2, 4))
  expected = window_sum * np.asarray(s2.coefficient[...]) + np.asarray(s2.bias[...])
  np.testing.assert_allclose(s2(x), expected, rtol=1e-5, atol=1e-6)


def test_rbf_returns_minus_squared_euclidean_distance():
  rbf = LL.RBF(84, 10)
  centres = np.asarray(rbf.centres[...])
  assert set(np.unique(centres)) == {-1.0, 1.0}
  x = jax.random.normal(jax.random.key(4), (3, 84))
  expected = -((np.asarray(x)[:, :, None] - centres[None]) ** 2).sum(axis=1)
  np.testing.assert_allclose(rbf(x), expected, rtol=1e-4, atol=1e-3)


def test_scaled_tanh_constants():
  """LeCun et al. 1998, Appendix A: A = 1.7159, S = 2/3, so that f(1) = 1 and f(-1) = -1."""
  np.testing.assert_allclose(L.scaled_tanh(jnp.array([1.0, -1.0])), [1.0, -1.0], atol=1e-4)


def test_lecun98_init_range():
  w = L.lecun98_uniform(jax.random.key(0), (5, 5, 1, 6))  # fan-in 25: U(-0.096, 0.096)
  assert float(jnp.max(jnp.abs(w))) <= 2.4 / 25
  assert float(jnp.max(jnp.abs(w))) > 0.9 * 2.4 / 25


def test_pool_overlapping_and_not():
  x = jnp.arange(25.0).reshape(1, 5, 5, 1)
  assert L.Pool(3, 2)(x).shape == (1, 2, 2, 1)
  assert float(L.Pool(3, 2)(x)[0, 0, 0, 0]) == 12.0  # max of rows 0-2, cols 0-2
  assert L.Pool(2, 2)(x).shape == (1, 2, 2, 1)
  assert float(L.Pool(2, 2, "avg")(x)[0, 0, 0, 0]) == (0 + 1 + 5 + 6) / 4
