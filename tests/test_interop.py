"""Weights from torchvision (.pth) and Keras (.h5, .keras) give the source framework's logits.

torchvision itself is not needed: the networks are built here from torch.nn with
torchvision's module layout (`features.<i>`, `avgpool`, `classifier.<i>`), so their
state_dict keys are torchvision's; narrowed (as model.width narrows cnn_jax's) and at small
inputs, so each test takes seconds. The adaptive pooling before the classifier is real,
so the tests at inputs whose last map is 1x1 or 2x2 check the folding of that pooling into
fc6 as well as the NCHW -> NHWC flatten order.
"""

import numpy as np
import pytest
from flax import nnx

from cnn_jax import models, transfer
from cnn_jax.errors import UserError
from helpers import apply, model_cfg

torch = pytest.importorskip("torch")
nn = torch.nn

VGG = {"A": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
       "D": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
             512, 512, 512, "M"]}


class TorchvisionLike(nn.Module):
  def __init__(self, features, pool, classifier):
    super().__init__()
    self.features, self.avgpool, self.classifier = features, nn.AdaptiveAvgPool2d(pool), \
        classifier

  def forward(self, x):
    return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def torch_vgg(variant, width, bn, classes):
  layers, c = [], 3
  for v in VGG[variant]:
    if v == "M":
      layers.append(nn.MaxPool2d(2, 2))
      continue
    v = int(v * width)
    layers += [nn.Conv2d(c, v, 3, padding=1)] + ([nn.BatchNorm2d(v)] if bn else []) + \
        [nn.ReLU(True)]
    c = v
  h = int(4096 * width)
  return TorchvisionLike(nn.Sequential(*layers), (7, 7), nn.Sequential(
      nn.Linear(c * 49, h), nn.ReLU(True), nn.Dropout(), nn.Linear(h, h), nn.ReLU(True),
      nn.Dropout(), nn.Linear(h, classes)))


def torch_alexnet(width, classes):
  w = lambda n: int(n * width)
  return TorchvisionLike(nn.Sequential(
      nn.Conv2d(3, w(64), 11, 4, 2), nn.ReLU(True), nn.MaxPool2d(3, 2),
      nn.Conv2d(w(64), w(192), 5, padding=2), nn.ReLU(True), nn.MaxPool2d(3, 2),
      nn.Conv2d(w(192), w(384), 3, padding=1), nn.ReLU(True),
      nn.Conv2d(w(384), w(256), 3, padding=1), nn.ReLU(True),
      nn.Conv2d(w(256), w(256), 3, padding=1), nn.ReLU(True), nn.MaxPool2d(3, 2)),
      (6, 6), nn.Sequential(
          nn.Dropout(), nn.Linear(w(256) * 36, w(4096)), nn.ReLU(True), nn.Dropout(),
          nn.Linear(w(4096), w(4096)), nn.ReLU(True), nn.Linear(w(4096), classes)))


def randomised(net):
  """Batch-norm statistics and affine parameters away from their identity defaults."""
  torch.manual_seed(1)
  for m in net.modules():
    if isinstance(m, nn.BatchNorm2d):
      m.running_mean.uniform_(-0.5, 0.5)
      m.running_var.uniform_(0.5, 2.0)
      m.weight.data.uniform_(0.5, 1.5)
      m.bias.data.uniform_(-0.5, 0.5)
  return net.eval()


def imported_logits(cfg, x_nhwc):
  model = models.build(cfg, seed=3)
  graph, params, rest = nnx.split(models.view(model, train=False), nnx.Param, ...)
  params, rest, copied = transfer.initialise(cfg, params, rest)
  return np.asarray(apply(nnx.merge(graph, params, rest), x_nhwc)), copied


def assert_same_logits(ours, theirs):
  assert ours.shape == theirs.shape
  scale = np.max(np.abs(theirs))
  np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4 * scale)


@pytest.mark.parametrize("variant,bn,size", [("A", True, 32), ("D", False, 64)])
def test_torchvision_vgg_state_dict_gives_torch_logits(tmp_path, variant, bn, size):
  width = 1 / 16
  torch.manual_seed(0)
  net = randomised(torch_vgg(variant, width, bn, classes=10))
  path = str(tmp_path / "vgg.pth")
  torch.save(net.state_dict(), path)
  x = np.random.default_rng(0).normal(size=(2, size, size, 3)).astype(np.float32)
  with torch.no_grad():
    theirs = net(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
  cfg = model_cfg("vgg", variant, width=width, input_shape=(size, size, 3), num_classes=10,
                  norm="batchnorm" if bn else "paper", init_from=path, init_from_layers="all")
  ours, copied = imported_logits(cfg, x)
  assert_same_logits(ours, theirs)
  convs = 8 if variant == "A" else 13
  assert len(copied) == 2 * convs + 6 + (4 * convs if bn else 0)


def test_torchvision_alexnet_state_dict_gives_torch_logits(tmp_path):
  width, size = 1 / 8, 100  # pool5 is 2x2 here; torchvision pools it to 6x6
  torch.manual_seed(0)
  net = randomised(torch_alexnet(width, classes=7))
  path = str(tmp_path / "alexnet.pth")
  torch.save({"state_dict": net.state_dict()}, path)  # a wrapped state_dict is found too
  x = np.random.default_rng(1).normal(size=(2, size, size, 3)).astype(np.float32)
  with torch.no_grad():
    theirs = net(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
  cfg = model_cfg("alexnet", "torchvision", width=width, input_shape=(size, size, 3),
                  num_classes=7, init_from=path, init_from_layers="all")
  ours, _ = imported_logits(cfg, x)
  assert_same_logits(ours, theirs)


def test_a_pth_of_another_architecture_names_the_config_that_fits(tmp_path):
  torch.manual_seed(0)
  path = str(tmp_path / "vgg16.pth")
  torch.save(torch_vgg("D", 1 / 16, False, 10).state_dict(), path)
  cfg = model_cfg("vgg", "A", width=1 / 16, input_shape=(32, 32, 3), init_from=path,
                  init_from_layers="all")
  with pytest.raises(UserError, match=r"torchvision vgg16 \(13 convolutions, 3 FC layers\) "
                                      r"but vgg 'A' has 8 and 3; use configs/vgg.py:D"):
    imported_logits(cfg, None)
  bn = model_cfg("vgg", "D", width=1 / 16, input_shape=(32, 32, 3), init_from=path,
                 norm="batchnorm", init_from_layers="all")
  with pytest.raises(UserError, match=r"without batch norm.*--config.model.norm=paper"):
    imported_logits(bn, None)
  other = str(tmp_path / "resnet.pth")
  torch.save({"conv1.weight": torch.zeros(4, 3, 3, 3), "fc.weight": torch.zeros(2, 4)}, other)
  with pytest.raises(UserError, match="is not a torchvision AlexNet or VGG state_dict"):
    imported_logits(model_cfg("vgg", "A", width=1 / 16, input_shape=(32, 32, 3),
                              init_from=other, init_from_layers="all"), None)


def keras_vgg16(keras, width, size, classes):
  """keras.applications.VGG16's layers, names and order, narrowed by `width`."""
  L, w = keras.layers, lambda n: int(n * width)
  x = inputs = keras.Input((size, size, 3))
  for block, (maps, convs) in enumerate([(64, 2), (128, 2), (256, 3), (512, 3), (512, 3)], 1):
    for k in range(1, convs + 1):
      x = L.Conv2D(w(maps), 3, padding="same", activation="relu",
                   name=f"block{block}_conv{k}")(x)
    x = L.MaxPooling2D(2, 2, name=f"block{block}_pool")(x)
  x = L.Flatten(name="flatten")(x)
  x = L.Dense(w(4096), activation="relu", name="fc1")(x)
  x = L.Dense(w(4096), activation="relu", name="fc2")(x)
  return keras.Model(inputs, L.Dense(classes, name="predictions")(x), name="vgg16")


@pytest.mark.parametrize("suffix", [".keras", ".h5", ".weights.h5"])
def test_keras_vgg16_file_gives_keras_logits(tmp_path, suffix):
  keras = pytest.importorskip("keras")
  width, size = 1 / 16, 64
  keras.utils.set_random_seed(0)
  net = keras_vgg16(keras, width, size, classes=10)
  path = str(tmp_path / f"vgg16{suffix}")
  net.save_weights(path) if suffix == ".weights.h5" else net.save(path)
  x = np.random.default_rng(2).normal(size=(2, size, size, 3)).astype(np.float32)
  theirs = np.asarray(net(x))
  cfg = model_cfg("vgg", "D", width=width, input_shape=(size, size, 3), num_classes=10,
                  init_from=path, init_from_layers="all")
  ours, copied = imported_logits(cfg, x)
  assert_same_logits(ours, theirs)
  assert len(copied) == 32


def test_the_keras_replica_has_keras_applications_layer_names():
  keras = pytest.importorskip("keras")
  real = keras.applications.VGG16(weights=None, input_shape=(32, 32, 3), classes=10)
  mine = keras_vgg16(keras, 1 / 16, 32, 10)
  weighted = lambda m: [l.name for l in m.layers if l.weights]
  assert weighted(real) == weighted(mine)
