"""Ablation knobs as transformations of a family's spec table (data in, data out).

Each knob is one function over layer specs, so every family gets every knob, and the model
code itself stays free of ablation logic.
"""

from __future__ import annotations

import dataclasses
import math

from cnn_jax.errors import ConfigError
from cnn_jax.models import spec as S

NORMS = ("paper", "none", "lrn", "batchnorm")
STEMS = ("paper", "stacked3x3")
POOLINGS = ("paper", "overlapping", "non_overlapping")
HEADS = ("fc", "gap", "conv")


def stacked_stem(specs: tuple[S.LayerSpec, ...]) -> tuple[S.LayerSpec, ...]:
  """Replaces the first convolution (k x k, stride s) by stacked 3x3 convolutions with the same
  receptive field and effective stride: m stride-1 layers then log2(s) stride-2 layers, where
  1 + 2m + 2(s - 1) = k. AlexNet's 11x11/4 becomes four 3x3 layers (strides 1, 1, 2, 2), as in
  the move from AlexNet to VGG (Simonyan & Zisserman 2015, Sec. 2.3)."""
  index = next((i for i, s in enumerate(specs) if isinstance(s, S.ConvSpec)), None)
  if index is None:
    raise ConfigError("model.stem='stacked3x3' needs a convolutional first layer; "
                      "use model.stem='paper'")
  conv = specs[index]
  k, s = conv.kernel, conv.stride
  stride2 = int(round(math.log2(s))) if s >= 1 else -1
  m2 = (k - 1) - 2 * (s - 1)
  if k <= 3 or 2**stride2 != s or m2 < 0 or m2 % 2:
    raise ConfigError(
        f"model.stem='stacked3x3' cannot replace the {k}x{k} stride-{s} first convolution "
        f"'{conv.name}' by 3x3 layers of equal receptive field (it needs an odd kernel above 3 "
        "and a power-of-two stride that the kernel covers); use model.stem='paper'")
  strides = [1] * (m2 // 2) + [2] * stride2
  if isinstance(conv.padding, str):
    paddings = [conv.padding] * len(strides)
  else:  # The whole explicit padding goes on the first layer.
    paddings = [conv.padding] + [0] * (len(strides) - 1)
  stem = tuple(
      dataclasses.replace(conv, name=f"{conv.name}_{i + 1}", kernel=3, stride=st, padding=p,
                          groups=1)
      for i, (st, p) in enumerate(zip(strides, paddings)))
  return specs[:index] + stem + specs[index + 1:]


def pooling(specs, kind: str):
  """'overlapping' makes every pooling 3x3 stride 2 (AlexNet, Sec. 3.4); 'non_overlapping'
  makes it 2x2 stride 2 (VGG, and AlexNet's s = z = 2 comparison)."""
  if kind == "paper":
    return specs
  window = {"overlapping": 3, "non_overlapping": 2}[kind]
  return tuple(dataclasses.replace(s, window=window, stride=2)
               if isinstance(s, (S.PoolSpec, S.SubsamplingSpec)) else s for s in specs)


def norm(specs, kind: str):
  """'none' drops LRN; 'lrn' keeps the paper's LRN layers, or, for a family whose paper has
  none, adds one after the first convolution (where VGG's A-LRN has it); 'batchnorm' drops LRN
  (the builder then puts batch norm after every weighted layer)."""
  has_lrn = any(isinstance(s, S.LRNSpec) for s in specs)
  if kind == "paper" or (kind == "lrn" and has_lrn):
    return specs
  if kind == "lrn":
    first = next(i for i, s in enumerate(specs) if isinstance(s, S.WEIGHTED))
    return specs[:first + 1] + (S.LRNSpec("lrn1"),) + specs[first + 1:]
  return tuple(s for s in specs if not isinstance(s, S.LRNSpec))


def width(specs, head: S.HeadSpec, multiplier: float):
  """Scales every convolution's maps and every hidden FC layer's units (not the classes),
  rounding maps to a multiple of the network's largest group count (2 for two towers)."""
  if multiplier == 1.0:
    return specs, head
  groups = max(getattr(s, "groups", 1) for s in specs)

  def scale(n, groups=1):
    return max(groups, groups * int(round(n * multiplier / groups)))

  out = []
  for s in specs:
    if isinstance(s, S.PartialConvSpec):
      raise ConfigError(
          f"model.width={multiplier} cannot scale '{s.name}', whose connection table is fixed "
          "by the paper; use a variant with a dense layer there (lenet5 'modern') or width=1.0")
    if isinstance(s, S.ConvSpec):
      s = dataclasses.replace(s, features=scale(s.features, groups))
    out.append(s)
  head = dataclasses.replace(head, hidden=tuple((n, scale(w)) for n, w in head.hidden))
  return tuple(out), head


def expand_features(specs, activation: str, batchnorm: bool):
  """Puts [batch norm,] activation after every weighted layer of the feature table."""
  out = []
  for s in specs:
    out.append(s)
    if isinstance(s, S.WEIGHTED):
      if batchnorm:
        out.append(S.BatchNormSpec(f"{s.name}_bn"))
      out.append(S.ActSpec(f"{s.name}_{activation}", activation))
  return tuple(out)


def head_layers(head: S.HeadSpec, kind: str, num_classes: int, activation: str,
                dropout: float):
  """The classifier as layers.

  'fc': flatten, then the FC layers (the papers). 'gap': global average pooling, then the FC
  layers. 'conv': the FC layers as convolutions, the first over the whole feature map and the
  rest 1x1, then the class score map averaged over positions: VGG's dense evaluation
  (Simonyan & Zisserman 2015, Sec. 3.2), with the same parameters as 'fc' at the training size.
  """
  out = []
  if kind == "fc":
    out.append(S.FlattenSpec())
  elif kind == "gap":
    out.append(S.GlobalAvgPoolSpec())
  first = True
  for name, units in head.hidden:
    if kind == "conv":
      out.append(S.ConvSpec(name, units, None if first else 1, padding="VALID",
                            kernel_init=head.kernel_init, bias_init=head.hidden_bias_init))
    else:
      out.append(S.DenseSpec(name, units, head.kernel_init, head.hidden_bias_init))
    out.append(S.ActSpec(f"{name}_{activation}", activation))
    if dropout > 0:
      out.append(S.DropoutSpec(f"{name}_dropout", dropout))
    first = False
  output_init = head.output_kernel_init or head.kernel_init
  if head.output == "rbf":
    out.append(S.RBFSpec(head.output_name, num_classes))
  elif kind == "conv":
    out.append(S.ConvSpec(head.output_name, num_classes, None if first else 1, padding="VALID",
                          kernel_init=output_init))
  else:
    out.append(S.DenseSpec(head.output_name, num_classes, output_init))
  if kind == "conv":
    out.append(S.GlobalAvgPoolSpec("score_average"))
  return tuple(out)
