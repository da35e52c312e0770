"""VGG, Simonyan and Zisserman 2015, "Very deep convolutional networks for large-scale image
recognition", Table 1 and Sec. 2.1-2.3.

`TABLE` is Table 1, column by column, in the paper's own notation: "conv<k>-<maps>" is a kxk
convolution (stride 1, padding keeping the size), "LRN" local response normalisation (with
AlexNet's parameters), "maxpool" 2x2 stride 2. Every convolution is followed by ReLU. The head
is FC-4096, FC-4096 (dropout 0.5 on both, Sec. 3.1), FC-1000. Initialisation: Glorot uniform
with zero biases, which the paper notes trains without its A-pretraining (Sec. 3.1).
"""

import re

from cnn_jax.models import spec as S

_BLOCK = {
    "A":     (("conv3-64",), ("conv3-128",), ("conv3-256",) * 2, ("conv3-512",) * 2,
              ("conv3-512",) * 2),
    "B":     (("conv3-64",) * 2, ("conv3-128",) * 2, ("conv3-256",) * 2, ("conv3-512",) * 2,
              ("conv3-512",) * 2),
    "C":     (("conv3-64",) * 2, ("conv3-128",) * 2, ("conv3-256", "conv3-256", "conv1-256"),
              ("conv3-512", "conv3-512", "conv1-512"), ("conv3-512", "conv3-512", "conv1-512")),
    "D":     (("conv3-64",) * 2, ("conv3-128",) * 2, ("conv3-256",) * 3, ("conv3-512",) * 3,
              ("conv3-512",) * 3),
    "E":     (("conv3-64",) * 2, ("conv3-128",) * 2, ("conv3-256",) * 4, ("conv3-512",) * 4,
              ("conv3-512",) * 4),
}
_BLOCK = {"A": _BLOCK["A"], "A-LRN": (("conv3-64", "LRN"),) + _BLOCK["A"][1:], **_BLOCK}

# Table 1 (ConvNet configurations), each column as the paper lists it, top to bottom.
TABLE = {name: tuple(layer for block in blocks for layer in block + ("maxpool",))
         for name, blocks in _BLOCK.items()}
VARIANTS = tuple(TABLE)

_CONV = re.compile(r"conv(\d+)-(\d+)$")


def family(variant: str = "D") -> S.Family:
  features, block, index = [], 1, 1
  for entry in TABLE[variant]:
    conv = _CONV.match(entry)
    if conv:
      kernel, maps = int(conv.group(1)), int(conv.group(2))
      features.append(S.ConvSpec(f"conv{block}_{index}", maps, kernel, padding="SAME",
                                 kernel_init="glorot", bias_init="zeros"))
      index += 1
    elif entry == "LRN":
      features.append(S.LRNSpec(f"lrn{block}"))
    elif entry == "maxpool":
      features.append(S.PoolSpec(f"pool{block}", 2, 2))
      block, index = block + 1, 1
    else:
      raise ValueError(f"unknown Table 1 entry {entry!r}")
  head = S.HeadSpec(hidden=(("fc6", 4096), ("fc7", 4096)), output_name="fc8",
                    kernel_init="glorot")
  return S.Family("vgg", variant, tuple(features), head, input_shape=(224, 224, 3))
