"""The named splits: the held-out validation indices, TFDS split strings over the held-in and
held-out parts, and the processes' even shares (cnn_jax/data/splits.py)."""

import numpy as np
import pytest

from cnn_jax.data import splits
from cnn_jax.errors import ConfigError


def test_holdout_is_a_seeded_sorted_subset_of_the_rounded_size():
  held = splits.holdout(60000, 0.1, seed=0)
  assert len(held) == 6000 and len(set(held.tolist())) == 6000
  assert (np.diff(held) > 0).all() and 0 <= held[0] and held[-1] < 60000
  np.testing.assert_array_equal(held, splits.holdout(60000, 0.1, seed=0))
  other = splits.holdout(60000, 0.1, seed=1)
  assert 0.05 < len(np.intersect1d(held, other)) / 6000 < 0.15  # about 10% overlap by chance
  assert len(splits.holdout(25, 0.1, 0)) == 3 and len(splits.holdout(10, 0.0, 0)) == 0
  # spread over the whole split, not a block at one end
  assert np.histogram(held, bins=10, range=(0, 60000))[0].min() > 500


def test_select_slices_the_named_parts():
  names = {"train": 54000, "validation": 6000, "test": 10000}
  assert splits.select("train[:25%]", "train_split", names, "d") == [("train", 0, 13500)]
  assert splits.select("validation[:100]+test[-10:]", "eval_split", names, "d") == [
      ("validation", 0, 100), ("test", 9990, 10000)]
  with pytest.raises(ConfigError, match=r"data.eval_split='val' is not a split of d"):
    splits.select("val", "eval_split", names, "d")
  with pytest.raises(ConfigError, match="validation_fraction > 0"):
    splits.select("validation", "eval_split", {"train": 10, "test": 5}, "d")


@pytest.mark.parametrize("total,count", [(10, 3), (7, 7), (2, 4), (60000, 8)])
def test_share_ranges_partition_evenly(total, count):
  ranges = [splits.share_range(total, i, count) for i in range(count)]
  assert ranges[0][0] == 0 and ranges[-1][1] == total
  assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
  sizes = [hi - lo for lo, hi in ranges]
  assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)
  assert max(sizes) == splits.largest_share(total, count)


def test_fingerprint_names_the_set():
  a = splits.fingerprint(np.array([1, 2, 3]))
  assert a == splits.fingerprint(np.array([1, 2, 3])) != splits.fingerprint(np.array([1, 2, 4]))
  assert splits.fingerprint(["a/1.png", "b/2.png"]) != splits.fingerprint(["a/1.png"])
