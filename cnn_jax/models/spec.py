"""Declarative layer specs: the vocabulary in which each family's paper table is written.

A family is a feature table (convolutions, pooling, LRN, in the paper's order) and a head.
Activations and batch norm are not written in the tables: the builder puts them after every
weighted layer, as all four papers do.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence, Union


@dataclasses.dataclass(frozen=True)
class ConvSpec:
  """A convolution. kernel=None means 'the whole incoming feature map' (FC-as-conv head)."""
  name: str
  features: int
  kernel: int | None
  stride: int = 1
  padding: str | int = "SAME"
  groups: int = 1
  kernel_init: str = "he"
  bias_init: str = "zeros"


@dataclasses.dataclass(frozen=True)
class PartialConvSpec:
  """A convolution with a connection table (LeNet-5's C3)."""
  name: str
  table: tuple[tuple[int, ...], ...]
  kernel: int
  padding: str | int = "VALID"
  kernel_init: str = "lecun98"
  bias_init: str = "lecun98"

  @property
  def features(self) -> int:
    return len(self.table)


@dataclasses.dataclass(frozen=True)
class SubsamplingSpec:
  """LeNet-5's trainable subsampling (one coefficient and one bias per map)."""
  name: str
  window: int = 2
  stride: int = 2
  init: str = "lecun98"


@dataclasses.dataclass(frozen=True)
class PoolSpec:
  name: str
  window: int
  stride: int
  kind: str = "max"
  padding: str | int = "VALID"


@dataclasses.dataclass(frozen=True)
class LRNSpec:
  name: str
  size: int = 5
  k: float = 2.0
  alpha: float = 1e-4
  beta: float = 0.75
  groups: int = 1


@dataclasses.dataclass(frozen=True)
class DenseSpec:
  name: str
  features: int
  kernel_init: str = "he"
  bias_init: str = "zeros"


@dataclasses.dataclass(frozen=True)
class RBFSpec:
  name: str
  features: int


@dataclasses.dataclass(frozen=True)
class ActSpec:
  name: str
  fn: str


@dataclasses.dataclass(frozen=True)
class BatchNormSpec:
  name: str


@dataclasses.dataclass(frozen=True)
class DropoutSpec:
  name: str
  rate: float


@dataclasses.dataclass(frozen=True)
class FlattenSpec:
  name: str = "flatten"


@dataclasses.dataclass(frozen=True)
class GlobalAvgPoolSpec:
  name: str = "global_pool"


LayerSpec = Union[ConvSpec, PartialConvSpec, SubsamplingSpec, PoolSpec, LRNSpec, DenseSpec,
                  RBFSpec, ActSpec, BatchNormSpec, DropoutSpec, FlattenSpec, GlobalAvgPoolSpec]
WEIGHTED = (ConvSpec, PartialConvSpec, SubsamplingSpec)  # followed by [batch norm,] activation


@dataclasses.dataclass(frozen=True)
class HeadSpec:
  """The classifier after the features: hidden FC layers and the output layer.

  hidden: (name, width) of each hidden FC layer; output: 'dense' or 'rbf' (LeNet-5).
  """
  hidden: tuple[tuple[str, int], ...]
  output_name: str
  output: str = "dense"
  kernel_init: str = "he"
  hidden_bias_init: str = "zeros"
  output_kernel_init: str | None = None  # None: same as kernel_init


@dataclasses.dataclass(frozen=True)
class Family:
  """One network as its paper describes it: feature table, head, defaults."""
  name: str
  variant: str
  features: tuple[LayerSpec, ...]
  head: HeadSpec
  activation: str = "relu"
  input_shape: tuple[int, int, int] = (224, 224, 3)
  num_classes: int = 1000


def weighted_names(specs: Sequence[LayerSpec]) -> list[str]:
  return [s.name for s in specs if isinstance(s, WEIGHTED)]
