"""Output shapes at each paper's input size, and a real forward pass of every configuration at
a reduced size."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import ALL_CONFIGS, abstract_logits, build_and_apply, layer, model_cfg, summary


@pytest.mark.parametrize("name,variant", ALL_CONFIGS)
def test_logits_shape_at_paper_size(name, variant):
  cfg = model_cfg(name, variant)
  out = abstract_logits(cfg, batch=3)
  assert out.shape == (3, cfg.num_classes)
  assert out.dtype == jnp.float32


def test_alexnet_paper_feature_maps():
  """Krizhevsky et al. Fig. 2: 55x55x96, 27x27x256, 13x13x384, 13x13x384, 13x13x256, 6x6x256."""
  s = summary("alexnet", "paper")
  shapes = {n: layer(s, n).output_shape for n in ("conv1", "conv2", "conv3", "conv4", "conv5",
                                                   "pool5", "fc6")}
  assert shapes == {"conv1": (55, 55, 96), "conv2": (27, 27, 256), "conv3": (13, 13, 384),
                    "conv4": (13, 13, 384), "conv5": (13, 13, 256), "pool5": (6, 6, 256),
                    "fc6": (4096,)}


@pytest.mark.parametrize("variant", ["A", "A-LRN", "B", "C", "D", "E"])
def test_vgg_feature_maps(variant):
  s = summary("vgg", variant)
  assert [layer(s, f"pool{i}").output_shape for i in range(1, 6)] == [
      (112, 112, 64), (56, 56, 128), (28, 28, 256), (14, 14, 512), (7, 7, 512)]


def test_lenet5_feature_maps():
  s = summary("lenet5", "paper")
  assert [layer(s, n).output_shape for n in ("c1", "s2", "c3", "s4", "c5", "f6", "output")] == [
      (28, 28, 6), (14, 14, 6), (10, 10, 16), (5, 5, 16), (1, 1, 120), (84,), (10,)]


REDUCED = {"simple_cnn": (28, 28, 1), "lenet5": (32, 32, 1), "alexnet": (67, 67, 3),
           "vgg": (32, 32, 3)}


@pytest.mark.parametrize("name,variant", ALL_CONFIGS)
def test_forward_pass_at_reduced_size(name, variant):
  shape = REDUCED[name]
  width = 0.25 if name in ("alexnet", "vgg") else 1.0
  cfg = model_cfg(name, variant, input_shape=shape, num_classes=7, width=width)
  x = jax.random.normal(jax.random.key(0), (2, *shape))
  logits, _ = build_and_apply(cfg, x)
  assert logits.shape == (2, 7)
  assert np.all(np.isfinite(np.asarray(logits)))
  assert not np.array_equal(logits[0], logits[1])  # the output depends on the input
