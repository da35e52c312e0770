"""The config's value rules: declared once per key, every number finite and in range, and no
key the defaults lack, in any group."""

import math
import re

import pytest

from cnn_jax import checkpoint, config, optim, parallel, protocols, schema
from cnn_jax.data import config as data_config
from cnn_jax.errors import ConfigError
from helpers import load_config

GROUP_RULES = {"optim": optim.RULES, "data": data_config.RULES, "train": config.TRAIN_RULES,
               "checkpoint": checkpoint.RULES, "mesh": parallel.RULES, "eval": protocols.RULES}


def test_every_numeric_key_has_a_rule():
  cfg = config.base("vgg", "A")
  rules = {f"model.{k}" for k in config.model_rules()} | {"seed"}
  rules |= {f"{g}.{k}" for g, table in GROUP_RULES.items() for k in table}
  missing = [k for k in schema.numeric_keys(cfg) if k not in rules]
  assert not missing, missing


def test_num_rules_accept_their_range_and_refuse_the_rest():
  rate = schema.positive()
  assert rate.ok(0.1) and rate.ok(3) and not rate.ok(0) and not rate.ok(-1)
  assert not rate.ok(math.inf) and not rate.ok(math.nan) and not rate.ok(True)
  frac = schema.fraction()
  assert frac.ok(0.0) and frac.ok(0.999) and not frac.ok(1.0)
  count = schema.at_least(1, integer=True)
  assert count.ok(3) and not count.ok(3.0) and not count.ok(0)
  devices = parallel.RULES["data"]
  assert devices.ok(-1) and devices.ok(4) and not devices.ok(0) and not devices.ok(-2)
  assert devices.describe() == "must be an int >= 1 or -1 (devices; -1 = all not on `model`)"


@pytest.mark.parametrize("key,value,words", [
    ("optim.b2", 5.0, "optim.b2=5.0 must be a number in [0, 1)"),
    ("optim.lr", math.inf, "optim.lr=inf must be finite"),
    ("train.epochs", math.inf, "train.epochs=inf must be finite"),
    ("optim.decay_factor", 0.0, "optim.decay_factor=0.0 must be a number in (0, 1]"),
    ("train.log_every_steps", 0, "train.log_every_steps=0 must be an int >= 1"),
    ("model.num_classes", 1, "model.num_classes=1 must be an int >= 2"),
    ("checkpoint.best_metric", "top1", "checkpoint.best_metric='top1' is not allowed"),
    ("data.preprocess.stats_samples", 0, "data.preprocess.stats_samples=0 must be an int >= 1"),
    ("seed", -3, "seed=-3 must be an int >= 0"),
])
def test_a_bad_value_is_named_with_its_range(key, value, words):
  cfg = load_config("simple_cnn.py")
  *groups, name = key.split(".")
  target = cfg
  for g in groups:
    target = target[g]
  target[name] = value
  with pytest.raises(ConfigError, match="^" + re.escape(words)):
    config.validate(cfg)


@pytest.mark.parametrize("group", ["model", "data", "data.preprocess", "optim", "train",
                                   "checkpoint", "mesh", ""])
def test_an_unknown_key_in_any_group_is_refused(group):
  cfg = load_config("simple_cnn.py")  # as a config file would set it, unlocked
  target = cfg
  for g in filter(None, group.split(".")):
    target = target[g]
  with target.unlocked() if hasattr(target, "unlocked") else _nothing():
    target["lrr"] = 0.1
  where = f"{group}.lrr" if group else "lrr"
  with pytest.raises(ConfigError, match=f"^{where} is not a config key"):
    config.validate(cfg)


def test_a_typo_names_the_nearest_key():
  cfg = load_config("simple_cnn.py")
  cfg.optim["lrr"] = 0.1
  with pytest.raises(ConfigError, match=r"did you mean optim\.lr\?"):
    config.validate(cfg)


class _nothing:
  def __enter__(self):
    return self

  def __exit__(self, *exc):
    return False

