"""Winograd's F(2x2, 3x3) (models/winograd.py) against XLA's direct convolution."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cnn_jax.models import lowering
from cnn_jax.models import winograd as W


def close(a, b, rtol):
  np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * float(jnp.abs(b).max()))


PADDINGS = [((1, 1), (1, 1)), ((0, 0), (0, 0)), ((2, 0), (1, 2))]


@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("hw", [(8, 8), (7, 10), (3, 3)])  # even, odd (a tile cut off), one tile
def test_the_tiled_convolution_equals_xla(padding, hw):
  keys = jax.random.split(jax.random.key(0), 2)
  x = jax.random.normal(keys[0], (2, *hw, 5))
  k = jax.random.normal(keys[1], (3, 3, 5, 7))
  want = W.direct(x, k, padding)
  got = jax.jit(W.conv3x3, static_argnums=2)(x, k, padding)
  assert got.shape == want.shape
  close(got, want, 1e-5)


@pytest.mark.parametrize("padding", PADDINGS)
def test_values_and_gradients_equal_xla(padding):
  keys = jax.random.split(jax.random.key(1), 3)
  x = jax.random.normal(keys[0], (3, 9, 6, 8))
  k = jax.random.normal(keys[1], (3, 3, 8, 4))
  weight = jax.random.normal(keys[2], W.direct(x, k, padding).shape)

  def loss(conv):
    return lambda x, k: jnp.sum(conv(x, k) * weight)

  ours = loss(lambda x, k: W.conv(x, k, padding))
  plain = loss(lambda x, k: W.direct(x, k, padding))
  close(jax.jit(W.conv, static_argnums=2)(x, k, padding), W.direct(x, k, padding), 1e-5)
  dx, dk = jax.jit(jax.grad(ours, (0, 1)))(x, k)
  want_dx, want_dk = jax.grad(plain, (0, 1))(x, k)
  close(dx, want_dx, 1e-5)
  np.testing.assert_array_equal(dk, want_dk)  # XLA's kernel gradient itself


def test_where_it_is_used():
  n, mid = 8, (8, 28, 28, 256)
  assert W.applies(mid, (3, 3, 256, 512), (1, 1), 1)
  assert W.applies((n, 56, 56, 128), (3, 3, 128, 256), (1, 1), 1)
  for x_shape, k_shape, strides, groups in [
      ((n, 224, 224, 3), (3, 3, 3, 64), (1, 1), 1),       # VGG's stem: 3 maps in
      ((n, 112, 112, 64), (3, 3, 64, 128), (1, 1), 1),    # 64 maps in
      ((n, 56, 56, 256), (3, 3, 256, 64), (1, 1), 1),     # 64 maps out
      ((n, 14, 14, 512), (3, 3, 512, 512), (1, 1), 1),    # VGG's last stage
      ((n, 13, 13, 192), (3, 3, 192, 384), (1, 1), 1),    # AlexNet's 13x13
      (mid, (3, 3, 256, 512), (2, 2), 1), (mid, (5, 5, 256, 512), (1, 1), 1),
      (mid, (3, 3, 128, 512), (1, 1), 2)]:
    assert not W.applies(x_shape, k_shape, strides, groups)


def test_the_cpu_route_uses_it_where_the_plan_says():
  x = jnp.zeros((1, 28, 28, 128))
  k = jnp.zeros((3, 3, 128, 128))
  pads = ((1, 1), (1, 1))

  def jaxpr(winograd):
    return str(jax.make_jaxpr(lambda x, k: lowering.conv2d(x, k, (1, 1), pads,
                                                           winograd=winograd))(x, k))
  assert "custom_vjp_call" in jaxpr(True) and "conv_general_dilated" not in jaxpr(True)
  assert "custom_vjp_call" not in jaxpr(False) and "conv_general_dilated" in jaxpr(False)
