"""Exact parameter counts and MACs, to the unit, against the numbers the papers imply."""

import pytest

from helpers import layer, summary

PARAMS = {
    ("simple_cnn", "base"): 333_526,
    ("lenet5", "paper"): 60_000,
    ("lenet5", "modern"): 61_706,
    ("alexnet", "paper"): 60_965_224,
    ("alexnet", "one_tower"): 62_378_344,
    ("alexnet", "torchvision"): 61_100_840,
    ("vgg", "A"): 132_863_336,
    ("vgg", "A-LRN"): 132_863_336,
    ("vgg", "B"): 133_047_848,
    ("vgg", "C"): 133_638_952,
    ("vgg", "D"): 138_357_544,
    ("vgg", "E"): 143_667_240,
}


@pytest.mark.parametrize("name,variant", sorted(PARAMS))
def test_exact_parameter_count(name, variant):
  assert summary(name, variant).params == PARAMS[name, variant]


def test_vgg_table2_rounding():
  """Table 2 of Simonyan & Zisserman: 133, 133, 134, 138, 144 million."""
  rounded = {v: round(summary("vgg", v).params / 1e6) for v in ("A", "A-LRN", "B", "C", "D",
                                                                 "E")}
  assert rounded == {"A": 133, "A-LRN": 133, "B": 133, "C": 134, "D": 138, "E": 144}


@pytest.mark.parametrize("variant,gmacs", [("A", 7.609), ("B", 11.308), ("C", 11.771),
                                           ("D", 15.470), ("E", 19.632)])
def test_vgg_macs_at_224(variant, gmacs):
  assert round(summary("vgg", variant).macs / 1e9, 3) == gmacs


def test_lenet5_per_layer_counts():
  """LeCun et al. 1998, Sec. II.B: C1 156, S2 12, C3 1,516, S4 32, C5 48,120, F6 10,164."""
  s = summary("lenet5", "paper")
  counts = {n: layer(s, n).params for n in ("c1", "s2", "c3", "s4", "c5", "f6", "output")}
  assert counts == {"c1": 156, "s2": 12, "c3": 1516, "s4": 32, "c5": 48120, "f6": 10164,
                    "output": 0}
  assert layer(s, "c3").macs == 10 * 10 * 60 * 25  # positions x connected kernels x taps
  assert s.constants == 84 * 10  # the RBF codes are fixed, not trainable


def test_alexnet_two_towers_differ_from_one_by_the_grouped_layers():
  two, one = summary("alexnet", "paper"), summary("alexnet", "one_tower")
  for name in ("conv2", "conv4", "conv5"):
    w2, w1 = layer(two, name).params, layer(one, name).params
    bias = {"conv2": 256, "conv4": 384, "conv5": 256}[name]
    assert (w1 - bias) == 2 * (w2 - bias)  # each tower sees half the input maps
  for name in ("conv1", "conv3", "fc6", "fc7", "fc8"):
    assert layer(two, name).params == layer(one, name).params


def test_num_classes_and_width_change_counts():
  base = summary("vgg", "A").params
  assert summary("vgg", "A", num_classes=10).params == base - 990 * 4097
  half = summary("vgg", "A", width=0.5)
  assert layer(half, "conv1_1").params == 3 * 3 * 3 * 32 + 32
  assert layer(half, "fc6").params == 7 * 7 * 256 * 2048 + 2048
  assert layer(half, "fc8").params == 2048 * 1000 + 1000
