"""The XLA options cnn_jax sets by default, each because it was measured to help.

XLA reads XLA_FLAGS once, when its first backend starts, so `apply` runs in
`startup.configure()`, which run.py calls before JAX starts. An option already in XLA_FLAGS
is left as the user set it, so any default here is overridden by naming it there:

  XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=dot,individual_convolution python run.py

and CNN_JAX_XLA_DEFAULTS=0 sets none of them (XLA's own defaults, for comparing against).
Only CPU options are set; GPU and TPU backends ignore them.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from importlib import metadata

# XLA's CPU backend hands small convolutions to YNNPACK by default, which on the 2-core
# x86 machines here ran the small Fashion-MNIST CNN's train step 1.4-1.6x slower than XLA's
# own (Eigen) convolutions; YNNPACK is kept for matrix products. LeNet-5, AlexNet and VGG A
# were unchanged within noise (`python run.py bench`; README, "Performance").
CPU_DEFAULTS = {"xla_cpu_experimental_ynn_fusion_type": "dot"}
# The jaxlib releases these options are known to exist in (XLA aborts on an unknown flag); the
# range pyproject.toml admits. Outside it nothing is set.
JAXLIB_RANGE = ((0, 10), (0, 13))


def _known_jaxlib() -> bool:
  try:
    version = tuple(int(p) for p in metadata.version("jaxlib").split(".")[:2])
  except (metadata.PackageNotFoundError, ValueError):
    return False
  return JAXLIB_RANGE[0] <= version < JAXLIB_RANGE[1]


def with_defaults(flags: str, defaults: dict[str, str] = CPU_DEFAULTS) -> str:
  """`flags` (an XLA_FLAGS value) with each default option it does not name appended."""
  named = {part.split("=", 1)[0].lstrip("-") for part in flags.split()}
  extra = [f"--{k}={v}" for k, v in defaults.items() if k not in named]
  return " ".join([flags.strip(), *extra]).strip()


def apply(environ: MutableMapping[str, str] = os.environ) -> None:
  if environ.get("CNN_JAX_XLA_DEFAULTS", "1") == "0" or not _known_jaxlib():
    return
  environ["XLA_FLAGS"] = with_defaults(environ.get("XLA_FLAGS", ""))
