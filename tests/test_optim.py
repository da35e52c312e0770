"""Optimisers, schedules, plateau decay, weight-decay masks, freezing, label smoothing."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from cnn_jax import config, optim
from cnn_jax.errors import ConfigError
from helpers import model_cfg
from cnn_jax import models


def o(**kw):
  c = optim.defaults()
  c.update(kw)
  optim.validate(c)
  return c


def test_step_schedule_and_warmup():
  f = optim.schedule(o(schedule="step", decay_epochs=(2, 4), lr=0.1), steps_per_epoch=10,
                     total_steps=60)
  assert [round(float(f(s)), 6) for s in (0, 19, 20, 39, 40, 59)] == [0.1, 0.1, 0.01, 0.01,
                                                                        0.001, 0.001]
  w = optim.schedule(o(schedule="step", decay_epochs=(2,), lr=0.1, warmup_epochs=1.0), 10, 40)
  assert float(w(0)) == 0.0 and abs(float(w(5)) - 0.05) < 1e-7 and abs(float(w(10)) - 0.1) < 1e-7
  assert abs(float(w(20)) - 0.01) < 1e-7  # decay still at epoch 2
  c = optim.schedule(o(schedule="cosine", lr=0.1), 10, 100)
  assert float(c(0)) == pytest.approx(0.1) and float(c(100)) == pytest.approx(0.0, abs=1e-7)


def test_plateau_divides_after_patience_and_at_most_max_decays():
  c = o(schedule="plateau", plateau_patience=2, plateau_max_decays=2)
  p, decays = optim.plateau_init(), []
  for acc in (0.5, 0.6, 0.6, 0.6, 0.59, 0.59, 0.7, 0.7, 0.7, 0.7, 0.7):
    p, d = optim.plateau_update(c, p, acc)
    decays.append(d)
  assert decays == [False, False, False, True, False, True, False, False, False, False, False]
  loss = o(schedule="plateau", plateau_metric="eval_loss", plateau_patience=1)
  p, d = optim.plateau_update(loss, optim.plateau_init(), 1.0)
  p, d = optim.plateau_update(loss, p, 0.5)  # lower loss is an improvement
  assert not d
  p, d = optim.plateau_update(loss, p, 0.6)
  assert d


def tiny_params():
  model = models.build(model_cfg("simple_cnn", "base", input_shape=(8, 8, 1)))
  return nnx.split(model, nnx.Param, ...)


def test_weight_decay_only_on_kernels_and_freeze():
  _, params, _ = tiny_params()
  tx = optim.make(o(name="sgd", momentum=0.0, lr=1.0, weight_decay=0.5, freeze="^conv1/"),
                  params, 10, 100)
  state = tx.init(params)
  zero = jax.tree.map(jnp.zeros_like, params)
  updates, state = tx.update(zero, state, params)
  # With zero gradients the update is -lr * wd * w on kernels, nothing on biases/frozen ones.
  np.testing.assert_allclose(updates["fc1"]["kernel"][...], -0.5 * params["fc1"]["kernel"][...])
  assert np.all(updates["fc1"]["bias"][...] == 0)
  assert np.all(updates["conv1"]["kernel"][...] == 0)


def test_lr_scale_and_current_lr():
  _, params, _ = tiny_params()
  c = o(schedule="plateau", lr=0.1)
  tx = optim.make(c, params, 10, 100)
  state = optim.set_lr_scale(tx.init(params), 0.1)
  assert optim.get_lr_scale(state) == pytest.approx(0.1)
  assert optim.current_lr(c, state, 5, 10, 100) == pytest.approx(0.01)
  grads = jax.tree.map(jnp.ones_like, params)
  plain = optim.make(o(schedule="constant", lr=0.01, momentum=0.0, weight_decay=0.0), params,
                     10, 100)
  scaled = optim.make(o(schedule="plateau", lr=0.1, momentum=0.0, weight_decay=0.0), params,
                      10, 100)
  u1, _ = plain.update(grads, plain.init(params), params)
  u2, _ = scaled.update(grads, optim.set_lr_scale(scaled.init(params), 0.1), params)
  np.testing.assert_allclose(u1["fc2"]["kernel"][...], u2["fc2"]["kernel"][...], rtol=1e-6)


def test_adamw_decouples_decay():
  _, params, _ = tiny_params()
  tx = optim.make(o(name="adamw", lr=0.1, weight_decay=0.01), params, 10, 100)
  zero = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(zero, tx.init(params), params)
  np.testing.assert_allclose(updates["fc1"]["kernel"][...],
                             -0.1 * 0.01 * params["fc1"]["kernel"][...], rtol=1e-5)


def test_label_smoothing():
  logits = jnp.array([[10.0, 0.0, 0.0]])
  hard = optim.cross_entropy(logits, jnp.array([0]), 3)
  soft = optim.cross_entropy(logits, jnp.array([0]), 3, label_smoothing=0.3)
  expected = -(0.8 * jax.nn.log_softmax(logits)[0, 0] + 0.1 * jax.nn.log_softmax(logits)[0, 1]
               + 0.1 * jax.nn.log_softmax(logits)[0, 2])
  assert float(soft[0]) == pytest.approx(float(expected), rel=1e-5)
  assert float(soft[0]) > float(hard[0])


@pytest.mark.parametrize("key,value,words", [
    ("name", "rmsprop", "optim.name"), ("schedule", "linear", "optim.schedule"),
    ("lr", -1.0, "optim.lr"), ("momentum", 1.5, "optim.momentum"),
    ("accumulate_steps", 0, "optim.accumulate_steps"), ("freeze", "([", "optim.freeze"),
    ("plateau_metric", "train_loss", "optim.plateau_metric"),
])
def test_bad_values_name_the_key(key, value, words):
  c = optim.defaults()
  c[key] = value
  with pytest.raises(ConfigError, match=words.replace(".", r"\.")):
    optim.validate(c)


def test_step_schedule_needs_epochs():
  with pytest.raises(ConfigError, match="decay_epochs"):
    o(schedule="step")


def test_base_config_has_every_group():
  cfg = config.base("vgg", "D")
  assert set(cfg.keys()) >= {"model", "data", "optim", "train", "checkpoint", "seed"}


def test_global_norm_equals_the_float64_norm():
  # blocked leaves (rows a multiple of 32), short and odd ones, a vector and a scalar
  shapes = [(9216, 64), (3, 3, 32, 64), (96, 10), (70, 5), (64,), (), (32, 1)]
  keys = jax.random.split(jax.random.key(0), len(shapes))
  tree = {str(s): jax.random.normal(k, s) * (i + 1) for i, (k, s) in enumerate(zip(keys, shapes))}
  exact = np.sqrt(sum(np.sum(np.asarray(x, np.float64) ** 2) for x in tree.values()))
  got = jax.jit(optim.global_norm)(tree)
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(float(got), exact, rtol=1e-6)
  np.testing.assert_allclose(float(got), float(optax.tree.norm(tree)), rtol=1e-6)
  for blocked in (True, False):  # the plan's choice, either way the same norm
    np.testing.assert_allclose(float(optim.global_norm(tree, blocked)), exact, rtol=1e-6)
  assert float(optim.global_norm({})) == 0.0
  assert float(optim.global_norm({"a": jnp.zeros((0, 3)), "b": jnp.zeros((3, 0))})) == 0.0
  assert not np.isfinite(float(optim.global_norm({"a": jnp.full((64, 8), jnp.inf)})))
  assert np.isnan(float(optim.global_norm({"a": jnp.zeros((64, 8)).at[3, 1].set(jnp.nan)})))
