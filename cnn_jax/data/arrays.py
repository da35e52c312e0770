"""Small TFDS datasets as NumPy arrays: a decoded cache beside TFDS's prepared files, read
without TensorFlow.

The cache of a dataset prepared in `<data_dir>/<name>/<version>/` is the folder
`cnn_jax_arrays/` in it: `<split>.images.npy` (uint8 (N, h, w, C)) and `<split>.labels.npy`
(int32 (N,)) for each of TFDS's splits, in TFDS's own order (the order `as_dataset` reads with
`shuffle_files=False`, so the same indices name the same examples on both input paths), and
`manifest.json`, written last, with the SHA-256 of every file TFDS prepared (its
dataset_info.json, features and record shards) and of every array file.

Each load hashes both: a cache whose source files changed (the dataset prepared again,
another version, a shard replaced) is stale, and one whose arrays do not match their recorded
hashes (a truncated or overwritten file) is corrupt; either is rebuilt, once, from TFDS's
files, which imports TensorFlow and TFDS for that run only. A data_dir that cannot be written
keeps the cache under `$XDG_CACHE_HOME/cnn_jax/arrays/` instead (default ~/.cache).

  arrays = load(cfg)     # {'train': (images, labels), 'test': ...}, info: num_classes, shape
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import shutil
import tempfile

import numpy as np
from absl import logging

from cnn_jax.errors import UserError

FORMAT = 1
FOLDER = "cnn_jax_arrays"
MANIFEST = "manifest.json"
# The TFDS datasets read this way, at the version TFDS builds by default (tests/test_arrays
# checks these against TFDS): small enough to hold in memory, of one image size.
VERSIONS = {"mnist": "3.0.1", "fashion_mnist": "3.0.1", "kmnist": "3.0.1",
            "cifar10": "3.0.2", "cifar100": "3.0.2"}


@dataclasses.dataclass
class Arrays:
  """A dataset's decoded splits: {split: (images uint8 (N, h, w, C), labels int32 (N,))}."""

  splits: dict
  num_classes: int
  path: str  # the cache folder they were read from
  rebuilt: str = ""  # why the cache was (re)built this time, '' when it was read as it was

  @property
  def image_shape(self) -> tuple:
    return tuple(next(iter(self.splits.values()))[0].shape[1:])


def data_dir(cfg) -> str:
  """TFDS's data directory for `cfg`: data.data_dir, else $TFDS_DATA_DIR, else
  ~/tensorflow_datasets (tfds.core.constants.DATA_DIR)."""
  return os.path.expanduser(cfg.data_dir or os.environ.get("TFDS_DATA_DIR")
                            or "~/tensorflow_datasets")


def prepared_dir(cfg) -> str:
  """Where TFDS keeps (or would keep) `cfg.name`'s prepared files."""
  return os.path.join(data_dir(cfg), cfg.name, VERSIONS[cfg.name])


def is_prepared(cfg) -> bool:
  return os.path.isfile(os.path.join(prepared_dir(cfg), "dataset_info.json"))


def _sha256(path: str) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 22), b""):
      h.update(chunk)
  return h.hexdigest()


def source_hashes(prepared: str) -> dict:
  """{file name: sha256} of every file TFDS prepared in `prepared` (not the cache)."""
  return {f: _sha256(os.path.join(prepared, f)) for f in sorted(os.listdir(prepared))
          if os.path.isfile(os.path.join(prepared, f))}


def _fallback_dir(prepared: str) -> str:
  root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  key = hashlib.sha256(os.path.abspath(prepared).encode()).hexdigest()[:16]
  return os.path.join(root, "cnn_jax", "arrays", f"{os.path.basename(os.path.dirname(prepared))}"
                      f"-{key}")


def cache_dirs(cfg) -> list[str]:
  """The cache folders tried, in order: beside TFDS's files, then the user's cache."""
  prepared = prepared_dir(cfg)
  return [os.path.join(prepared, FOLDER), _fallback_dir(prepared)]


def _read(folder: str, sources: dict) -> tuple[dict | None, str]:
  """(the manifest's splits as arrays, '') if the cache in `folder` is whole and of these
  sources, else (None, why not)."""
  try:
    with open(os.path.join(folder, MANIFEST)) as f:
      manifest = json.load(f)
  except FileNotFoundError:
    return None, "no decoded cache yet"
  except (OSError, ValueError) as e:
    return None, f"its manifest is unreadable ({type(e).__name__})"
  if manifest.get("format") != FORMAT or manifest.get("sources") != sources:
    return None, "TFDS's prepared files changed since it was built"
  out = {}
  try:
    for split, entry in manifest["splits"].items():
      pair = []
      for part in ("images", "labels"):
        with open(os.path.join(folder, entry[part]["file"]), "rb") as f:
          raw = f.read()
        if hashlib.sha256(raw).hexdigest() != entry[part]["sha256"]:
          return None, f"{entry[part]['file']} does not match its recorded hash (corrupt)"
        pair.append(np.load(io.BytesIO(raw), allow_pickle=False))
      out[split] = tuple(pair)
  except (OSError, ValueError, KeyError, TypeError) as e:
    return None, f"it is incomplete or unreadable ({type(e).__name__})"
  return {"splits": out, "num_classes": int(manifest["num_classes"])}, ""


def _decode_with_tfds(cfg) -> tuple[dict, int]:
  """Every split of `cfg.name` decoded by TFDS, in its order, and the number of classes;
  prepares the dataset first if it is not (imports TensorFlow)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  from cnn_jax.data import tfds_source  # pylint: disable=g-import-not-at-top
  try:
    tf.config.set_visible_devices([], "GPU")
  except (RuntimeError, ValueError):
    pass
  builder = tfds_source._builder(cfg)  # pylint: disable=protected-access
  image_key, label_key = tfds_source._keys(builder, cfg)  # pylint: disable=protected-access
  tfds_source._prepare(builder, cfg)  # pylint: disable=protected-access
  out = {}
  for split in builder.info.splits:
    ds = builder.as_dataset(split=split, shuffle_files=False, batch_size=-1,
                            read_config=tfds.ReadConfig(try_autocache=False))
    ex = tfds.as_numpy(ds)
    out[split] = (np.ascontiguousarray(ex[image_key], np.uint8),
                  np.ascontiguousarray(ex[label_key], np.int32))
  return out, int(builder.info.features[label_key].num_classes)


def _write(folder: str, decoded: dict, num_classes: int, sources: dict) -> None:
  """Writes the cache into `folder` (replacing any there): the arrays, then the manifest."""
  parent = os.path.dirname(folder)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=f".{FOLDER}-", dir=parent)
  try:
    splits = {}
    for split, (images, labels) in decoded.items():
      entry = {}
      for part, array in (("images", images), ("labels", labels)):
        buf = io.BytesIO()
        np.save(buf, array, allow_pickle=False)
        raw = buf.getvalue()
        name = f"{split}.{part}.npy"
        with open(os.path.join(tmp, name), "wb") as f:
          f.write(raw)
        entry[part] = {"file": name, "sha256": hashlib.sha256(raw).hexdigest(),
                       "shape": list(array.shape), "dtype": str(array.dtype)}
      splits[split] = entry
    manifest = {"format": FORMAT, "name": os.path.basename(os.path.dirname(parent)),
                "version": os.path.basename(parent), "num_classes": num_classes,
                "sources": sources, "splits": splits}
    with open(os.path.join(tmp, MANIFEST), "w") as f:
      json.dump(manifest, f, indent=1)
    umask = os.umask(0o022)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp's folder is private
    if os.path.isdir(folder):
      shutil.rmtree(folder)
    try:
      os.rename(tmp, folder)
    except OSError:
      if not os.path.isfile(os.path.join(folder, MANIFEST)):
        raise
      shutil.rmtree(tmp, ignore_errors=True)  # another process wrote the same cache first
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise


def load(cfg) -> Arrays:
  """`cfg.name`'s splits from its decoded cache, (re)built first where it is missing, stale or
  corrupt. Raises KeyError for a dataset not in VERSIONS."""
  VERSIONS[cfg.name]  # pylint: disable=pointless-statement
  prepared = prepared_dir(cfg)
  why = "the dataset is not prepared yet"
  if os.path.isdir(prepared):
    sources = source_hashes(prepared)
    for folder in cache_dirs(cfg):
      if os.path.isdir(folder):
        got, why = _read(folder, sources)
        if got is not None:
          return Arrays(got["splits"], got["num_classes"], folder)
        logging.warning("rebuilding the decoded cache %s: %s", folder, why)
        break
  decoded, num_classes = _decode_with_tfds(cfg)
  if not os.path.isdir(prepared):
    raise UserError(f"data.name={cfg.name!r}: TFDS prepared nothing in {prepared}; set "
                    "data.input='tf.data'")
  sources = source_hashes(prepared)
  for folder in cache_dirs(cfg):
    try:
      _write(folder, decoded, num_classes, sources)
      return Arrays(decoded, num_classes, folder, rebuilt=why)
    except OSError as e:
      logging.warning("cannot write the decoded cache in %s (%s)", folder, e)
  return Arrays(decoded, num_classes, "", rebuilt=why)  # in memory only, this run
