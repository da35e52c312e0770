"""Performance machinery: the two lowerings compute the same numbers, the train step compiles
once per run, bfloat16 compute keeps float32 parameters, and `run.py bench` reports its
figures."""

import json
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import tensorflow_datasets as tfds
from flax import nnx

from benchmarks import lowering_ab
from cnn_jax import bench, config, huge_pages, models, train
from cnn_jax.models import layers, lowering
from conftest import ROOT
from helpers import load_config


@pytest.mark.parametrize("strides,padding,groups,kernel", [
    ((1, 1), "SAME", 1, 3), ((4, 4), ((0, 0), (0, 0)), 1, 11), ((1, 1), ((2, 2), (2, 2)), 2, 5),
    ((2, 2), "VALID", 1, 3), ((1, 2), "SAME", 2, 1)])
def test_cpu_conv_gradients_equal_xla(strides, padding, groups, kernel):
  keys = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(keys[0], (2, 15, 13, 4))
  w = jax.random.normal(keys[1], (kernel, kernel, 4 // groups, 6))
  weight = jax.random.normal(keys[2], (6,))

  def loss(how):
    return lambda x, w: jnp.sum(lowering.conv2d(x, w, strides, padding, groups, how) * weight)

  assert jnp.allclose(loss("xla")(x, w), loss("cpu")(x, w), rtol=1e-5)
  for a, b in zip(jax.grad(loss("xla"), (0, 1))(x, w), jax.grad(loss("cpu"), (0, 1))(x, w)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(jnp.abs(a).max()))


@pytest.mark.parametrize("x_hw,kernel_hw,strides,padding", [
    ((5, 5), (5, 5), (1, 1), "VALID"), ((3, 4), (3, 4), (2, 2), ((0, 0), (0, 0))),
    ((4, 4), (5, 5), (1, 1), ((1, 0), (0, 1))), ((6, 5), (5, 5), (1, 1), "VALID")])
def test_a_kernel_over_the_whole_input_is_a_matrix_product_on_cpu(x_hw, kernel_hw, strides,
                                                                  padding):
  keys = jax.random.split(jax.random.key(2), 3)
  x = jax.random.normal(keys[0], (3, *x_hw, 4))
  w = jax.random.normal(keys[1], (*kernel_hw, 4, 7))
  out_shape = lowering.conv2d(x, w, strides, padding, 1, "xla").shape
  weight = jax.random.normal(keys[2], out_shape)

  def loss(how):
    return lambda x, w: jnp.sum(lowering.conv2d(x, w, strides, padding, 1, how) * weight)

  padded = lowering._padding(padding, kernel_hw, strides, x_hw)
  covers = lowering.covers_input(x.shape, w.shape, padded)
  assert covers == (x_hw == kernel_hw)  # padding makes a convolution of it
  cpu_jaxpr = str(jax.make_jaxpr(jax.grad(loss("cpu"), (0, 1)))(x, w))
  assert ("conv_general_dilated" not in cpu_jaxpr) == covers
  np.testing.assert_allclose(loss("xla")(x, w), loss("cpu")(x, w), rtol=1e-5)
  for a, b in zip(jax.grad(loss("xla"), (0, 1))(x, w), jax.grad(loss("cpu"), (0, 1))(x, w)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * float(jnp.abs(a).max()))


@pytest.mark.parametrize("window,strides,padding", [
    ((2, 2), (2, 2), "VALID"), ((3, 3), (2, 2), "VALID"), ((3, 3), (2, 2), "SAME"),
    ((2, 2), (2, 2), "SAME"), ((3, 2), (1, 2), ((1, 1), (0, 1))),
    ((12, 12), (12, 12), "VALID"), ((12, 11), (2, 3), "VALID")])  # more positions than int8
def test_cpu_max_pool_equals_reduce_window(window, strides, padding):
  # no ties: gradients are unique
  x = jax.random.normal(jax.random.key(1), (2, 25, 24, 3) if max(window) > 3 else (2, 13, 11, 3))

  def loss(how):
    return lambda x: jnp.sum(lowering.max_pool(x, window, strides, padding, how) ** 2)

  np.testing.assert_array_equal(lowering.max_pool(x, window, strides, padding, "xla"),
                                lowering.max_pool(x, window, strides, padding, "cpu"))
  np.testing.assert_array_equal(jax.grad(loss("xla"))(x), jax.grad(loss("cpu"))(x))


@pytest.mark.parametrize("window,strides,shape", [
    ((2, 2), (2, 2), (2, 8, 6, 3)), ((2, 2), (2, 2), (2, 9, 7, 3)), ((3, 2), (3, 2), (1, 9, 8, 2)),
    ((3, 3), (2, 2), (2, 11, 10, 3)), ((3, 3), (2, 2), (1, 12, 9, 2)),
    ((3, 2), (1, 2), (1, 9, 8, 2)), ((2, 3), (2, 1), (1, 8, 9, 3))])
def test_pool_first_equals_relu_then_reduce_window_with_ties(window, strides, shape):
  y = jax.random.normal(jax.random.key(4), shape)
  y = y.at[:, :4, :4].set(0.25)  # a flat region: every window there is a four-way tie
  bias = jnp.array([0.5, -0.5, 0.1])[:shape[-1]]
  weight = jax.random.normal(jax.random.key(5), (1, 1, 1, shape[-1]))

  def reference(y, bias):  # the layers in their written order, XLA's max-pool
    return lowering.max_pool(jax.nn.relu(y + bias), window, strides, "VALID", "xla")

  def cpu_pool(y, bias):  # the same order, the CPU route's max-pool
    return lowering.max_pool(jax.nn.relu(y + bias), window, strides, "VALID", "cpu")

  def pool_first(y, bias):
    return lowering.max_pool_bias_relu(y, bias, window, strides)

  assert lowering.pools_first(window, strides, "VALID")
  for f in (cpu_pool, pool_first):
    np.testing.assert_array_equal(reference(y, bias), f(y, bias))
  grads = [jax.grad(lambda y, b: jnp.sum(f(y, b) * weight), (0, 1))(y, bias)
           for f in (reference, cpu_pool, pool_first)]
  # select-and-scatter sends each window's gradient to its first maximum; so do the others
  for g in grads[1:]:
    np.testing.assert_array_equal(grads[0][0], g[0])
    np.testing.assert_allclose(grads[0][1], g[1], rtol=1e-6)


@pytest.mark.parametrize("x_shape,kernel_shape,padding,window", [
    ((2, 9, 8, 1), (3, 3, 1, 5), "SAME", (2, 2)), ((2, 11, 10, 2), (3, 3, 2, 4), "VALID", (2, 2)),
    ((1, 12, 13, 1), (4, 4, 1, 3), ((2, 1), (1, 2)), (3, 2))])
def test_conv_inside_max_pool_equals_conv_then_reduce_window_with_ties(
    x_shape, kernel_shape, padding, window):
  # values in eighths: every sum is exact, so ties are exact in both routes
  x = jax.random.randint(jax.random.key(6), x_shape, -4, 5) / 4.0
  x = x.at[:, :6, :6].set(0.5)  # a flat region: its windows tie
  kernel = jax.random.randint(jax.random.key(7), kernel_shape, -4, 5) / 8.0
  bias = jnp.arange(kernel_shape[-1]) / 8.0 - 0.25  # some maps mostly cut by the ReLU

  def reference(x, kernel, bias):  # XLA's convolution, bias, ReLU, then XLA's max-pool
    y = jax.nn.relu(lowering.conv2d(x, kernel, (1, 1), padding, 1, "xla") + bias)
    return lowering.max_pool(y, window, window, "VALID", "xla")

  def inside(x, kernel, bias):
    return lowering.conv_max_pool_bias_relu(x, kernel, bias, padding, window)

  assert lowering.shallow(kernel_shape, (1, 1), 1)
  out = reference(x, kernel, bias)
  assert 0 < float(jnp.mean(out > 0)) < 1
  np.testing.assert_array_equal(out, inside(x, kernel, bias))
  np.testing.assert_array_equal(jax.nn.relu(reference(x, kernel, 0.0)),
                                inside(x, kernel, None))
  weight = jax.random.normal(jax.random.key(8), out.shape)
  grads = [jax.grad(lambda *a: jnp.sum(f(*a) * weight), (0, 1, 2))(x, kernel, bias)
           for f in (reference, inside)]
  np.testing.assert_array_equal(grads[0][0], grads[1][0])  # to each window's first maximum
  for a, b in zip(grads[0][1:], grads[1][1:]):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_bias_relu_as_reduction_equals_relu_of_the_sum():
  y = jax.random.normal(jax.random.key(9), (2, 5, 4, 3))
  bias = jnp.array([0.5, -0.25, 0.0])
  y = y.at[0, 0, 0].set(-bias)  # exactly 0 before the ReLU: no gradient there, as jax.nn.relu
  weight = jax.random.normal(jax.random.key(10), y.shape)
  reference = lambda y, b: jax.nn.relu(y + b)  # noqa: E731
  np.testing.assert_array_equal(reference(y, bias), lowering.bias_relu_as_reduction(y, bias))
  grads = [jax.grad(lambda y, b: jnp.sum(f(y, b) * weight), (0, 1))(y, bias)
           for f in (reference, lowering.bias_relu_as_reduction)]
  np.testing.assert_array_equal(grads[0][0], grads[1][0])
  np.testing.assert_allclose(grads[0][1], grads[1][1], rtol=1e-6)
  vgg = dict(models.build(config.validate(load_config("vgg.py", "small_A")).model,
                          seed=0).layers())
  on_cpu = jax.default_backend() == "cpu"
  assert layers.relu_as_reduction(vgg["conv3_1"], vgg["conv3_1_relu"]) == on_cpu
  assert not layers.relu_as_reduction(vgg["conv3_1"], vgg["conv3_2"])


def test_shallow_convolutions_only_go_inside_the_pooling():
  assert lowering.shallow((3, 3, 1, 32), (1, 1), 1)  # the small CNN's conv1
  assert lowering.shallow((3, 3, 2, 32), (1, 1), 1)
  assert not lowering.shallow((3, 3, 3, 64), (1, 1), 1)  # VGG's RGB stem: 27 inputs
  assert not lowering.shallow((5, 5, 1, 6), (1, 1), 1)  # LeNet's C1: 25 inputs
  assert not lowering.shallow((3, 3, 1, 32), (2, 2), 1)
  assert not lowering.shallow((3, 3, 2, 32), (1, 1), 2)


def test_pool_first_applies_to_conv_relu_max_pool_only():
  built = {c: dict(models.build(config.validate(load_config(*c)).model, seed=0).layers())
           for c in [("simple_cnn.py", None), ("alexnet.py", "paper"), ("alexnet.py", "torchvision")]}
  cnn, alexnet = built[("simple_cnn.py", None)], built[("alexnet.py", "paper")]
  torchvision = built[("alexnet.py", "torchvision")]
  on_cpu = jax.default_backend() == "cpu"
  assert layers.pools_first(cnn["conv1"], cnn["conv1_relu"], cnn["pool1"]) == on_cpu
  assert not layers.pools_first(cnn["conv1"], cnn["pool1"], cnn["conv2"])
  # overlapping 3x3 stride-2 windows too (torchvision's AlexNet); in the paper's, LRN sits
  # between ReLU and pooling
  assert layers.pools_first(*(torchvision[n] for n in ("conv1", "conv1_relu", "pool1"))) == on_cpu
  names = list(alexnet)
  conv1 = names.index("conv1")
  assert not layers.pools_first(*(alexnet[n] for n in names[conv1:conv1 + 3]))
  assert lowering.pools_first((3, 3), (2, 2), "VALID")
  assert lowering.pools_first((5, 5), (2, 2), "VALID")
  assert not lowering.pools_first((12, 12), (2, 2), "VALID")  # positions are int8
  assert not lowering.pools_first((2, 2), (2, 2), "SAME")


def test_auto_lowering_is_cpu_on_cpu_and_config_checks_it():
  assert lowering.resolve("auto") == ("cpu" if jax.default_backend() == "cpu" else "xla")
  cfg = config.base("simple_cnn", "base")
  cfg.model.lowering = "cudnn"
  with pytest.raises(config.ConfigError, match="model.lowering"):
    config.validate(cfg)


@pytest.mark.parametrize("file,arg", [("simple_cnn.py", None), ("lenet5.py", "paper"),
                                      ("alexnet.py", "small"), ("vgg.py", "small_A")])
def test_every_family_has_the_same_gradients_in_both_lowerings(file, arg):
  cfg = load_config(file, arg)
  if cfg.model.name in ("alexnet", "vgg"):
    cfg.model.width = 0.125
  x = jax.random.normal(jax.random.key(2), (4, *cfg.model.input_shape))
  labels = jnp.arange(4) % cfg.model.num_classes
  grads = {}
  for how in ("xla", "cpu"):
    cfg.model.lowering = how
    model = models.view(models.build(cfg.model, seed=0), train=False)
    graph, params, rest = nnx.split(model, nnx.Param, ...)

    def loss(params):
      logits = nnx.merge(graph, params, rest)(x)
      return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    grads[how] = jax.jit(jax.grad(loss))(params)
  flat_xla, flat_cpu = jax.tree.leaves(grads["xla"]), jax.tree.leaves(grads["cpu"])
  assert len(flat_xla) == len(flat_cpu) > 0
  for a, b in zip(flat_xla, flat_cpu):
    np.testing.assert_allclose(a, b, rtol=2e-3, atol=2e-4 * (float(jnp.abs(a).max()) + 1e-12))


def test_train_step_compiles_once_over_a_whole_run(tmp_path):
  cfg = load_config("simple_cnn.py")
  cfg.data.manual_dir = ""
  t = cfg.train
  t.batch_size, t.eval_batch_size, t.steps = 8, 16, 12
  t.eval_every_steps, t.log_every_steps = 4, 3
  with tfds.testing.mock_data(num_examples=48):
    run = train.Run(config.validate(cfg), str(tmp_path))
    run.train()  # 12 steps over two epochs (5 per epoch), 3 evaluations, 3 checkpoints
  assert run.train_step._cache_size() == 1
  assert run.eval_step._cache_size() == 1


def test_bfloat16_compute_keeps_float32_parameters():
  cfg = load_config("simple_cnn.py")
  cfg.model.dtype = "bfloat16"
  model = models.build(config.validate(cfg).model, seed=0)
  x = jnp.ones((2, *cfg.model.input_shape))
  hidden = [layer(x).dtype for name, layer in model.layers() if name == "conv1"]
  assert hidden == [jnp.bfloat16]  # computed in bfloat16 ...
  assert model(x).dtype == jnp.float32  # ... logits handed to the loss in float32
  assert {p.dtype for p in jax.tree.leaves(nnx.state(model, nnx.Param))} == {jnp.dtype("float32")}


def test_jpeg_pipeline_decodes_crops_and_batches():
  cfg = load_config("alexnet.py", "torchvision")
  cfg.train.batch_size = 4
  files = bench.generated_jpegs(2)
  assert all(f[:2] == b"\xff\xd8" for f in files)  # JPEG start-of-image
  assert bench.jpeg_pipeline(cfg, seconds=0.5, count=8) > 0


def test_bench_command_prints_every_figure():
  out = subprocess.run(
      [sys.executable, "run.py", "bench", "--config=configs/simple_cnn.py", "--json",
       "--seconds=0.5", "--input=none", "--peer_lowering=xla",
       "--config.train.batch_size=16"],
      cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  r = json.loads(out.stdout.strip().splitlines()[-1])
  assert r["model"] == "simple_cnn:base" and r["batch_size"] == 16
  for key in ("compile_s", "train_images_per_sec", "train_images_per_sec[xla]",
              "matmul_peak_flops_per_sec", "model_flops_per_sec", "xla_flops_per_step",
              "step_temp_bytes", "peak_rss_bytes"):
    assert r[key] > 0, key
  assert r["model_flops_per_step"] == 6 * r["macs"] * 16
  assert 0 < r["mfu"] < 1
  # run.py started itself again with glibc's huge-page tunable, where that applies
  assert r["huge_pages"] == (huge_pages.applies() or huge_pages.active())


def test_tf_data_thread_limit_changes_nothing_but_speed():
  from cnn_jax import data
  cfg = load_config("simple_cnn.py")
  cfg.data.manual_dir = ""
  batches = {}
  with tfds.testing.mock_data(num_examples=48):
    for threads in (0, 1):
      cfg.data.threads = threads
      ds = data.build(cfg.data, (28, 28, 1), global_batch=8, eval_batch=16, seed=3)
      batches[threads] = list(ds.train_batches(epoch=1))
  assert len(batches[0]) == len(batches[1]) == 6
  for a, b in zip(batches[0], batches[1]):
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["label"], b["label"])
  cfg.data.threads = -1
  with pytest.raises(config.ConfigError, match="data.threads"):
    data.validate(cfg.data, (28, 28, 1))


def _program(compiled) -> str:
  """A compiled step's HLO without its source map and metadata, for comparing programs."""
  lines = (line for line in compiled.as_text().splitlines()
           if line.startswith(("%", " ", "ENTRY", "}")))
  return re.sub(r", metadata=\{[^}]*\}", "", "\n".join(lines))


def test_lowering_ab_switches_each_rewrite_and_none_compiles_the_same_step():
  for name, (module, attr, off) in lowering_ab.REWRITES.items():
    original = getattr(module, attr)
    with lowering_ab.switched(None, name, on=False):
      assert getattr(module, attr) is off, name
    assert getattr(module, attr) is original, name

  cfg = lowering_ab.load(f"{ROOT}/configs/simple_cnn.py", 8)

  def texts(rewrite):
    steps = lowering_ab.compiled_steps(cfg, rewrite)
    return [_program(steps[v][0]) for v in ("on", "off")]

  same = texts("none")
  assert same[0] == same[1]  # the A/A comparison times one program twice
  differ = texts("pool_first")
  assert differ[0] != differ[1] and differ[1] != same[0] and differ[0] == same[0]
