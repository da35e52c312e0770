"""Preprocessing and augmentation, as TensorFlow ops on batches (B, h, w, C) for tf.data maps.

The steps run in the order of the `data.preprocess` keys: pad -> resize | scale_jitter ->
crop -> flip -> rescale -> mean -> std -> pca_colour. `rescale` is a constant factor, so it is
applied at the cast to float32; it commutes with the linear geometric steps before it.

Images of one size are preprocessed a batch at a time; images of varying sizes (or
scale_jitter) one at a time, as batches of one. Both give the same numbers: every random
draw of an example comes from `draws`, a stateless Philox stream addressed by (seed, process)
as key and (epoch, position in the epoch) as counter, so it depends on nothing else.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from cnn_jax.data.np_preprocess import DRAWS, stream_key  # noqa: F401 - shared with it

GREY_WEIGHTS = (0.2989, 0.5870, 0.1140)  # ITU-R 601, as tf.image.rgb_to_grayscale
PHILOX = 1  # tf.random.Algorithm.PHILOX


def plain(fn):
  """`fn` for a tf.data map as written, without AutoGraph's conversion: these functions branch
  only on Python values (config, static shapes), and converting one costs ~0.25 s, again for
  every epoch's pipeline."""
  return tf.autograph.experimental.do_not_convert(fn)


def _grey(rgb):
  x = tf.reduce_sum(tf.cast(rgb, tf.float32) * tf.constant(GREY_WEIGHTS), -1, keepdims=True)
  return tf.cast(tf.clip_by_value(tf.round(x), 0.0, 255.0), tf.uint8)


def to_channels(image, channels: int):
  """uint8 (h, w, any c) -> (h, w, channels): grey is repeated to RGB, RGB(A) is weighted to
  grey, an alpha channel is dropped."""
  c = image.shape[-1]
  if c is None:
    n = tf.shape(image)[-1]
    if channels == 1:
      image = tf.cond(n >= 3, lambda: _grey(image[..., :3]), lambda: image[..., :1])
    else:
      image = tf.cond(n >= 3, lambda: image[..., :3], lambda: tf.repeat(image[..., :1], 3, -1))
  elif channels == 1:
    image = _grey(image[..., :3]) if c >= 3 else image[..., :1]
  else:
    image = image[..., :3] if c >= 3 else tf.repeat(image[..., :1], 3, -1)
  image.set_shape([None, None, channels])
  return image


def draws(key, epoch, first_position, n):
  """(n, DRAWS) uniforms in [0, 1) for the examples at positions first_position, ...,
  first_position + n - 1 of `epoch`: Philox with counter (2 x position, epoch), 4 floats per
  counter step, so each example's draws are the same however the positions are batched."""
  counter = tf.stack([tf.cast(first_position, tf.uint64) * (DRAWS // 4),
                      tf.cast(epoch, tf.uint64)])
  u = tf.raw_ops.StatelessRandomUniformV2(shape=tf.reshape(n * DRAWS, [1]), key=key,
                                          counter=counter, alg=PHILOX, dtype=tf.float32)
  return tf.reshape(u, [n, DRAWS])


def _index(u, n):
  """Uniform ints in [0, n) from uniforms u in [0, 1)."""
  return tf.minimum(tf.cast(tf.floor(u * tf.cast(n, tf.float32)), tf.int32), n - 1)


def resize_shorter(x, side):
  """Bilinear resize (antialiased) so the shorter side is `side`, keeping the aspect ratio
  (AlexNet Sec. 2: 'rescaled the image such that the shorter side was of length 256')."""
  hw = tf.cast(tf.shape(x)[-3:-1], tf.float32)
  side = tf.cast(side, tf.float32)
  size = tf.cast(tf.round(hw * side / tf.reduce_min(hw)), tf.int32)  # shorter side -> side
  return tf.image.resize(x, size, method="bilinear", antialias=True)


def _pad(x, p):
  return tf.pad(x, [[0, 0], [p, p], [p, p], [0, 0]]) if p else x


def random_crop(x, height, width, uy, ux):
  """A uniformly placed height x width window per image (AlexNet Sec. 4.1, VGG Sec. 3.1); an
  image smaller than the window is first zero-padded to it, centred."""
  shape = tf.shape(x)
  th, tw = tf.maximum(shape[1], height), tf.maximum(shape[2], width)
  x = tf.image.pad_to_bounding_box(x, (th - shape[1]) // 2, (tw - shape[2]) // 2, th, tw)
  rows = _index(uy, th - height + 1)[:, None] + tf.range(height)[None]
  cols = _index(ux, tw - width + 1)[:, None] + tf.range(width)[None]
  x = tf.gather(x, rows, axis=1, batch_dims=1)
  return tf.gather(x, cols, axis=2, batch_dims=1)


def pca_offset(u, eigval, eigvec, std):
  """AlexNet Sec. 4.1: [p1, p2, p3][a1 l1, a2 l2, a3 l3]^T with a_i ~ N(0, std), one draw
  per image, added to every RGB pixel. (B, 3) uniforms -> (B, 3) offsets."""
  u = tf.clip_by_value(u, 1e-7, 1.0 - 1e-7)
  alpha = std * np.sqrt(2.0) * tf.math.erfinv(2.0 * u - 1.0)  # inverse normal CDF
  return tf.matmul(alpha * tf.constant(eigval, tf.float32), tf.constant(eigvec, tf.float32),
                   transpose_b=True)


class Preprocessor:
  """The preprocessing of one pipeline: `p` is the `data.preprocess` group, `image_shape` the
  model's (H, W, C), `stats` the training-set statistics (see stats.py), `mean_mode` the mean
  actually subtracted ('pixel' falls back to 'channel' when image sizes vary)."""

  def __init__(self, p, image_shape, stats, mean_mode):
    self.p = p
    self.h, self.w, self.c = image_shape
    self.stats = stats
    self.mean_mode = mean_mode
    self.scale = 1.0 / 255.0 if p.rescale else 1.0

  def precrop(self, images, u=None):
    """uint8 (B, h, w, C) -> float32 before the crop: cast and rescale, pad, resize |
    scale_jitter. `u` (B, DRAWS) at train, None at eval, where scale_jitter resizes to
    Q = (S_min + S_max) // 2 (VGG Sec. 3.2). With scale_jitter at train, B must be 1."""
    p = self.p
    x = _pad(tf.cast(images, tf.float32) * self.scale, p.pad)
    if p.resize:
      x = resize_shorter(x, p.resize)
    elif p.scale_jitter:
      s_min, s_max = p.scale_jitter
      if u is None:
        side = (s_min + s_max) // 2
      else:  # VGG Sec. 3.1 multi-scale training: S ~ U[S_min, S_max] per image
        side = s_min + _index(u[0, 0], s_max - s_min + 1)
      x = resize_shorter(x, side)
    return x

  def __call__(self, images, u=None):
    """uint8 (B, h, w, C) -> float32 (B, H, W, C); augmented when `u` (B, DRAWS) is given."""
    p, st, c = self.p, self.stats, self.c
    x = self.precrop(images, u)
    if self.mean_mode == "pixel":  # crop and flip the mean image with the image
      mean = tf.constant(st["mean_image"], tf.float32)
      x = tf.concat([x, tf.broadcast_to(mean, tf.shape(x))], -1)
    if u is not None and p.random_crop:
      x = random_crop(_pad(x, p.crop_padding), self.h, self.w, u[:, 1], u[:, 2])
    else:
      x = tf.image.resize_with_crop_or_pad(x, self.h, self.w)
    if u is not None and p.flip:
      x = tf.where((u[:, 3] < 0.5)[:, None, None, None], tf.reverse(x, [2]), x)
    if self.mean_mode == "pixel":
      x = x[..., :c] - x[..., c:]
    elif self.mean_mode == "channel":
      x = x - tf.constant(st["mean"], tf.float32)
    if p.std == "channel":
      x = x / tf.constant(st["std"], tf.float32)
    if u is not None and p.pca_colour:
      offset = pca_offset(u[:, 4:7], st["eigval"], st["eigvec"], float(p.pca_colour))
      x = x + offset[:, None, None]
    x.set_shape([None, self.h, self.w, c])
    return x


def precrop_shape(p, shape):
  """The (h, w) every image has before the crop, or None when sizes vary (unknown image
  sizes, or scale_jitter)."""
  h, w = shape[:2]
  if h is None or w is None or p.scale_jitter:
    return None
  h, w = h + 2 * p.pad, w + 2 * p.pad
  if p.resize:
    hw = np.array([h, w], np.float32)  # the same float32 arithmetic as resize_shorter
    h, w = (int(v) for v in np.round(hw * np.float32(p.resize) / hw.min()))
  return h, w
