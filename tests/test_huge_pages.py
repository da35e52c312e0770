"""glibc's huge-page tunable: when run.py starts itself again with it, and that it does."""

import os
import subprocess
import sys

import pytest

from cnn_jax import huge_pages
from conftest import ROOT

GLIBC = ("glibc", "2.36")


@pytest.fixture
def thp_mode(tmp_path):
  def write(mode: str) -> str:
    path = tmp_path / "enabled"
    path.write_text(mode)
    return str(path)
  return write


def test_applies_only_where_it_can_change_something(thp_mode):
  madvise = thp_mode("always [madvise] never\n")
  assert huge_pages.applies({}, GLIBC, madvise) == sys.platform.startswith("linux")
  assert not huge_pages.applies({"CNN_JAX_HUGE_PAGES": "0"}, GLIBC, madvise)  # opted out
  assert not huge_pages.applies({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, GLIBC, madvise)
  assert not huge_pages.applies({}, ("glibc", "2.31"), madvise)  # no such tunable yet
  assert not huge_pages.applies({}, ("", ""), madvise)  # musl, or not known
  assert not huge_pages.applies({}, GLIBC, thp_mode("always madvise [never]\n"))
  assert not huge_pages.applies({}, GLIBC, "/nonexistent/transparent_hugepage/enabled")


def test_tunable_is_added_to_the_users_tunables():
  env = huge_pages.with_tunable({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2", "X": "1"})
  assert env == {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1", "X": "1"}
  assert huge_pages.active(env)
  assert huge_pages.with_tunable({})["GLIBC_TUNABLES"] == "glibc.malloc.hugetlb=1"
  assert not huge_pages.active({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"})


@pytest.mark.parametrize("opt_out", ["1", "0"])
def test_reexec_starts_the_same_command_again_once(opt_out):
  code = ("import os, sys\n"
          "print('start', os.getpid(), flush=True)\n"
          "from cnn_jax import huge_pages\n"
          "huge_pages.reexec()\n"
          "print('tunables', os.environ.get('GLIBC_TUNABLES', ''), sys.argv[1:])\n")
  env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
  env["CNN_JAX_HUGE_PAGES"] = "0" if opt_out == "0" else "1"
  out = subprocess.run([sys.executable, "-c", code, "arg"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=60, check=True).stdout.splitlines()
  starts = [line for line in out if line.startswith("start")]
  expected = huge_pages.applies(env)
  assert len(starts) == (2 if expected else 1)
  assert len(set(starts)) == 1  # the same process (exec keeps the PID)
  tunables = "glibc.malloc.hugetlb=1" if expected else ""
  assert out[-1] == f"tunables {tunables} ['arg']"
