"""The preprocessing of preprocess.py in NumPy, for the array input path (array_pipeline.py):
pad, random or central crop (crop_padding), flip, rescale, the mean (channel or pixel) and
std, on batches of one image size, without TensorFlow.

The random draws are TensorFlow's own: `draws` is Philox-4x32-10 exactly as TF's stateless
uniform op runs it (the key from (seed, process), the counter from (2 x position, epoch), the
low 23 bits of each word as the mantissa of a float in [1, 2), less 1), so an example at a
given position of an epoch gets the same crop and flip on either input path, and the
arithmetic after it is the same float32 arithmetic: the two paths give the same numbers for
the same images (tests/test_arrays.py compares them).
"""

from __future__ import annotations

import numpy as np

DRAWS = 8  # uniforms per example: scale, crop y, crop x, flip, 3 PCA alphas, 1 spare
GREY_WEIGHTS = np.array((0.2989, 0.5870, 0.1140), np.float32)  # as preprocess.GREY_WEIGHTS

_M = (np.uint64(0xD2511F53), np.uint64(0xCD9E8D57))
_W = (np.uint32(0x9E3779B9), np.uint32(0xBB67AE85))
_LOW = np.uint64(0xFFFFFFFF)


def stream_key(seed: int, process_index: int) -> np.ndarray:
  """The Philox key of one run's process: (1,) uint64 from (seed, process_index)."""
  return np.random.SeedSequence([seed % 2**63, process_index]).generate_state(1, np.uint64)


def shuffle_seed(seed: int, epoch: int, process_index: int) -> int:
  """The seed of epoch `epoch`'s order on process `process_index`."""
  return int(np.random.SeedSequence([seed % 2**63, epoch, process_index])
             .generate_state(1, np.uint32)[0])


def philox(counters: np.ndarray, key: int) -> np.ndarray:
  """Philox-4x32-10 of `counters` (n, 4) uint32 under the 64-bit `key`: (n, 4) uint32."""
  c = [counters[:, i].astype(np.uint64) for i in range(4)]
  k0, k1 = np.uint32(key & 0xFFFFFFFF), np.uint32(key >> 32)
  with np.errstate(over="ignore"):
    for r in range(10):
      p0, p1 = _M[0] * c[0], _M[1] * c[2]
      c = [(p1 >> np.uint64(32)) ^ c[1] ^ np.uint64(k0), p1 & _LOW,
           (p0 >> np.uint64(32)) ^ c[3] ^ np.uint64(k1), p0 & _LOW]
      if r < 9:
        k0, k1 = k0 + _W[0], k1 + _W[1]
  return np.stack(c, 1).astype(np.uint32)


def draws(key: np.ndarray, epoch: int, first_position: int, n: int) -> np.ndarray:
  """(n, DRAWS) float32 uniforms in [0, 1) for the examples at positions first_position, ...,
  first_position + n - 1 of `epoch`: preprocess.draws's numbers, without TensorFlow."""
  steps = n * DRAWS // 4
  low = np.uint64(first_position * (DRAWS // 4)) + np.arange(steps, dtype=np.uint64)
  epoch = np.uint64(epoch)
  counters = np.stack([low & _LOW, low >> np.uint64(32),
                       np.full(steps, epoch & _LOW), np.full(steps, epoch >> np.uint64(32))], 1)
  words = philox(counters.astype(np.uint32), int(key[0]))
  floats = ((words & np.uint32(0x7FFFFF)) | np.uint32(127 << 23)).view(np.float32)
  return (floats - np.float32(1.0)).reshape(n, DRAWS)


def to_channels(images: np.ndarray, channels: int) -> np.ndarray:
  """uint8 (N, h, w, c) -> (N, h, w, channels), as preprocess.to_channels."""
  c = images.shape[-1]
  if c == channels:
    return images
  if channels == 1:
    if c < 3:
      return images[..., :1]
    x = np.sum(images[..., :3].astype(np.float32) * GREY_WEIGHTS, -1, keepdims=True)
    return np.clip(np.round(x), 0, 255).astype(np.uint8)
  return images[..., :3] if c >= 3 else np.repeat(images[..., :1], 3, -1)


def _index(u: np.ndarray, n) -> np.ndarray:
  """Uniform ints in [0, n) from uniforms u in [0, 1), in preprocess._index's float32."""
  n = np.asarray(n)
  return np.minimum(np.floor(u * n.astype(np.float32)).astype(np.int32), n - 1)


def _pad(x: np.ndarray, p: int) -> np.ndarray:
  return np.pad(x, [(0, 0), (p, p), (p, p), (0, 0)]) if p else x


def crop_or_pad(x: np.ndarray, h: int, w: int) -> np.ndarray:
  """The central h x w window, zero-padded where x is smaller (tf.image.resize_with_crop_or_pad)."""
  H, W = x.shape[1:3]
  oy, ox = max((H - h) // 2, 0), max((W - w) // 2, 0)
  x = x[:, oy:oy + min(h, H), ox:ox + min(w, W)]
  py, px = max((h - H) // 2, 0), max((w - W) // 2, 0)
  if py or px or x.shape[1:3] != (h, w):
    x = np.pad(x, [(0, 0), (py, h - x.shape[1] - py), (px, w - x.shape[2] - px), (0, 0)])
  return x


def random_crop(x: np.ndarray, h: int, w: int, uy: np.ndarray, ux: np.ndarray) -> np.ndarray:
  """A uniformly placed h x w window per image, as preprocess.random_crop."""
  B, H, W = x.shape[:3]
  th, tw = max(H, h), max(W, w)
  if (th, tw) != (H, W):
    y0, x0 = (th - H) // 2, (tw - W) // 2
    x = np.pad(x, [(0, 0), (y0, th - H - y0), (x0, tw - W - x0), (0, 0)])
  rows = _index(uy, th - h + 1)[:, None] + np.arange(h)[None]
  cols = _index(ux, tw - w + 1)[:, None] + np.arange(w)[None]
  return x[np.arange(B)[:, None, None], rows[:, :, None], cols[:, None, :]]


class Preprocessor:
  """preprocess.Preprocessor's steps in NumPy (no resize, scale_jitter or pca_colour): `p` is
  the `data.preprocess` group, `image_shape` the model's (H, W, C), `stats` the training-set
  statistics (stats.py's keys), `mean_mode` the mean subtracted."""

  def __init__(self, p, image_shape, stats, mean_mode):
    self.p = p
    self.h, self.w, self.c = image_shape
    self.stats = stats
    self.mean_mode = mean_mode
    self.scale = 1.0 / 255.0 if p.rescale else 1.0

  def precrop(self, images: np.ndarray, u=None) -> np.ndarray:
    """uint8 (B, h, w, C) -> float32 before the crop: cast and rescale, pad."""
    return _pad(images.astype(np.float32) * np.float32(self.scale), self.p.pad)

  def __call__(self, images: np.ndarray, u=None) -> np.ndarray:
    """uint8 (B, h, w, C) -> float32 (B, H, W, C); augmented when `u` (B, DRAWS) is given."""
    p, st, c = self.p, self.stats, self.c
    x = self.precrop(images)
    if self.mean_mode == "pixel":  # crop and flip the mean image with the image
      mean = np.broadcast_to(st["mean_image"].astype(np.float32), x.shape)
      x = np.concatenate([x, mean], -1)
    if u is not None and p.random_crop:
      x = random_crop(_pad(x, p.crop_padding), self.h, self.w, u[:, 1], u[:, 2])
    else:
      x = crop_or_pad(x, self.h, self.w)
    if u is not None and p.flip:
      x = np.where((u[:, 3] < 0.5)[:, None, None, None], x[:, :, ::-1], x)
    if self.mean_mode == "pixel":
      x = x[..., :c] - x[..., c:]
    elif self.mean_mode == "channel":
      x = x - st["mean"].astype(np.float32)
    if p.std == "channel":
      x = x / st["std"].astype(np.float32)
    return np.ascontiguousarray(x, np.float32)


def statistics(images: np.ndarray, prep: Preprocessor, *, pixel: bool) -> dict:
  """stats.compute's mean, mean_image and std of `images` (uint8, un-augmented) as they enter
  the crop, summed in float64, 256 at a time."""
  total = sumsq = image = None
  n = 0
  for i in range(0, len(images), 256):
    x = prep.precrop(images[i:i + 256]).astype(np.float64)
    flat = x.reshape(-1, x.shape[-1])
    s, q = flat.sum(0), (flat * flat).sum(0)
    total, sumsq = (s, q) if total is None else (total + s, sumsq + q)
    if pixel:
      image = x.sum(0) if image is None else image + x.sum(0)
    n += flat.shape[0]
  if total is None:
    raise ValueError("no training images to compute statistics from")
  mean, second = total / n, sumsq / n
  out = {"mean": mean, "samples": np.array(len(images))}
  if pixel:
    out["mean_image"] = image / len(images)
    var = second - (out["mean_image"] ** 2).reshape(-1, mean.size).mean(0)
  else:
    var = second - mean ** 2
  std = np.sqrt(np.maximum(var, 0.0))
  out["std"] = np.where(std > 1e-8, std, 1.0)
  return {k: (v.astype(np.float32) if k != "samples" else v) for k, v in out.items()}
