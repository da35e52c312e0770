"""The client of tests/fork_runner.py: run.py commands forked from one process that has
done the slow imports, and a wait on a log file."""

import json
import os
import subprocess
import sys
import time

from conftest import ROOT


class ForkedRuns:
  """run.py commands forked from tests/fork_runner.py (imports done once)."""

  def __init__(self, tmp_path):
    env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "jax_cache"),
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
           "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
    self.server = subprocess.Popen([sys.executable, os.path.join(ROOT, "tests", "fork_runner.py")],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                   env=env, cwd=ROOT)
    self.count = 0

  def start(self, args, log):
    self.server.stdin.write(json.dumps({"args": args, "log": str(log)}) + "\n")
    self.server.stdin.flush()
    return json.loads(self.server.stdout.readline())["pid"]

  def wait(self) -> dict:
    return json.loads(self.server.stdout.readline())

  def close(self):
    self.server.stdin.close()
    self.server.wait(timeout=60)


def wait_for(path, text, timeout=120.0) -> bool:
  """Whether `text` appears in the file at `path` within `timeout` seconds."""
  end = time.monotonic() + timeout
  while time.monotonic() < end:
    if os.path.exists(path) and text in open(path).read():
      return True
    time.sleep(0.02)
  return False


def run(runs: ForkedRuns, args, log) -> tuple[int | None, str]:
  """Runs one command to its end: (exit status, or None if a signal ended it; its output)."""
  runs.start(args, log)
  end = runs.wait()
  with open(log) as f:
    return end["code"], f.read()
