"""Transparent huge pages for the process's heap, through glibc's `glibc.malloc.hugetlb=1`.

XLA's CPU runtime and YNNPACK take a step's temporaries from fresh allocations, which the
kernel backs with 4 KB pages as they are first written: VGG A's train step at batch 8 took
about 310,000 minor page faults, torchvision AlexNet's at batch 32 about 96,000. With the
tunable, glibc asks for transparent huge pages (madvise) and the faults fall to about 2,900
and 470; the steps took 0.86 to 0.87 and 0.87 to 0.91 of the time (in one process, huge
pages allowed and disallowed with prctl(PR_SET_THP_DISABLE) in alternating rounds,
benchmarks/lowering_ab.py --rewrite=huge_pages; README, "Performance").

glibc reads its tunables once, when a process starts, so `startup.configure()`, which
run.py calls before anything else, starts the process again with the tunable added
(`reexec`). CNN_JAX_HUGE_PAGES=0 leaves the
process as it is, and a GLIBC_TUNABLES that already names the tunable is left as set. Where
it cannot apply (not Linux, not glibc 2.35 or newer, the kernel's transparent huge pages
set to never) nothing happens.
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Mapping

TUNABLE = "glibc.malloc.hugetlb"
THP_MODE = "/sys/kernel/mm/transparent_hugepage/enabled"


def applies(environ: Mapping[str, str] = os.environ, libc: tuple[str, str] | None = None,
            thp_mode: str = THP_MODE) -> bool:
  """Whether starting again with the tunable would change anything."""
  if environ.get("CNN_JAX_HUGE_PAGES", "1") == "0" or TUNABLE in environ.get("GLIBC_TUNABLES",
                                                                            ""):
    return False
  name, version = libc or platform.libc_ver()
  try:
    glibc = name == "glibc" and tuple(int(p) for p in version.split(".")[:2]) >= (2, 35)
    with open(thp_mode) as f:
      mode = f.read()
  except (ValueError, OSError):
    return False
  return sys.platform.startswith("linux") and glibc and "[never]" not in mode


def with_tunable(environ: Mapping[str, str]) -> dict[str, str]:
  """A copy of `environ` with the tunable added to GLIBC_TUNABLES (':'-separated)."""
  tunables = [t for t in environ.get("GLIBC_TUNABLES", "").split(":") if t]
  return {**environ, "GLIBC_TUNABLES": ":".join([*tunables, f"{TUNABLE}=1"])}


def active(environ: Mapping[str, str] = os.environ) -> bool:
  """Whether this process was started with the tunable set (by `reexec` or by hand)."""
  return f"{TUNABLE}=1" in environ.get("GLIBC_TUNABLES", "").split(":")


def reexec() -> None:
  """Replaces this process with the same command line (same PID) under the tunable, where it
  `applies`; otherwise, or if that fails, returns and the process goes on as it is."""
  if not applies():
    return
  sys.stdout.flush()
  sys.stderr.flush()
  try:
    os.execve(sys.executable, sys.orig_argv, with_tunable(os.environ))
  except OSError:
    pass
