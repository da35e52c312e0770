"""Named splits over a dataset's examples: the validation split held out from the training
data, TFDS split strings over those names, and each process's even share.

A dataset without a validation split (Fashion-MNIST, MNIST, CIFAR, an image folder) gets one
held out from its 'train' split: round(data.validation_fraction x N) examples chosen by
`data.split_seed` (folders: stratified by class, `folder.py`), the same for every run seed, so
the runs of a study train on the same examples and are selected on the same ones. The names
'train' and 'validation' then mean the held-in and held-out parts, and a slice like
'train[:25%]' is taken of the held-in part, so data-fraction studies keep one validation set.
A dataset that has its own validation split (ILSVRC-2012) keeps it, with
validation_fraction=0.

  names = {"train": 54000, "validation": 6000, "test": 10000}   # examples per name
  parts = select("train[:25%]+validation", "train_split", names, "fashion_mnist")
  # [("train", 0, 13500), ("validation", 0, 6000)]
"""

from __future__ import annotations

import hashlib
import re
import types

import numpy as np

from cnn_jax.errors import ConfigError

# TFDS's split grammar (tensorflow_datasets/core/splits.py), the part parsed here without
# importing TFDS: name[from:to] with absolute or percent boundaries, joined by '+'; anything
# else ('all', shard slices) is handed to TFDS itself.
_PART = re.compile(r"^(?P<name>[\w-]+)(\[(?P<lo>-?[\d_.]+)?(?P<lo_pct>%)?:"
                   r"(?P<hi>-?[\d_.]+)?(?P<hi_pct>%)?\])?$")


def holdout(n: int, fraction: float, seed: int) -> np.ndarray:
  """The sorted indices of round(fraction x n) of range(n), chosen by `seed`."""
  k = int(np.floor(fraction * n + 0.5))
  perm = np.random.default_rng([seed % 2**32, n]).permutation(n)
  return np.sort(perm[:k])


def _parse(spec: str, names: dict) -> list[tuple[str, int, int]] | None:
  """TFDS's absolute instructions for `spec`, as TFDS computes them ('closest' rounding of
  percentages); None where the spec needs TFDS's own parser (or is wrong: TFDS says how)."""
  out = []
  for sub in re.split(r"\s*\+\s*", spec):
    m = _PART.match(sub)
    if not m or m["name"] not in names or m["name"] == "all":
      return None
    n = names[m["name"]]
    pct = bool(m["lo_pct"] or m["hi_pct"])
    if m["lo_pct"] and m["lo"] is None or m["hi_pct"] and m["hi"] is None:
      return None
    try:
      lo, hi = ((None if v is None else float(v) if pct else int(v)) for v in (m["lo"], m["hi"]))
    except ValueError:
      return None
    if pct:  # tfds: _pct_to_abs_closest
      lo = 0 if lo is None else int(round(lo * n / 100.0))
      hi = n if hi is None else int(round(hi * n / 100.0))
    else:
      lo, hi = (0 if lo is None else lo), (n if hi is None else hi)
    if abs(lo) > n or abs(hi) > n:
      return None
    out.append((m["name"], n + lo if lo < 0 else lo, n + hi if hi < 0 else hi))
  return out


def select(spec: str, key: str, names: dict, dataset: str) -> list[tuple[str, int, int]]:
  """(name, from, to) parts of the TFDS split string `spec` (data.<key>) over `names`
  ({name: number of examples}); a ConfigError names a split that does not exist. The common
  forms are read here; others (and every mistake, for its message) by TFDS."""
  parts = _parse(spec, names)
  if parts is not None:
    return parts
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  infos = {k: types.SimpleNamespace(num_examples=n, shard_lengths=[n]) for k, n in names.items()}
  try:
    parts = tfds.core.ReadInstruction.from_spec(spec).to_absolute(infos)
  except (ValueError, AssertionError, KeyError) as e:
    reason = " ".join(str(e).split())[:120]
    hint = (" (a validation split is held out from 'train' only with "
            "data.validation_fraction > 0)" if "validation" in spec and "validation" not in names
            else "")
    raise ConfigError(f"data.{key}={spec!r} is not a split of {dataset} ({reason}){hint}; use "
                      f"one of {', '.join(sorted(names))}, with optional slicing like "
                      "'train[:10%]'") from None
  return [(p.splitname, p.from_ or 0, names[p.splitname] if p.to is None else p.to)
          for p in parts]


def share_range(total: int, index: int, count: int) -> tuple[int, int]:
  """[lo, hi) of process `index`'s even contiguous share of `total` items: the first
  total % count processes hold one more (as tfds.split_for_jax_process)."""
  size, extra = divmod(total, count)
  lo = index * size + min(index, extra)
  return lo, lo + size + (index < extra)


def largest_share(total: int, count: int) -> int:
  return -(-total // count)


def eval_steps(local: int, total: int, count: int, local_batch: int) -> int:
  """The evaluation batches every one of `count` processes yields for a split of `total`
  examples (this one holding `local`): the largest share's, padded, so all yield the same."""
  return -(-max(local, largest_share(total, count)) // local_batch)


def fingerprint(items) -> str:
  """sha256 of a held-out set (indices, or a folder's relative paths), recorded with the run."""
  h = hashlib.sha256()
  if isinstance(items, np.ndarray):
    h.update(np.asarray(items, "<i8").tobytes())
  else:
    for item in items:
      h.update(str(item).encode() + b"\0")
  return h.hexdigest()


class Named:
  """A dataset's splits by name, each as (its stored split, the indices of its examples):
  the stored ones, and 'train'/'validation' held in and out of 'train' where
  data.validation_fraction > 0. `sizes` is {stored split: number of examples}."""

  def __init__(self, sizes: dict, cfg):
    self.indices = {name: (name, np.arange(n)) for name, n in sizes.items()}
    self.held_out = None
    if cfg.validation_fraction > 0:
      if "validation" in sizes:
        raise ConfigError(f"data.validation_fraction={cfg.validation_fraction!r}: {cfg.name} "
                          "has its own validation split; set data.validation_fraction=0 to use "
                          "it")
      if "train" not in sizes:
        raise ConfigError(f"data.validation_fraction={cfg.validation_fraction!r}: {cfg.name} "
                          "has no 'train' split to hold a validation split out of; set it to 0")
      held = holdout(sizes["train"], cfg.validation_fraction, cfg.split_seed)
      kept = np.setdiff1d(np.arange(sizes["train"]), held, assume_unique=True)
      self.indices.update(train=("train", kept), validation=("train", held))
      self.held_out = held
    self.sizes = {name: len(ix) for name, (_, ix) in self.indices.items()}

  def part(self, spec: str, key: str, dataset: str, index: int, count: int):
    """[(stored split, sorted indices)] of process `index`'s share of `spec`, and the
    number of examples in the whole of `spec`."""
    pieces = [(self.indices[name][0], self.indices[name][1][a:b])
              for name, a, b in select(spec, key, self.sizes, dataset)]
    total = sum(len(ix) for _, ix in pieces)
    lo, hi = share_range(total, index, count)
    out, start = [], 0
    for split, ix in pieces:
      mine = ix[max(lo - start, 0):max(hi - start, 0)]
      start += len(ix)
      if len(mine):
        out.append((split, mine))
    return out, total

  def fingerprint(self) -> tuple | None:
    """(count, sha256) of the held-out validation split, or None."""
    held = self.held_out
    return None if held is None else (len(held), fingerprint(held))
