"""MNIST and Fashion-MNIST from their original gzip'd IDX files as NumPy arrays, without
TensorFlow: the files checked against the datasets' published MD5 sums, then decoded.

The IDX format (LeCun et al., the MNIST page): a big-endian magic number whose third byte is
the element type (0x08: unsigned byte) and fourth the number of dimensions, the dimensions as
big-endian int32, then the data in C order.

  images, labels = idx.load(VENDORED_FASHION_MNIST, "train")   # uint8 (60000, 28, 28, 1), int32
"""

from __future__ import annotations

import gzip
import hashlib
import os

import numpy as np

from cnn_jax.errors import UserError

FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
         "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
# The published MD5 sums of both datasets' files (the vendored copy's README lists
# Fashion-MNIST's; MNIST's are those of yann.lecun.com's files, as TFDS registers them).
MD5 = {
    "train-images-idx3-ubyte.gz": ("8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                                   "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
    "train-labels-idx1-ubyte.gz": ("25c81989df183df01b3e8a0aad5dffbe",
                                   "d53e105ee54ea40749a09fcbcd1e9432"),
    "t10k-images-idx3-ubyte.gz": ("bef4ecab320f06d8554ea6380940ec79",
                                  "9fb629c4189551a2d022fa330f9573f3"),
    "t10k-labels-idx1-ubyte.gz": ("bb300cfdad3c16e7a12a480ee83cd310",
                                  "ec29112dd5afa0611ce80d1b7f02629c"),
}


def decode(raw: bytes) -> np.ndarray:
  """The array of one uncompressed IDX file of unsigned bytes."""
  if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] != 0x08:
    raise ValueError("not an IDX file of unsigned bytes")
  ndim = raw[3]
  shape = tuple(int(d) for d in np.frombuffer(raw, ">i4", count=ndim, offset=4))
  data = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
  if data.size != int(np.prod(shape)):
    raise ValueError(f"IDX header says {shape}, the file holds {data.size} bytes")
  return data.reshape(shape)


def _read(path: str) -> bytes:
  with open(path, "rb") as f:
    compressed = f.read()
  name = os.path.basename(path)
  if hashlib.md5(compressed).hexdigest() not in MD5.get(name, ()):
    raise UserError(f"{path} is not the original {name} (its MD5 matches neither MNIST's nor "
                    "Fashion-MNIST's); replace it with the original file")
  return gzip.decompress(compressed)


def load(directory: str, split: str) -> tuple[np.ndarray, np.ndarray]:
  """(images uint8 (N, 28, 28, 1), labels int32 (N,)) of `split` ('train' or 'test') from the
  original files in `directory`."""
  paths = [os.path.join(directory, f) for f in FILES[split]]
  missing = [p for p in paths if not os.path.isfile(p)]
  if missing:
    raise UserError(f"{missing[0]} does not exist; point at a folder with the four original "
                    "MNIST or Fashion-MNIST files")
  images, labels = (decode(_read(p)) for p in paths)
  if images.shape[0] != labels.shape[0]:
    raise UserError(f"{paths[0]} holds {images.shape[0]} images, {paths[1]} "
                    f"{labels.shape[0]} labels; use the files of one dataset")
  return images[..., None], labels.astype(np.int32)
