"""The inspection table: MACs against XLA's own count, receptive fields, smallest inputs."""

import math

import numpy as np
import pytest

from cnn_jax import inspect, models
from cnn_jax.errors import ConfigError
from cnn_jax.models import builder
from cnn_jax.models import layers as L
from helpers import layer, model_cfg, summary


def in_bounds_taps(size, kernel, stride, pad_before, out):
  """Kernel taps that land inside the input, summed over output positions (one axis)."""
  return sum(1 for o in range(out) for k in range(kernel)
             if 0 <= o * stride - pad_before + k < size)


def xla_expected_flops(conv: L.Conv, in_shape, out_shape):
  """XLA counts 2 flops per multiply-accumulate it performs, skipping taps in the zero padding,
  plus one per output for the bias."""
  g = conv.geometry
  taps = 1
  for a in range(2):
    if g.padding == "VALID":
      before = 0
    elif g.padding == "SAME":
      before = max((out_shape[a] - 1) * g.stride[a] + g.kernel[a] - in_shape[a], 0) // 2
    else:
      before = g.padding[a][0]
    taps *= in_bounds_taps(in_shape[a], g.kernel[a], g.stride[a], before, out_shape[a])
  cin_per_group, cout = conv.kernel.shape[2], conv.kernel.shape[3]
  return 2 * taps * cin_per_group * cout + math.prod(out_shape)


CASES = [("alexnet", "paper", (67, 67, 3), 0.25), ("alexnet", "torchvision", (63, 63, 3), 0.25),
         ("vgg", "C", (32, 32, 3), 0.125), ("simple_cnn", "base", (28, 28, 1), 1.0),
         ("lenet5", "paper", (32, 32, 1), 1.0)]


@pytest.mark.parametrize("name,variant,shape,width", CASES)
def test_macs_agree_with_xla_cost_analysis(name, variant, shape, width):
  model = models.abstract(model_cfg(name, variant, input_shape=shape, width=width))
  checked = 0
  for _, lyr in model.layers():
    out = builder.output_shape(lyr, shape)
    flops = inspect.xla_flops(lyr, shape)
    if isinstance(lyr, L.Conv):
      if lyr.geometry.padding == "VALID":  # no padding: XLA and the papers count alike
        assert flops == 2 * lyr.macs(out) + math.prod(out)
      assert flops == xla_expected_flops(lyr, shape, out)
      checked += 1
    elif isinstance(lyr, L.Dense):
      assert flops == 2 * lyr.macs(out) + math.prod(out)
      checked += 1
    shape = out
  assert checked >= 3


def test_receptive_fields_match_published_values():
  alex = summary("alexnet", "paper")
  assert layer(alex, "conv1").receptive_field == (11, 11)
  assert layer(alex, "conv1").effective_stride == (4, 4)
  assert layer(alex, "pool5").receptive_field == (195, 195)
  assert layer(alex, "pool5").effective_stride == (32, 32)
  vgg = summary("vgg", "D")
  assert layer(vgg, "conv5_3").receptive_field == (196, 196)
  assert layer(vgg, "pool5").receptive_field == (212, 212)
  # Two stacked 3x3 have the receptive field of a 5x5, three of a 7x7 (VGG Sec. 2.3).
  assert layer(vgg, "conv1_2").receptive_field == (5, 5)
  # pool2 sees 16 pixels at stride 4; four more 3x3 layers add 2 * 4 each.
  assert layer(summary("vgg", "E"), "conv3_4").receptive_field == (16 + 4 * 2 * 4,) * 2


@pytest.mark.parametrize("name,variant,smallest", [("alexnet", "paper", 67), ("vgg", "A", 32),
                                                   ("lenet5", "paper", 32),
                                                   ("simple_cnn", "base", 4)])
def test_smallest_input_is_exact(name, variant, smallest):
  s = summary(name, variant)
  assert s.smallest_input == (smallest, smallest)
  assert summary(name, variant, input_shape=(smallest, smallest, 1)).layers[-1].output_shape
  with pytest.raises(ConfigError, match=f"too small.*at least {smallest}x{smallest}"):
    summary(name, variant, input_shape=(smallest - 1, smallest - 1, 1))


def test_summary_json_fields():
  d = summary("vgg", "A").to_json()
  assert isinstance(d["params"], int) and isinstance(d["macs"], int)
  assert d["params"] == sum(r["params"] for r in d["layers"])
  assert d["macs"] == sum(r["macs"] for r in d["layers"])
  first = d["layers"][0]
  assert set(first) >= {"name", "output_shape", "params", "macs", "receptive_field"}
  assert first["name"] == "conv1_1" and list(first["output_shape"]) == [224, 224, 64]


def test_table_lists_every_layer_and_totals():
  s = summary("lenet5", "paper")
  text = inspect.format_table(s)
  for r in s.layers:
    assert r.name in text
  assert "60,000" in text and "smallest input 32x32" in text
  np.testing.assert_equal(len(text.splitlines()), len(s.layers) + 6)
