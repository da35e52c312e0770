"""The test protocols (protocols.py, evaluation.py): dense evaluation against the FC model on
crops, the crops of ten_crop and multi_crop against explicit ones, the FC-to-conv kernels, an
evaluation end to end on mock Fashion-MNIST, and the bad input of `run.py eval`."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds
from flax import nnx

from cnn_jax import config, evaluation, models, protocols, train
from cnn_jax.models import fc_conv
from forked import ForkedRuns, run
from helpers import load_config, model_cfg
from test_faults import error_line, snapshot


def fc_and_conv(name, variant, **overrides):
  """(the FC-head model, the conv-head model with the FC model's kernels converted), both in
  evaluation mode."""
  cfg = model_cfg(name, variant, **overrides)
  fc = models.view(models.build(cfg, seed=3), train=False)
  graph, like, _ = nnx.split(models.view(models.abstract(fc_conv.conv_head_config(cfg)),
                                         train=False), nnx.Param, ...)
  _, params, rest = nnx.split(fc, nnx.Param, ...)
  return fc, nnx.merge(graph, fc_conv.fc_to_conv(params, like), rest)


def images(shape, seed=0):
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


VGG = dict(input_shape=(64, 64, 1), num_classes=10, width=0.125)  # pool5 2x2: fc6 a 2x2 conv


def test_converted_kernels_are_the_fc_kernels_in_flatten_order():
  fc, conv = fc_and_conv("vgg", "A", **VGG)
  dense, kernel = np.asarray(fc.fc6.kernel[...]), np.asarray(conv.fc6.kernel[...])
  k, _, c, n = kernel.shape
  assert (k, dense.shape) == (2, (k * k * c, n))
  for i, j, ch in [(0, 0, 0), (0, 1, 5), (1, 0, 2), (1, 1, c - 1)]:
    np.testing.assert_array_equal(kernel[i, j, ch], dense[(i * k + j) * c + ch])
  np.testing.assert_array_equal(np.asarray(conv.fc8.kernel[...])[0, 0],
                                np.asarray(fc.fc8.kernel[...]))
  x = images((3, 64, 64, 1))
  np.testing.assert_allclose(conv(x), fc(x), rtol=1e-5, atol=1e-5)


def test_dense_at_the_training_size_is_the_fc_models_softmax():
  fc, conv = fc_and_conv("vgg", "A", **VGG)
  x = images((2, 64, 64, 1), seed=1)
  one = protocols.mean_softmax(conv, protocols.dense_views(x, flip=False))
  np.testing.assert_allclose(one, jax.nn.softmax(fc(x)), rtol=1e-5, atol=1e-6)
  both = protocols.posteriors(fc, conv, x, "dense", (64, 64))
  flipped = (jax.nn.softmax(fc(x)) + jax.nn.softmax(fc(x[:, :, ::-1]))) / 2
  np.testing.assert_allclose(both, flipped, rtol=1e-5, atol=1e-6)


def test_dense_on_a_larger_image_averages_the_fc_model_over_its_score_map():
  """LeNet-5 (modern) has no padding, total stride 4: on a 40x40 image its score map is 3x3,
  position (i, j) being the FC model on the 32x32 crop at (4i, 4j)."""
  fc, conv = fc_and_conv("lenet5", "modern")
  x = images((2, 40, 40, 1), seed=2)
  crops = [fc(x[:, 4 * i:4 * i + 32, 4 * j:4 * j + 32]) for i in range(3) for j in range(3)]
  np.testing.assert_allclose(conv(x), sum(crops) / 9, rtol=1e-4, atol=1e-5)
  assert not np.allclose(conv(x), crops[4], atol=1e-3)  # not one crop alone


def test_dense_vgg_score_map_is_the_fc_head_over_each_window_of_the_feature_map():
  """VGG pads its convolutions, so on a larger image the positions are windows of the last
  feature map: 96x96 gives pool5 3x3, fc6's 2x2 window at 2x2 positions."""
  fc, conv = fc_and_conv("vgg", "A", **VGG)
  x = images((2, 96, 96, 1), seed=3)
  _, taps = conv(x, taps=("pool5",))  # the features are the FC model's: the same layers
  feats = taps["pool5"]
  assert feats.shape[1:3] == (3, 3)
  head = [layer for name, layer in fc.layers()][fc.layer_names.index("flatten"):]
  scores = []
  for i in range(2):
    for j in range(2):
      y = feats[:, i:i + 2, j:j + 2]
      for layer in head:
        y = layer(y)
      scores.append(y)
  np.testing.assert_allclose(conv(x), sum(scores) / 4, rtol=1e-4, atol=1e-5)


def test_ten_crop_is_ten_explicit_crops_averaged():
  fc = models.view(models.build(model_cfg("lenet5", "modern"), seed=1), train=False)
  x = images((3, 40, 44, 1), seed=4)
  explicit = []
  for y, c in [(0, 0), (0, 12), (8, 0), (8, 12), (4, 6)]:
    crop = x[:, y:y + 32, c:c + 32]
    explicit += [jax.nn.softmax(fc(crop)), jax.nn.softmax(fc(crop[:, :, ::-1]))]
  np.testing.assert_allclose(protocols.posteriors(fc, None, x, "ten_crop", (32, 32)),
                             sum(explicit) / 10, rtol=1e-5, atol=1e-6)


def test_multi_crop_is_a_five_by_five_grid_and_its_flips_averaged():
  offsets = protocols.crop_offsets("multi_crop", (48, 40), (32, 32), 5)
  assert len(offsets) == 25 and len(set(offsets)) == 25
  assert offsets[0] == (0, 0) and offsets[-1] == (16, 8) and offsets[12] == (8, 4)
  assert protocols.views_per_image("multi_crop") == 50
  fc = models.view(models.build(model_cfg("lenet5", "modern"), seed=2), train=False)
  x = images((2, 48, 40, 1), seed=5)
  explicit = [jax.nn.softmax(fc(v)) for y, c in offsets
              for v in (x[:, y:y + 32, c:c + 32], x[:, y:y + 32, c:c + 32][:, :, ::-1])]
  np.testing.assert_allclose(protocols.posteriors(fc, None, x, "multi_crop", (32, 32)),
                             sum(explicit) / 50, rtol=1e-5, atol=1e-6)


def test_rows_average_over_scales_and_protocols():
  p = {f"{k}@{q}": jnp.full((1, 2), v) for k, q, v in [("dense", "32", 0.1), ("dense", "48", 0.3),
                                                        ("multi_crop", "32", 0.5),
                                                        ("multi_crop", "48", 0.9)]}
  rows = protocols.combine(p, "dense+multi_crop", ("32", "48"))
  assert float(rows["dense Q=32,48"][0, 0]) == pytest.approx(0.2)
  assert float(rows["multi_crop Q=32,48"][0, 0]) == pytest.approx(0.7)
  assert float(rows["dense+multi_crop Q=32,48"][0, 0]) == pytest.approx(0.45)


# -- end to end on mock Fashion-MNIST -----------------------------------------------------------
def vgg_config(seed=0, **eval_group):
  cfg = load_config("vgg.py", "small_A")
  cfg.model.width, cfg.data.manual_dir, cfg.seed = 0.125, "", seed
  cfg.train.update(batch_size=16, eval_batch_size=16, steps=2, eval_every_steps=2,
                   log_every_steps=1)
  cfg.eval.update(eval_group)
  return config.validate(cfg)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """Two tiny VGG runs (seeds 0 and 1) of two steps each on mock Fashion-MNIST."""
  root = tmp_path_factory.mktemp("protocols")
  with tfds.testing.mock_data(num_examples=48):
    for seed in (0, 1):
      train.train(vgg_config(seed), str(root / f"run{seed}"))
  return root


@pytest.fixture
def mock():
  with tfds.testing.mock_data(num_examples=48):
    yield


def test_center_at_the_configs_q_is_todays_evaluation(trained, mock):
  workdir = str(trained / "run0")
  today = evaluation.evaluate(vgg_config(), workdir)  # the default: train.evaluate
  assert os.path.exists(f"{workdir}/eval_2.json")
  named = evaluation.evaluate(vgg_config(protocol="center", scales=(32,)), workdir)
  assert named["file"].endswith("eval_2_center_32.json") and os.path.exists(named["file"])
  for key in ("eval_top1", "eval_top5", "test_top1", "test_top5"):
    assert named[key] == today[key]
  assert named["test_loss"] == pytest.approx(today["test_loss"], rel=1e-5)


def test_dense_plus_multi_crop_over_scales_writes_every_row(trained, mock):
  workdir = str(trained / "run0")
  result = evaluation.evaluate(vgg_config(protocol="dense+multi_crop", scales=(32, 40)), workdir)
  saved = json.load(open(result["file"]))
  assert os.path.basename(result["file"]) == "eval_2_dense+multi_crop_32-40.json"
  assert set(saved["rows"]) == {"dense Q=32", "dense Q=40", "dense Q=32,40", "multi_crop Q=32",
                                "multi_crop Q=40", "multi_crop Q=32,40",
                                "dense+multi_crop Q=32,40"}
  assert saved["views_per_image"] == {"dense": 2, "multi_crop": 50}
  for row in saved["rows"].values():
    assert 0 <= row["test_top1"] <= row["test_top5"] <= 1 and np.isfinite(row["test_loss"])
  assert saved["test_loss"] == saved["rows"]["dense+multi_crop Q=32,40"]["test_loss"]


def test_an_ensemble_averages_the_members_softmax(trained, mock):
  one, two = str(trained / "run0"), str(trained / "run1")
  cfg = vgg_config(protocol="ten_crop", scales=(36,))
  a, b = evaluation.evaluate(cfg, one), evaluation.evaluate(cfg, two)
  both = evaluation.evaluate(vgg_config(protocol="ten_crop", scales=(36,), ensemble=(two,)), one)
  assert both["file"].endswith("eval_2_ten_crop_36_ensemble2.json")
  assert [m["workdir"] for m in both["ensemble"]] == [one, two]
  # the loss of averaged posteriors is at most the average loss (Jensen), and not either one's
  assert both["test_loss"] <= (a["test_loss"] + b["test_loss"]) / 2 + 1e-6
  assert both["test_loss"] not in (a["test_loss"], b["test_loss"])


# -- bad input through run.py -------------------------------------------------------------------
@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  server = ForkedRuns(tmp_path_factory.mktemp("server"))
  yield server
  server.close()


BAD = [
    ("unknown protocol", ["--config.eval.protocol=twelve_crop"], ["eval.protocol", "dense"]),
    ("scale below the input", ["--config.eval.scales=(24, 48)"],
     ["eval.scales", "Q=24", "32x32", "at least 32"]),
    ("ensemble member missing", ["--config.eval.ensemble=('{t}/nowhere',)"],
     ["eval.ensemble", "nowhere", "does not exist"]),
    ("ensemble member without checkpoint", ["--config.eval.ensemble=('{t}/empty',)"],
     ["eval.ensemble", "holds no checkpoint", "train it first"]),
]


@pytest.mark.parametrize("args,words", [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_eval_input_is_one_line_exit_2_and_writes_nothing(runs, trained, tmp_path, args,
                                                              words):
  (tmp_path / "empty").mkdir()
  workdir = trained / "run0"
  before = snapshot(workdir)
  args = [a.replace("{t}", str(tmp_path)) for a in args]
  code, text = run(runs, ["eval", "--config=configs/vgg.py:small_A", f"--workdir={workdir}",
                          "--config.model.width=0.125", *args], tmp_path / "log")
  line = error_line(code, text)
  for word in words:
    assert word in line, line
  assert snapshot(workdir) == before


def test_eval_of_a_directory_without_a_run_creates_nothing(runs, tmp_path):
  workdir = tmp_path / "new" / "run"
  code, text = run(runs, ["eval", "--config=configs/vgg.py:small_A", f"--workdir={workdir}",
                          "--config.model.width=0.125", "--config.eval.protocol=dense"],
                   tmp_path / "log")
  line = error_line(code, text)
  assert "no checkpoint in" in line and "train first" in line, line
  assert not os.path.exists(tmp_path / "new")


def test_a_folder_of_images_of_varying_sizes_is_tested_on_central_squares(tmp_path):
  from PIL import Image
  rng = np.random.default_rng(0)
  for label in range(2):
    for i in range(12):
      h, w = (28, 28) if i % 2 else (30, 36)
      pixels = rng.integers(90 * label, 90 * label + 120, (h, w), dtype=np.uint8)
      os.makedirs(tmp_path / "images" / f"c{label}", exist_ok=True)
      Image.fromarray(pixels, "L").save(tmp_path / "images" / f"c{label}" / f"{i}.png")
  cfg = load_config("simple_cnn.py", "base")
  cfg.data.update(name="folder", folder=str(tmp_path / "images"), validation_fraction=0.25)
  cfg.data.preprocess.resize = 28
  cfg.model.num_classes = 2
  cfg.train.update(batch_size=8, eval_batch_size=8, steps=2, eval_every_steps=2,
                   log_every_steps=1)
  workdir = str(tmp_path / "run")
  train.train(config.validate(cfg), workdir)
  cfg.eval.update(protocol="ten_crop", scales=(32,))
  result = evaluation.evaluate(config.validate(cfg), workdir)
  assert result["file"].endswith("eval_2_ten_crop_32.json")
  assert 0 <= result["eval_top1"] <= 1 and np.isfinite(result["eval_loss"])
