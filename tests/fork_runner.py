"""Runs `run.py` commands as forked children of one process that imported everything once.

For tests that start many short runs (the SIGKILL fault injection): a child skips the ~6 s
of imports. Nothing has touched a device before the fork, so each child starts JAX afresh.
Reads one JSON request per line, {"args": [...], "log": PATH}; for each, prints
{"pid": PID} when the child starts and {"code": C, "signal": S} when it ends.
"""

import json
import os
import sys
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import run as entry  # noqa: E402
import tensorflow  # noqa: E402,F401 - the slow imports, done once
from cnn_jax import train  # noqa: E402,F401


def child(args, log) -> None:
  fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
  os.dup2(fd, 1)
  os.dup2(fd, 2)
  sys.argv = [os.path.join(ROOT, "run.py"), *args]
  code = 0
  try:
    entry.cli()
  except SystemExit as e:
    code = e.code if isinstance(e.code, int) else int(e.code is not None)
  except BaseException:  # noqa: BLE001
    traceback.print_exc()
    code = 1
  finally:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main() -> None:
  for line in sys.stdin:
    request = json.loads(line)
    pid = os.fork()
    if pid == 0:
      child(request["args"], request["log"])
    print(json.dumps({"pid": pid}), flush=True)
    _, status = os.waitpid(pid, 0)
    print(json.dumps({"code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
                      "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None}),
          flush=True)


if __name__ == "__main__":
  main()
