import os
import sys

# Eight simulated CPU devices for the whole session, set before JAX starts, so the sharded
# paths (data, FSDP, tensor and two-tower layouts) run here as on eight accelerators. A run
# whose mesh is left at its default spreads its batch over all eight; mesh.data=1 is the
# one-device run.
DEVICES = "--xla_force_host_platform_device_count=8"
if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {DEVICES}".strip()

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
