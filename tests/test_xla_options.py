"""The XLA options cnn_jax sets by default, and how a user overrides them."""

import os
import subprocess
import sys

from cnn_jax import xla_options
from conftest import ROOT
YNN = "xla_cpu_experimental_ynn_fusion_type"


def test_defaults_are_appended_and_user_options_kept():
  assert xla_options.with_defaults("") == f"--{YNN}=dot"
  devices = "--xla_force_host_platform_device_count=8"
  assert xla_options.with_defaults(devices) == f"{devices} --{YNN}=dot"
  mine = f"{devices} --{YNN}=dot,individual_convolution"
  assert xla_options.with_defaults(mine) == mine  # the user's value wins


def test_apply_and_opting_out():
  env = {"XLA_FLAGS": "--xla_cpu_ftz=true"}
  xla_options.apply(env)
  assert env["XLA_FLAGS"] == f"--xla_cpu_ftz=true --{YNN}=dot"
  env = {"CNN_JAX_XLA_DEFAULTS": "0"}
  xla_options.apply(env)
  assert "XLA_FLAGS" not in env


def _compiled_conv(extra_env: dict) -> str:
  """The optimised HLO of a small convolution, compiled in a fresh process that imports
  cnn_jax first (XLA reads its options once, at start-up)."""
  code = ("import cnn_jax, jax, jax.numpy as jnp\n"
          "f = jax.jit(lambda x, w: jax.lax.conv_general_dilated(x, w, (1, 1), 'SAME', "
          "dimension_numbers=('NHWC', 'HWIO', 'NHWC')))\n"
          "print(f.lower(jnp.ones((8, 14, 14, 32)), jnp.ones((3, 3, 32, 64))).compile().as_text())")
  env = {**os.environ, "XLA_FLAGS": "", **extra_env}
  out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True,
                       text=True, check=True)
  return out.stdout


def test_the_default_reaches_xla():
  # With XLA's own defaults its CPU backend gives this convolution to YNNPACK; with cnn_jax's
  # it stays an XLA convolution.
  assert "__ynn_fusion" in _compiled_conv({"CNN_JAX_XLA_DEFAULTS": "0"})
  assert "__ynn_fusion" not in _compiled_conv({})
