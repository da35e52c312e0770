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
import types

import numpy as np
import tensorflow_datasets as tfds

from cnn_jax.errors import ConfigError


def holdout(n: int, fraction: float, seed: int) -> np.ndarray:
  """The sorted indices of round(fraction x n) of range(n), chosen by `seed`."""
  k = int(np.floor(fraction * n + 0.5))
  perm = np.random.default_rng([seed % 2**32, n]).permutation(n)
  return np.sort(perm[:k])


def select(spec: str, key: str, names: dict, dataset: str) -> list[tuple[str, int, int]]:
  """(name, from, to) parts of the TFDS split string `spec` (data.<key>) over `names`
  ({name: number of examples}); a ConfigError names a split that does not exist."""
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


def fingerprint(items) -> str:
  """sha256 of a held-out set (indices, or a folder's relative paths), recorded with the run."""
  h = hashlib.sha256()
  if isinstance(items, np.ndarray):
    h.update(np.asarray(items, "<i8").tobytes())
  else:
    for item in items:
      h.update(str(item).encode() + b"\0")
  return h.hexdigest()
