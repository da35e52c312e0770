"""Partial loading by rules and shape policy, a new head, per-group learning rates, export."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from cnn_jax import config, export, models, optim, transfer, weights_io
from cnn_jax.errors import ConfigError, UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cfg(**model):
  return config.validate(config.base("simple_cnn", "base", **model)).model


def split(m, seed=0):
  model = models.build(m, seed=seed)
  _, params, rest = nnx.split(models.view(model, train=False), nnx.Param, ...)
  return params, rest


def flat(params):
  return weights_io.flat(params)


def source_file(tmp_path, seed=7, **model):
  """A .npz of a differently seeded simple CNN (`model` overrides its config)."""
  path = str(tmp_path / f"src{seed}.npz")
  weights_io.write(flat(split(cfg(**model), seed)[0]), path)
  return path


def load(m):
  params, rest = split(m)
  before = flat(params)
  params, _, copied = transfer.initialise(m, params, rest)
  return before, flat(params), copied


def test_rules_copy_exactly_the_matched_parameters_and_leave_the_rest(tmp_path):
  path = source_file(tmp_path)
  source = weights_io.read_file(path)
  before, after, copied = load(cfg(init_from=path, init_from_rules=("^conv1/kernel",
                                                                     "conv2/(.*)=>conv2/\\1")))
  assert copied == ["conv1/kernel", "conv2/bias", "conv2/kernel"]
  for k in after:
    np.testing.assert_array_equal(after[k], source[k] if k in copied else before[k])
    if k not in copied and k.endswith("kernel"):  # (biases start at zero in both)
      assert not np.array_equal(after[k], source[k])


def test_a_rule_renames_source_paths(tmp_path):
  path = str(tmp_path / "renamed.npz")
  src = flat(split(cfg(), 7)[0])
  weights_io.write({"features/" + k: v for k, v in src.items()}, path)
  _, after, copied = load(cfg(init_from=path, init_from_rules=("features/(fc1/.*)=>\\1",)))
  assert copied == ["fc1/bias", "fc1/kernel"]
  np.testing.assert_array_equal(after["fc1/kernel"], src["fc1/kernel"])


def test_shape_policy_error_names_both_shapes_and_skip_keeps_the_initial_value(tmp_path):
  path = source_file(tmp_path, num_classes=5)
  with pytest.raises(UserError, match=r"fc2/bias is \(5,\) in its checkpoint but "
                                      r"\(10,\) in this model"):
    load(cfg(init_from=path, init_from_layers="all"))
  before, after, copied = load(cfg(init_from=path, init_from_layers="all",
                                   init_from_shapes="skip"))
  assert "fc2/kernel" not in copied and "conv1/kernel" in copied
  np.testing.assert_array_equal(after["fc2/kernel"], before["fc2/kernel"])


def test_backbone_preset_gives_a_new_head_for_a_new_number_of_classes(tmp_path):
  path = source_file(tmp_path)  # 10 classes
  source = weights_io.read_file(path)
  before, after, copied = load(cfg(init_from=path, init_from_layers="backbone", num_classes=3))
  assert copied == ["conv1/bias", "conv1/kernel", "conv2/bias", "conv2/kernel", "fc1/bias",
                    "fc1/kernel"]
  assert after["fc2/kernel"].shape == (100, 3)
  np.testing.assert_array_equal(after["fc2/kernel"], before["fc2/kernel"])
  np.testing.assert_array_equal(after["fc1/kernel"], source["fc1/kernel"])


def test_bad_sources_and_rules_are_one_line_user_errors(tmp_path):
  with pytest.raises(ConfigError, match="does not exist"):
    cfg(init_from=str(tmp_path / "missing"))
  (tmp_path / "empty").mkdir()
  with pytest.raises(UserError, match="holds no checkpoint"):
    load(cfg(init_from=str(tmp_path / "empty")))
  path = source_file(tmp_path)
  with pytest.raises(UserError, match=r"'conv9/' matches no parameter of .*conv1, conv2, fc1"):
    load(cfg(init_from=path, init_from_rules=("conv1/", "conv9/")))
  with pytest.raises(UserError, match=r"maps conv1/(bias|kernel) to c1/\1, which this model lacks"):
    load(cfg(init_from=path, init_from_rules=("conv1/=>c1/",)))
  with pytest.raises(ConfigError, match="init_from_shapes"):
    cfg(init_from_shapes="maybe")
  with pytest.raises(ConfigError, match="not 'src_regex=>dst'"):
    cfg(init_from_rules=("conv(=>x",))
  (tmp_path / "x.txt").write_text("")
  with pytest.raises(ConfigError, match="file of unknown kind"):
    cfg(init_from=str(tmp_path / "x.txt"))


def test_a_group_at_one_tenth_moves_one_tenth_as_far_with_sgd():
  o = config.base("simple_cnn", "base").optim
  o.update(name="sgd", lr=0.1, momentum=0.9, weight_decay=0.0,
           lr_multipliers=("^conv.*=0.1", "fc2/bias=0"))
  optim.validate(o)
  params, _ = split(cfg())
  tx = optim.make(o, params, 10, 10)
  state = tx.init(params)
  grads = jax.tree.map(jnp.ones_like, params)
  total = jax.tree.map(jnp.zeros_like, params)
  for _ in range(3):  # momentum accumulates the same way in both groups
    updates, state = tx.update(grads, state, params)
    total = jax.tree.map(lambda t, u: t + u, total, updates)
  moved = {k: float(np.abs(v).max()) for k, v in flat(total).items()}
  full = moved["fc1/kernel"]
  assert full > 0
  np.testing.assert_allclose(moved["conv1/kernel"], 0.1 * full, rtol=1e-6)
  np.testing.assert_allclose(moved["conv2/bias"], 0.1 * full, rtol=1e-6)
  assert moved["fc2/bias"] == 0 and moved["fc2/kernel"] == pytest.approx(full)
  o.lr_multipliers = ("nothing=0.5",)
  with pytest.raises(ConfigError, match="matches no parameter"):
    optim.make(o, params, 10, 10)
  o.lr_multipliers = ("conv=-1",)
  with pytest.raises(ConfigError, match="factor >= 0"):
    optim.validate(o)


def checkpoint_dir(tmp_path):
  """A work directory with one checkpoint laid out as the trainer writes it."""
  import orbax.checkpoint as ocp
  params, rest = split(cfg(norm="batchnorm"), seed=5)
  work = tmp_path / "work"
  ckptr = ocp.StandardCheckpointer()
  ckptr.save(str(work / "checkpoints" / "4" / "state"),
             {"params": params.to_pure_dict(), "rest": rest.to_pure_dict()})
  ckptr.wait_until_finished()
  ckptr.close()
  return work, {**flat(params), **{k: v for k, v in flat(rest).items() if v.dtype.kind == "f"}}


@pytest.mark.parametrize("ext", [".npz", ".safetensors"])
def test_export_round_trips_by_layer_name(tmp_path, ext):
  if ext == ".safetensors":
    pytest.importorskip("safetensors")
  work, expected = checkpoint_dir(tmp_path)
  out = str(tmp_path / f"w{ext}")
  result = export.export(str(work), out)
  assert result["layers"] == ["conv1", "conv1_bn", "conv2", "conv2_bn", "fc1", "fc2"]
  got = weights_io.read_file(out)
  assert set(got) == set(expected) and "conv1_bn/mean" in got
  for k in expected:
    np.testing.assert_array_equal(got[k], expected[k])
  # ... and loads back into a model by name, batch-norm statistics included
  params, rest = split(cfg(norm="batchnorm"))
  params, rest, copied = transfer.initialise(
      cfg(norm="batchnorm", init_from=out, init_from_layers="all"), params, rest)
  np.testing.assert_array_equal(flat(rest)["conv2_bn/var"], expected["conv2_bn/var"])
  assert len(copied) == len(expected)


def test_export_cli_bad_input_is_one_line_exit_2_nothing_written(tmp_path):
  out = tmp_path / "w.npz"
  for args in (["--workdir", str(tmp_path / "missing")], ["--workdir", str(tmp_path)]):
    p = subprocess.run([sys.executable, "-m", "cnn_jax.export", *args, "--out", str(out)],
                       capture_output=True, text=True, cwd=ROOT, check=False)
    assert p.returncode == 2, p.stderr
    assert p.stderr.count("\n") == 1 and p.stderr.startswith("error: --workdir=")
    assert not out.exists() and not [f for f in os.listdir(tmp_path) if f.startswith(".w")]
