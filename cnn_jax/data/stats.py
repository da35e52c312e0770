"""Training-set statistics for mean/std normalisation and AlexNet's PCA colour augmentation.

Estimated once, from the first `stats_samples` training images of process 0's share (so every
process computes the same numbers), each as it enters the crop at eval (decoded, rescaled,
padded, resized; un-augmented). Sums are taken in float64.

  mean       (C,)       per-channel mean (VGG Sec. 2.1: 'subtracting the mean RGB value')
  mean_image (h, w, C)  the mean image at the pre-crop size (AlexNet Sec. 2), mean='pixel' only
  std        (C,)       per-channel std of the pixels around the mean that is subtracted
  eigval     (3,)       eigenvalues of the RGB pixel covariance, largest first (AlexNet Sec. 4.1)
  eigvec     (3, 3)     the matching eigenvectors, as columns
  samples    ()         how many images these come from

The covariance is taken in the space the colour offset is added in: divided by std x std^T
when std='channel'.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from cnn_jax.data.preprocess import plain


def _moments(x):
  x = tf.cast(x, tf.float64)
  flat = tf.reshape(x, [-1, tf.shape(x)[-1]])
  return {"sum": tf.reduce_sum(flat, 0), "sumsq": tf.reduce_sum(flat * flat, 0),
          "gram": tf.matmul(flat, flat, transpose_a=True),
          "n": tf.cast(tf.shape(flat)[0], tf.float64)}


def compute(images: tf.data.Dataset, *, pixel: bool, std_channel: bool, pca: bool) -> dict:
  """Statistics of `images`, batches of float32 (B, h, w, C) pre-crop images (all the same
  size if `pixel`)."""
  def per_batch(x):
    m = _moments(x)
    m["count"] = tf.shape(x)[0]
    if pixel:
      m["image"] = tf.reduce_sum(tf.cast(x, tf.float64), 0)
    return m

  acc = None
  opts = tf.data.Options()
  opts.deterministic = True
  ds = images.map(plain(per_batch), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  for m in ds.prefetch(tf.data.AUTOTUNE).with_options(opts).as_numpy_iterator():
    acc = m if acc is None else {k: acc[k] + m[k] for k in acc}
  if acc is None:
    raise ValueError("no training images to compute statistics from")
  n, count = float(acc["n"]), int(acc["count"])
  mean = acc["sum"] / n
  second = acc["sumsq"] / n
  out = {"mean": mean, "samples": np.array(count)}
  if pixel:
    mean_image = acc["image"] / count
    out["mean_image"] = mean_image
    var = second - (mean_image ** 2).reshape(-1, mean.size).mean(0)  # around the mean image
  else:
    var = second - mean ** 2
  std = np.sqrt(np.maximum(var, 0.0))
  out["std"] = np.where(std > 1e-8, std, 1.0)  # a constant channel is left unscaled
  if pca:
    cov = acc["gram"] / n - np.outer(mean, mean)
    if std_channel:
      cov = cov / np.outer(out["std"], out["std"])
    eigval, eigvec = np.linalg.eigh(cov)
    order = np.argsort(eigval)[::-1]
    out["eigval"] = np.maximum(eigval[order], 0.0)
    out["eigvec"] = eigvec[:, order]
  return {k: (v.astype(np.float32) if k != "samples" else v) for k, v in out.items()}
