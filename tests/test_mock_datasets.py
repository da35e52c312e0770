"""The 3-channel pipelines on TFDS's mock data (CIFAR-10 and ImageNet are not on this
machine): AlexNet's PCA colour augmentation (Krizhevsky et al. 2012, Sec. 4.1), the batched
and per-image paths, and AlexNet's and VGG's ImageNet preprocessing."""

import numpy as np
import tensorflow_datasets as tfds

from cnn_jax import data
from helpers import epoch, stack

def mock_cfg(name, **pre):
  cfg = data.defaults()
  cfg.name, cfg.input = name, "tf.data"
  cfg.preprocess.update(pre)
  return cfg


def test_cifar10_mock_pca_colour_adds_a_constant_rgb_offset_per_image():
  with tfds.testing.mock_data(num_examples=16):
    plain = data.build(mock_cfg("cifar10"), (32, 32, 3), 8, 8, seed=2)
    pca = data.build(mock_cfg("cifar10", pca_colour=0.1), (32, 32, 3), 8, 8, seed=2)
    assert plain.num_classes == 10 and pca.stats["eigvec"].shape == (3, 3)
    eigval = pca.stats["eigval"]
    assert eigval.shape == (3,) and (eigval >= 0).all() and eigval[0] >= eigval[2]
    a, b = stack(epoch(plain)), stack(epoch(pca))
  diff = (b - a).reshape(len(a), -1, 3)
  np.testing.assert_allclose(diff, diff[:, :1].repeat(diff.shape[1], 1), atol=1e-5)
  offsets = diff[:, 0]
  assert np.abs(offsets).max() > 1e-4
  assert len({tuple(np.round(o, 6)) for o in offsets}) == len(a)  # one draw per image
  # eval is never augmented
  with tfds.testing.mock_data(num_examples=16):
    np.testing.assert_array_equal(stack(list(plain.eval_batches())),
                                  stack(list(pca.eval_batches())))


def test_cifar10_mock_batched_and_per_image_paths_agree():
  with tfds.testing.mock_data(num_examples=16):
    cfg = mock_cfg("cifar10", random_crop=True, crop_padding=4, flip=True, mean="pixel",
                   std="channel", pca_colour=0.1)
    ds = data.build(cfg, (32, 32, 3), 8, 8, seed=5)
    assert ds.batched and ds.stats["mean_image"].shape == (32, 32, 3)
    batched = epoch(ds, 1)
    ds.batched = False
    single = epoch(ds, 1)
  np.testing.assert_allclose(stack(batched), stack(single), atol=1e-5)


def test_imagenet2012_mock_alexnet_and_vgg_pipelines():
  with tfds.testing.mock_data(num_examples=12):
    alex = mock_cfg("imagenet2012", resize=40, random_crop=True, flip=True, mean="pixel",
                    pca_colour=0.1)
    alex.validation_fraction, alex.eval_split = 0.0, "validation"  # ILSVRC's own
    ds = data.build(alex, (32, 32, 3), 4, 8)
    assert ds.num_classes == 1000 and not ds.batched
    assert ds.mean_mode == "channel"  # sizes vary: pixel falls back to per-channel
    batches = epoch(ds)
    assert len(batches) == 3 and all(b["image"].shape == (4, 32, 32, 3) for b in batches)
    np.testing.assert_array_equal(stack(batches), stack(epoch(data.build(alex, (32, 32, 3), 4, 8))))
    vgg = mock_cfg("imagenet2012", scale_jitter=(32, 48), random_crop=True, flip=True,
                   mean="channel")
    vgg.validation_fraction, vgg.eval_split = 0.0, "validation"
    ds = data.build(vgg, (32, 32, 3), 4, 8)
    assert all(b["image"].shape == (4, 32, 32, 3) for b in epoch(ds))
    evals = list(ds.eval_batches())
    assert [b["image"].shape for b in evals] == [(8, 32, 32, 3)] * 2
    assert stack(evals, "mask").sum() == 12
