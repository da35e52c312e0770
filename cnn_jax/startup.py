"""What a cnn_jax process sets before JAX starts, in one explicit call: `configure()`.

Importing cnn_jax changes nothing in the process. `run.py` (and each benchmark script) calls
`configure()` first, before anything imports JAX:

1. Transparent huge pages for glibc's allocations (`huge_pages`): where it applies (Linux,
   glibc 2.35 or newer, THP not 'never'), the process starts itself again, same PID and
   command line, with `GLIBC_TUNABLES=glibc.malloc.hugetlb=1`, which glibc reads only at
   start. Children inherit the tunable and are not started again. CNN_JAX_HUGE_PAGES=0 opts
   out. Measured by `benchmarks/lowering_ab.py --rewrite=huge_pages`.
2. XLA's CPU options (`xla_options`): appended to XLA_FLAGS unless named there already;
   CNN_JAX_XLA_DEFAULTS=0 opts out. GPU and TPU backends ignore them.
3. JAX's persistent compilation cache: compiled steps are kept in
   `$XDG_CACHE_HOME/cnn_jax/jax` (default `~/.cache/cnn_jax/jax`), so a resumed run, the next
   run of a study or the next session does not compile the same step again. Set
   JAX_COMPILATION_CACHE_DIR to move it, or to '' to turn it off. Every compilation is kept,
   not only those over JAX's default second (JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0
   unless set): the dozen small ones of a model's initialisation take 0.5 s to compile and
   milliseconds to read (benchmarks/startup.py).
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

from cnn_jax import huge_pages, xla_options


def configure(environ: MutableMapping[str, str] = os.environ, reexec: bool = True) -> None:
  """Sets the process up (see the module docstring); call it before JAX starts a backend."""
  if reexec:
    huge_pages.reexec()  # first: it replaces the process, which then comes back here
  xla_options.apply(environ)
  compilation_cache(environ)


def compilation_cache(environ: MutableMapping[str, str] = os.environ) -> str:
  """Sets JAX_COMPILATION_CACHE_DIR to the default cache unless it is set (to '' for none),
  and with a cache, keeps every compilation in it; returns the directory in use ('' for
  none)."""
  if "JAX_COMPILATION_CACHE_DIR" not in environ:
    root = environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    environ["JAX_COMPILATION_CACHE_DIR"] = os.path.join(root, "cnn_jax", "jax")
  if environ["JAX_COMPILATION_CACHE_DIR"]:
    environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
  return environ["JAX_COMPILATION_CACHE_DIR"]
