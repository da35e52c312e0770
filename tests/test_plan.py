"""The execution plan (models/plan.py) and the CPU route's kernels (lowering.py, fusions.py):
the same values and gradients as the layers applied one by one, taps included."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from cnn_jax import config, models
from cnn_jax.models import fusions, lowering
from cnn_jax.models import layers as L
from cnn_jax.models import plan as P
from cnn_jax.models.sequential import apply_in_order
from helpers import ALL_CONFIGS

XLA, NONE, ALL = P.Plan("xla"), P.Plan("cpu", ()), P.Plan("cpu", P.parse_rewrites("all"))


def tiny(name, variant, **overrides):
  """A family's network at a small width and input, evaluation mode."""
  if name == "alexnet":
    overrides = {"width": 0.125, "input_shape": (67, 67, 3), **overrides}
  if name == "vgg":
    overrides = {"width": 0.0625, "input_shape": (32, 32, 3), **overrides}
  cfg = config.validate(config.base(name, variant, **overrides)).model
  return models.view(models.build(cfg, seed=0), train=False), cfg


def close(a, b, rtol=1e-5):
  np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * (float(jnp.abs(a).max()) + 1e-12))


# ---------------------------------------------------------------------------------------------
# The plan: taps, groups, config.

@pytest.mark.parametrize("name,variant", ALL_CONFIGS)
def test_taps_give_the_layers_one_by_one_on_both_lowerings(name, variant):
  model, cfg = tiny(name, variant)
  layers = list(model.layers())
  names = model.layer_names
  x = jax.random.normal(jax.random.key(0), (2, *cfg.input_shape))
  _, reference = apply_in_order(layers, x, names)  # the layers' own forms, one by one
  for plan in (XLA, ALL):
    assert all(kind == P.LAYER for kind, _ in plan.groups(layers, names))  # nothing fused
    _, every = plan(layers, x, names)
    assert list(every) == list(names)
    for n in names:
      close(every[n], reference[n])
    for taps in (names[::2], names[1::2]):  # groups form between the tapped layers
      model.plan = plan
      logits, tapped = model(x, taps=taps)
      assert list(tapped) == list(taps)
      for n in taps:
        close(tapped[n], reference[n])
      close(logits, reference[names[-1]].astype(jnp.float32))


def test_a_tapped_relu_inside_a_would_be_group_reads_the_unfused_value():
  model, cfg = tiny("simple_cnn", "base")
  layers = list(model.layers())
  assert ALL.groups(layers)[0] == (P.CONV_RELU_MAX_POOL, ("conv1", "conv1_relu", "pool1"))
  assert ALL.groups(layers, ("conv1_relu",))[:3] == [(P.LAYER, ("conv1",)),
                                                     (P.LAYER, ("conv1_relu",)),
                                                     (P.LAYER, ("pool1",))]
  assert ALL.groups(layers, ("conv1",))[:2] == [(P.LAYER, ("conv1",)),
                                                (P.LAYER, ("conv1_relu",))]
  x = jax.random.normal(jax.random.key(1), (2, *cfg.input_shape))
  model.plan = ALL
  _, tapped = model(x, taps=("conv1_relu", "pool1"))
  relu = jax.nn.relu(model.conv1(x))
  close(tapped["conv1_relu"], relu)
  np.testing.assert_array_equal(tapped["pool1"], model.pool1(tapped["conv1_relu"]))
  with pytest.raises(ValueError, match="conv9"):
    model(x, taps=("conv9",))


def test_batch_norm_between_conv_and_relu_shows_in_the_groups():
  model, _ = tiny("simple_cnn", "base", norm="batchnorm")
  kinds = [kind for kind, _ in ALL.groups(list(model.layers()))]
  assert kinds.count(P.LAYER) == len(kinds)  # conv -> BN -> ReLU: nothing to fuse


def test_plan_comes_from_config_and_leaves_the_parameters_alone():
  cfg = config.base("simple_cnn", "base")
  assert P.from_config(cfg.model).route == P.resolve("auto")
  assert P.resolve("auto") == ("cpu" if jax.default_backend() == "cpu" else "xla")
  states = {}
  for lowering, rewrites in [("xla", "all"), ("cpu", "all"), ("cpu", "none"),
                             ("cpu", "pool_first,shallow_conv")]:
    cfg.model.lowering, cfg.model.rewrites = lowering, rewrites
    model = models.build(config.validate(cfg).model, seed=0)
    assert model.plan == P.Plan(lowering, P.parse_rewrites(rewrites) if lowering == "cpu"
                                else ())
    states[lowering, rewrites] = nnx.state(model, nnx.Param)
  first = states["xla", "all"]
  for state in states.values():  # the same parameter tree, names, shapes and values
    assert jax.tree.structure(state) == jax.tree.structure(first)
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(first)):
      np.testing.assert_array_equal(a, b)
  for key, value in [("lowering", "cudnn"), ("rewrites", "pool_first,fast"),
                     ("rewrites", "")]:
    bad = config.base("simple_cnn", "base")
    bad.model[key] = value
    if value == "":
      continue  # '' is 'none'
    with pytest.raises(config.ConfigError, match=f"model.{key}"):
      config.validate(bad)


# ---------------------------------------------------------------------------------------------
# Each rewrite: the logits and gradients of the plain layers.

SMALL = {"input_shape": (16, 16, 1)}
REWRITE_CASES = [  # (rewrite, the rewrites it needs, knobs of a network where it applies:
    # the small CNN's, or another family's with 'family': (name, variant))
    ("pool_first", (), SMALL),
    ("pool_first", ("overlapping_pool",), {**SMALL, "pooling": "overlapping"}),
    ("shallow_conv", ("pool_first",), SMALL),
    ("overlapping_pool", ("pool_first",), {**SMALL, "pooling": "overlapping"}),
    ("relu_in_reduction", ("pool_first",), SMALL),
    ("whole_input_dot", (), {**SMALL, "head": "conv"}),
    ("column_input_grad", (), {"family": ("lenet5", "paper")}),  # C3: 5x5 over 6 maps
    ("winograd", (), {"input_shape": (56, 56, 1), "width": 4.0}),  # conv2: 28x28, 128 maps
]


def _logits_and_grads(model, plan, x, labels):
  model.plan = plan
  graph, params, rest = nnx.split(model, nnx.Param, ...)

  def loss(params):
    logits = nnx.merge(graph, params, rest)(x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), logits

  (_, logits), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
  return logits, grads, jax.make_jaxpr(loss)(params)


@pytest.mark.parametrize("rewrite,needs,knobs", REWRITE_CASES)
def test_each_rewrite_gives_the_logits_and_gradients_of_the_plain_layers(rewrite, needs, knobs):
  assert rewrite in P.REWRITES
  knobs = dict(knobs)
  model, cfg = tiny(*knobs.pop("family", ("simple_cnn", "base")), **knobs)
  x = jax.random.normal(jax.random.key(2), (4, *cfg.input_shape))
  labels = jnp.arange(4) % cfg.num_classes
  plain = _logits_and_grads(model, XLA, x, labels)
  without = _logits_and_grads(model, P.Plan("cpu", tuple(sorted(needs))), x, labels)
  on = _logits_and_grads(model, P.Plan("cpu", tuple(sorted((rewrite, *needs)))), x, labels)
  assert str(on[2]) != str(without[2])  # the rewrite applies to this network
  for got in (without, on):
    close(got[0], plain[0], rtol=1e-4)
    flat, flat_plain = jax.tree.leaves(got[1]), jax.tree.leaves(plain[1])
    assert len(flat) == len(flat_plain) > 0
    for a, b in zip(flat_plain, flat):
      close(a, b, rtol=2e-3)


# ---------------------------------------------------------------------------------------------
# The kernels against the layers' own forms.

def xla_conv(x, w, strides, padding, groups):
  return L.conv2d(x, w, L.Window.of(w.shape[:2], strides, padding), groups)


def cpu_conv(x, w, strides, padding, groups, whole_input_dot=True):
  pads = L.Window.of(w.shape[:2], strides, padding).pads(x.shape[1:3])
  return lowering.conv2d(x, w, strides, pads, groups, whole_input_dot)


@pytest.mark.parametrize("strides,padding,groups,kernel", [
    ((1, 1), "SAME", 1, 3), ((4, 4), ((0, 0), (0, 0)), 1, 11), ((1, 1), ((2, 2), (2, 2)), 2, 5),
    ((2, 2), "VALID", 1, 3), ((1, 2), "SAME", 2, 1)])
def test_cpu_conv_gradients_equal_xla(strides, padding, groups, kernel):
  keys = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(keys[0], (2, 15, 13, 4))
  w = jax.random.normal(keys[1], (kernel, kernel, 4 // groups, 6))
  weight = jax.random.normal(keys[2], (6,))

  def loss(conv):
    return lambda x, w: jnp.sum(conv(x, w, strides, padding, groups) * weight)

  assert jnp.allclose(loss(xla_conv)(x, w), loss(cpu_conv)(x, w), rtol=1e-5)
  for a, b in zip(jax.grad(loss(xla_conv), (0, 1))(x, w), jax.grad(loss(cpu_conv), (0, 1))(x, w)):
    close(a, b, rtol=1e-4)


@pytest.mark.parametrize("kernel,padding,channels", [  # (C3 itself: the rewrite table above)
    ((5, 5), ((2, 2), (2, 2)), 8), ((5, 7), ((2, 0), (0, 3)), 1)])
def test_the_column_input_gradient_equals_xla(kernel, padding, channels):
  keys = jax.random.split(jax.random.key(5), 3)
  x = jax.random.normal(keys[0], (3, 9, 11, channels))
  w = jax.random.normal(keys[1], (*kernel, channels, 16))
  assert lowering.column_grad_applies(x.shape, w.shape, (1, 1), padding)
  weight = jax.random.normal(keys[2], xla_conv(x, w, (1, 1), padding, 1).shape)

  def loss(conv):
    return lambda x, w: jnp.sum(conv(x, w, (1, 1), padding, 1) * weight)

  plain = jax.grad(loss(xla_conv), (0, 1))(x, w)
  ours = jax.grad(loss(cpu_conv), (0, 1))(x, w)
  for a, b in zip(plain, ours):
    close(a, b, rtol=1e-4)
  # XLA's own where the rewrite does not apply: 16 input channels, a 3x3 kernel, stride 2
  assert not lowering.column_grad_applies((3, 9, 11, 16), (5, 5, 16, 16), (1, 1), padding)
  assert not lowering.column_grad_applies((3, 9, 11, 4), (3, 3, 4, 16), (1, 1), padding)
  assert not lowering.column_grad_applies(x.shape, w.shape, (2, 2), padding)


@pytest.mark.parametrize("x_hw,kernel_hw,strides,padding", [
    ((5, 5), (5, 5), (1, 1), "VALID"), ((3, 4), (3, 4), (2, 2), ((0, 0), (0, 0))),
    ((4, 4), (5, 5), (1, 1), ((1, 0), (0, 1))), ((6, 5), (5, 5), (1, 1), "VALID")])
def test_a_kernel_over_the_whole_input_is_a_matrix_product_on_cpu(x_hw, kernel_hw, strides,
                                                                  padding):
  keys = jax.random.split(jax.random.key(2), 3)
  x = jax.random.normal(keys[0], (3, *x_hw, 4))
  w = jax.random.normal(keys[1], (*kernel_hw, 4, 7))
  weight = jax.random.normal(keys[2], xla_conv(x, w, strides, padding, 1).shape)

  def loss(conv):
    return lambda x, w: jnp.sum(conv(x, w, strides, padding, 1) * weight)

  pads = L.Window.of(kernel_hw, strides, padding).pads(x_hw)
  covers = lowering.covers_input(x.shape, w.shape, pads)
  assert covers == (x_hw == kernel_hw)  # padding makes a convolution of it
  cpu_jaxpr = str(jax.make_jaxpr(jax.grad(loss(cpu_conv), (0, 1)))(x, w))
  assert ("conv_general_dilated" not in cpu_jaxpr) == covers
  close(loss(xla_conv)(x, w), loss(cpu_conv)(x, w))
  for a, b in zip(jax.grad(loss(xla_conv), (0, 1))(x, w), jax.grad(loss(cpu_conv), (0, 1))(x, w)):
    close(a, b)


@pytest.mark.parametrize("window,strides,padding", [
    ((2, 2), (2, 2), "VALID"), ((3, 3), (2, 2), "VALID"), ((3, 3), (2, 2), "SAME"),
    ((2, 2), (2, 2), "SAME"), ((3, 2), (1, 2), ((1, 1), (0, 1))),
    ((12, 12), (12, 12), "VALID"), ((12, 11), (2, 3), "VALID")])  # more positions than int8
def test_cpu_max_pool_equals_reduce_window(window, strides, padding):
  # no ties: gradients are unique
  x = jax.random.normal(jax.random.key(1), (2, 25, 24, 3) if max(window) > 3 else (2, 13, 11, 3))
  pool = L.Pool(window, strides, "max", padding)
  pads = pool.geometry.pads(x.shape[1:3])
  overlapping = window != strides and np.prod(window) <= lowering.MAX_WINDOW_POSITIONS
  for overlapping_first_max in (True, False) if overlapping else (True,):
    @jax.jit  # one compilation, not an eager dispatch per window position
    def cpu(x):
      return lowering.max_pool(x, window, strides, pads, overlapping_first_max)

    np.testing.assert_array_equal(pool(x), cpu(x))
    np.testing.assert_array_equal(jax.grad(lambda x: jnp.sum(pool(x) ** 2))(x),
                                  jax.grad(lambda x: jnp.sum(cpu(x) ** 2))(x))


@pytest.mark.parametrize("window,strides,shape", [
    ((2, 2), (2, 2), (2, 8, 6, 3)), ((2, 2), (2, 2), (2, 9, 7, 3)), ((3, 2), (3, 2), (1, 9, 8, 2)),
    ((3, 3), (2, 2), (2, 11, 10, 3)), ((3, 3), (2, 2), (1, 12, 9, 2)),
    ((3, 2), (1, 2), (1, 9, 8, 2)), ((2, 3), (2, 1), (1, 8, 9, 3))])
def test_pool_first_equals_relu_then_reduce_window_with_ties(window, strides, shape):
  y = jax.random.normal(jax.random.key(4), shape)
  y = y.at[:, :4, :4].set(0.25)  # a flat region: every window there is a four-way tie
  bias = jnp.array([0.5, -0.5, 0.1])[:shape[-1]]
  weight = jax.random.normal(jax.random.key(5), (1, 1, 1, shape[-1]))
  pool = L.Pool(window, strides)

  def reference(y, bias):  # the layers in their written order
    return pool(jax.nn.relu(y + bias))

  def cpu_pool(y, bias):  # the same order, the CPU route's max-pool
    return lowering.max_pool(jax.nn.relu(y + bias), window, strides, ((0, 0), (0, 0)))

  def pool_first(y, bias):
    return fusions.max_pool_bias_relu(y, bias, window, strides)

  def pool_first_elementwise(y, bias):
    return fusions.max_pool_bias_relu(y, bias, window, strides, relu_in_reduction=False)

  assert fusions.pools_first(window, strides, False, overlapping=True)
  routes = (reference, cpu_pool, pool_first, pool_first_elementwise)
  for f in routes[1:]:
    np.testing.assert_array_equal(reference(y, bias), f(y, bias))
  grads = [jax.grad(lambda y, b: jnp.sum(f(y, b) * weight), (0, 1))(y, bias) for f in routes]
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
  pads = L.Window.of(kernel_shape[:2], 1, padding).pads(x_shape[1:3])
  pool = L.Pool(window, window)

  def reference(x, kernel, bias):  # XLA's convolution, bias, ReLU, then XLA's max-pool
    return pool(jax.nn.relu(xla_conv(x, kernel, (1, 1), padding, 1) + bias))

  def inside(x, kernel, bias, relu_in_reduction=True):
    return fusions.conv_max_pool_bias_relu(x, kernel, bias, pads, window, relu_in_reduction)

  assert fusions.shallow(kernel_shape, (1, 1), 1)
  out = reference(x, kernel, bias)
  assert 0 < float(jnp.mean(out > 0)) < 1
  np.testing.assert_array_equal(out, inside(x, kernel, bias))
  np.testing.assert_array_equal(out, inside(x, kernel, bias, False))
  np.testing.assert_array_equal(jax.nn.relu(reference(x, kernel, 0.0)), inside(x, kernel, None))
  weight = jax.random.normal(jax.random.key(8), out.shape)
  grads = [jax.grad(lambda *a: jnp.sum(f(*a) * weight), (0, 1, 2))(x, kernel, bias)
           for f in (reference, inside)]
  np.testing.assert_array_equal(grads[0][0], grads[1][0])  # to each window's first maximum
  for a, b in zip(grads[0][1:], grads[1][1:]):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_where_the_fusions_apply():
  assert fusions.shallow((3, 3, 1, 32), (1, 1), 1)  # the small CNN's conv1
  assert fusions.shallow((3, 3, 2, 32), (1, 1), 1)
  assert not fusions.shallow((3, 3, 3, 64), (1, 1), 1)  # VGG's RGB stem: 27 inputs
  assert not fusions.shallow((5, 5, 1, 6), (1, 1), 1)  # LeNet's C1: 25 inputs
  assert not fusions.shallow((3, 3, 1, 32), (2, 2), 1)
  assert not fusions.shallow((3, 3, 2, 32), (1, 1), 2)
  assert fusions.pools_first((3, 3), (2, 2), False, overlapping=True)
  assert not fusions.pools_first((3, 3), (2, 2), False, overlapping=False)
  assert fusions.pools_first((2, 2), (2, 2), False, overlapping=False)
  assert not fusions.pools_first((12, 12), (12, 12), False, overlapping=True)  # int8 positions
  assert not fusions.pools_first((2, 2), (2, 2), True, overlapping=True)
  groups = {}
  for network in [("simple_cnn", "base"), ("alexnet", "paper"), ("alexnet", "torchvision"),
                  ("vgg", "A")]:
    model, _ = tiny(*network)
    groups[network] = dict((names[0], kind) for kind, names in ALL.groups(list(model.layers())))
  assert groups["simple_cnn", "base"]["conv1"] == P.CONV_RELU_MAX_POOL
  # in the paper's AlexNet LRN sits between ReLU and pooling; torchvision's pools overlap
  assert groups["alexnet", "paper"]["conv1"] == P.LAYER
  assert groups["alexnet", "torchvision"]["conv1"] == P.CONV_RELU_MAX_POOL
  assert groups["vgg", "A"]["conv3_1"] == P.LAYER
  assert groups["vgg", "A"]["conv3_2"] == P.CONV_RELU_MAX_POOL
