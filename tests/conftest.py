import os
import sys

# Eight simulated CPU devices for the whole session, set before JAX starts, so the sharded
# paths (data, FSDP, tensor and two-tower layouts) run here as on eight accelerators. A run
# whose mesh is left at its default spreads its batch over all eight; mesh.data=1 is the
# one-device run.
DEVICES = "--xla_force_host_platform_device_count=8"
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {DEVICES}".strip()

# One persistent compilation cache for the session and the runs it starts: the many tiny runs
# compile the same steps.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  import tempfile
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="cnn_jax_test_cache_")
  os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
  os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
