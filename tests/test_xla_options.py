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
  """The optimised HLO of a small convolution, compiled in a fresh process that calls
  cnn_jax's start-up first (XLA reads its options once, when its backend starts)."""
  code = ("from cnn_jax import startup; startup.configure(reexec=False)\n"
          "import jax, jax.numpy as jnp\n"
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


def test_importing_cnn_jax_changes_no_environment_variable():
  # TensorFlow sets variables of its own on import (TPU_ML_PLATFORM, TF2_BEHAVIOR, ...):
  # imported first, they are in `before`; what is left to differ would be cnn_jax's
  code = ("import os, pkgutil, importlib, json\n"
          "first = dict(os.environ); import cnn_jax; assert dict(os.environ) == first\n"
          "import tensorflow, tensorflow_datasets, jax; before = dict(os.environ)\n"
          "for m in pkgutil.walk_packages(cnn_jax.__path__, 'cnn_jax.'):\n"
          "  importlib.import_module(m.name)\n"
          "after = dict(os.environ)\n"
          "print(json.dumps({k: [before.get(k), after.get(k)] for k in set(before) | set(after)\n"
          "                  if before.get(k) != after.get(k)}))")
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       check=True, env={**os.environ, "XLA_FLAGS": ""})
  assert out.stdout.strip().splitlines()[-1] == "{}"


def test_the_compilation_cache_is_persistent_by_default_and_movable(tmp_path):
  from cnn_jax import startup
  env = {"XDG_CACHE_HOME": str(tmp_path)}
  assert startup.compilation_cache(env) == str(tmp_path / "cnn_jax" / "jax")
  env = {"JAX_COMPILATION_CACHE_DIR": "/elsewhere"}
  assert startup.compilation_cache(env) == "/elsewhere"
  # a process started by cnn_jax writes its compiled programs there
  code = ("from cnn_jax import startup; startup.configure(reexec=False)\n"
          "import jax, jax.numpy as jnp\n"
          "jax.jit(lambda x: jnp.sin(x) @ x.T)(jnp.ones((64, 64))).block_until_ready()")
  environ = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
  environ.update(XLA_FLAGS="", XDG_CACHE_HOME=str(tmp_path),
                 JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
  subprocess.run([sys.executable, "-c", code], env=environ, cwd=ROOT, check=True,
                 capture_output=True)
  assert os.listdir(tmp_path / "cnn_jax" / "jax")


def test_the_compilation_cache_keeps_every_compilation_unless_told():
  from cnn_jax import startup
  env = {"JAX_COMPILATION_CACHE_DIR": "/c"}
  startup.compilation_cache(env)
  assert env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] == "0"
  env = {"JAX_COMPILATION_CACHE_DIR": "/c", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "2"}
  startup.compilation_cache(env)
  assert env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] == "2"
  env = {"JAX_COMPILATION_CACHE_DIR": ""}
  assert startup.compilation_cache(env) == "" and len(env) == 1
