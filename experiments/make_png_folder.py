"""An image-folder dataset of real images: Fashion-MNIST classes written out as PNG files.

  python experiments/make_png_folder.py --out=workdirs/fmnist_png [--classes=shirt,coat,pullover]
      [--per_class=1000] [--test_per_class=500]

Writes OUT/train/<class>/<n>.png and OUT/test/<class>/<n>.png (28x28 grayscale, lossless)
from the Fashion-MNIST copy vendored in cnn_jax/data/vendor/fashion_mnist (its own train and
test files), the first `per_class` images of each class in file order. The fine-tuning
example (configs/finetune.py, README "Transfer and fine-tuning") trains on this folder with
`data.name=folder`, `data.folder=OUT/train`, `data.test_folder=OUT/test`.
"""

from __future__ import annotations

import argparse
import gzip
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from cnn_jax.data import VENDORED_FASHION_MNIST  # noqa: E402

CLASSES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker",
           "bag", "ankle-boot")
FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
         "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}


def load(split: str):
  """uint8 images (N, 28, 28) and labels (N,) of the vendored IDX files."""
  images, labels = (os.path.join(VENDORED_FASHION_MNIST, f) for f in FILES[split])
  with gzip.open(images) as f:
    x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
  with gzip.open(labels) as f:
    y = np.frombuffer(f.read(), np.uint8, offset=8)
  return x, y


def write(out: str, classes, per_class: dict[str, int]) -> dict:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  counts = {}
  for split, n in per_class.items():
    x, y = load(split)
    for name in classes:
      folder = os.path.join(out, split, name)
      os.makedirs(folder, exist_ok=True)
      chosen = np.flatnonzero(y == CLASSES.index(name))[:n]
      for i, idx in enumerate(chosen):
        png = tf.io.encode_png(x[idx][:, :, None]).numpy()
        with open(os.path.join(folder, f"{i:05d}.png"), "wb") as f:
          f.write(png)
      counts[f"{split}/{name}"] = len(chosen)
  return counts


def main() -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--out", default="workdirs/fmnist_png")
  p.add_argument("--classes", default="shirt,coat,pullover",
                 help=f"comma-separated, of {', '.join(CLASSES)}")
  p.add_argument("--per_class", type=int, default=1000)
  p.add_argument("--test_per_class", type=int, default=500)
  a = p.parse_args()
  classes = [c.strip() for c in a.classes.split(",") if c.strip()]
  bad = [c for c in classes if c not in CLASSES]
  if bad or len(classes) < 2:
    print(f"error: --classes={a.classes!r} must name two or more of {', '.join(CLASSES)}",
          file=sys.stderr)
    return 2
  counts = write(a.out, classes, {"train": a.per_class, "test": a.test_per_class})
  print(f"wrote {sum(counts.values())} PNG files to {a.out}: "
        + ", ".join(f"{k} {v}" for k, v in counts.items()))
  return 0


if __name__ == "__main__":
  sys.exit(main())
