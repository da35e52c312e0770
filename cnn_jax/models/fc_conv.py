"""The FC head as convolutions: VGG's dense evaluation (Simonyan & Zisserman 2015, Sec. 3.2),
"the fully-connected layers are first converted to convolutional layers (the first FC layer
to a 7x7 conv. layer, the last two FC layers to 1x1 conv. layers)".

`model.head='fc'` flattens the last feature map (k, k, C) in row-major (row, column, channel)
order and applies fc6 as a (k*k*C, N) matrix; `model.head='conv'` (knobs.head_layers) has fc6
as a (k, k, C, N) HWIO kernel over that same map, and fc7, fc8 as (1, 1, N, M). The two orders
agree, so converting an FC checkpoint is a reshape of each dense kernel to the conv head's
shape: no retraining, and at the training input size the conv head's one score position is
the FC head's output.
"""

from __future__ import annotations

import math

import jax
import ml_collections


def conv_head_config(model_cfg) -> ml_collections.ConfigDict:
  """The model config `model_cfg` with the FC layers as convolutions (`head='conv'`), at the
  same (training) input size, so fc6's kernel spans the feature map that size gives."""
  out = ml_collections.ConfigDict(model_cfg.to_dict())
  out.head = "conv"
  return out


def convertible(fc_shape, conv_shape) -> bool:
  """Whether a dense kernel (fan_in, N) is a conv kernel (kh, kw, C, N) flattened."""
  return (len(fc_shape) == 2 and len(conv_shape) == 4 and fc_shape[1] == conv_shape[3]
          and fc_shape[0] == math.prod(conv_shape[:3]))


def fc_to_conv(fc_params, conv_params):
  """The parameters of the FC-head model (`fc_params`, an nnx.State) laid out as the conv-head
  model's (`conv_params`, its nnx.State, shapes only are used): every dense kernel reshaped to
  its conv kernel, everything else as it is. Raises ValueError naming a parameter whose
  shapes cannot correspond."""
  def one(path, fc, conv):
    fc_shape, conv_shape = tuple(fc.shape), tuple(conv.shape)
    if fc_shape == conv_shape:
      return fc
    if convertible(fc_shape, conv_shape):
      return fc.reshape(conv_shape)
    name = "/".join(str(getattr(k, "key", k)) for k in path)
    raise ValueError(f"{name} is {fc_shape} in the FC head and {conv_shape} in the conv head; "
                     "they do not correspond")
  return jax.tree_util.tree_map_with_path(one, fc_params, conv_params)
