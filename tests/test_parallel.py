"""Sharded training on 8 simulated CPU devices (conftest.py): every layout computes what one
device computes; the compiled steps hold the collectives their layout implies; checkpoints
restore across meshes; two processes on localhost match one."""

import collections
import json
import os
import re
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from cnn_jax import config, models, parallel, train
from cnn_jax.errors import ConfigError, UserError
from helpers import global_batches, load_config, losses_on, tiny_training

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def mock_fashion_mnist():
  with tfds.testing.mock_data(num_examples=48):
    yield


def test_eight_simulated_devices():
  assert jax.device_count() == 8


# -- layouts as rules ------------------------------------------------------------------------

def layout_of(file, arg, devices=8, **mesh):
  cfg = load_config(file, arg)
  cfg.mesh.update(mesh)
  config.validate(cfg)
  m = parallel.make_mesh(cfg.mesh, jax.devices()[:devices])
  model = models.abstract(cfg.model)
  from flax import nnx
  _, params, _ = nnx.split(model, nnx.Param, ...)
  return parallel.Layout.of(cfg.mesh, m, params)


def specs(layout) -> dict:
  return {k: tuple(s) for k, s in layout.specs.items()}


def test_presets_place_the_papers_layers():
  dp = layout_of("vgg.py", "D", layout="replicated")
  assert all(tuple(s) == () for s in dp.specs.values())

  fsdp = specs(layout_of("vgg.py", "D", layout="fsdp"))
  assert fsdp["fc6/kernel"] == ("data",)                  # (25088, 4096): the larger dim
  assert fsdp["conv1_1/kernel"] == ()                     # 1,728 < fsdp_min_size
  assert fsdp["conv5_3/kernel"] == (None, None, "data")   # (3, 3, 512, 512): the first 512
  assert fsdp["fc8/bias"] == ()
  per_device = layout_of("vgg.py", "D", layout="fsdp").per_device_params()
  assert 138_357_544 / 8 < per_device < 138_357_544 / 8 * 1.01

  tp = specs(layout_of("vgg.py", "D", layout="tensor_parallel", model=2))
  assert tp["fc6/kernel"] == (None, "model") and tp["fc6/bias"] == ("model",)
  assert tp["fc7/kernel"] == ("model",) and tp["fc7/bias"] == ()
  assert tp["conv1_1/kernel"] == () and tp["fc8/kernel"] == ()

  towers = layout_of("alexnet.py", "paper", layout="two_tower", model=2)
  for name in ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"):
    assert specs(towers)[f"{name}/kernel"][-1] == "model", name
    assert specs(towers)[f"{name}/bias"] == ("model",), name
  # each GPU of the paper holds half of AlexNet: 60,965,224 / 2 parameters
  assert towers.per_device_params() == 60_965_224 // 2


def test_rules_come_before_the_layout_and_take_every_spec_form():
  lay = specs(layout_of("vgg.py", "small_A", layout="fsdp", rules=(
      (r"^fc6/kernel$", ("data", None)), (r"^fc7/kernel$", "in:data"),
      (r"^conv5_2/", "replicated"))))
  assert lay["fc6/kernel"] == ("data", None)
  assert lay["fc7/kernel"] == ("data",)
  assert lay["conv5_2/kernel"] == ()
  assert lay["conv5_1/kernel"] != ()  # the layout's own rule


@pytest.mark.parametrize("mesh,match", [
    ({"layout": "ring"}, "mesh.layout='ring'"),
    ({"layout": "two_tower", "model": 4}, "mesh.model=2"),
    ({"model": 2}, "splits nothing over `model`"),
    ({"data": 0}, "mesh.data=0"),
    ({"rules": (("fc6", ("rows",)),)}, "mesh.rules\\[0\\]: spec"),
    ({"rules": (("(", ()),)}, "not a regular expression"),
    ({"rules": ("fc6",)}, "must be a \\(regex, spec\\) pair"),
])
def test_bad_mesh_config_is_named(mesh, match):
  cfg = load_config("vgg.py", "small_A")
  cfg.mesh.update(mesh)
  with pytest.raises(ConfigError, match=match):
    config.validate(cfg)


def test_impossible_meshes_and_splits_are_named():
  with pytest.raises(ConfigError, match="fc8/kernel dimension 1 has size 10, not divisible"):
    layout_of("vgg.py", "small_A", devices=8, layout="fsdp",
              rules=(("fc8/kernel", (None, "data")),))
  with pytest.raises(UserError, match="needs 16 devices but there are 8"):
    cfg = load_config("vgg.py", "small_A")
    cfg.mesh.data = 16
    parallel.make_mesh(cfg.mesh)
  with pytest.raises(UserError, match="mesh.model=3 does not divide the 8 devices"):
    cfg.mesh.data, cfg.mesh.model = -1, 3
    parallel.make_mesh(cfg.mesh)


def test_batch_must_split_over_the_data_axis(mock_fashion_mnist, tmp_path):
  cfg = tiny_training("simple_cnn.py", batch=12)
  with pytest.raises(UserError, match="train.batch_size=12 must split evenly over the 8"):
    train.Run(cfg, str(tmp_path))


# -- every layout computes what one device computes ------------------------------------------

CASES = {  # name: (config file, variant, mesh); dropout stays on: its masks must agree too
    "data_parallel": ("vgg.py", "small_A", {"layout": "replicated"}),
    "fsdp": ("vgg.py", "small_A", {"layout": "fsdp", "fsdp_min_size": 1024}),
    "tensor_parallel": ("vgg.py", "small_A", {"layout": "tensor_parallel", "model": 2}),
    "two_tower": ("alexnet.py", "small", {"layout": "two_tower", "model": 2}),
    "batchnorm_data_parallel": ("vgg.py", "small_A", {"layout": "replicated"}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_layout_matches_one_device(mock_fashion_mnist, tmp_path, case):
  file, arg, mesh = CASES[case]
  norm = "batchnorm" if case.startswith("batchnorm") else "paper"

  def run(name, **m):
    cfg = tiny_training(file, arg, **m)
    cfg.model.update(width=0.125, norm=norm)
    r = train.Run(cfg, str(tmp_path / name))
    return r, losses_on(r, global_batches(cfg, 4))

  one, (losses_1, params_1) = run("one", data=1)
  many, (losses_n, params_n) = run("many", **mesh)
  assert one.mesh.size == 1 and many.mesh.size == 8
  sharded = [k for k, s in many.layout.specs.items() if any(s)]
  if mesh["layout"] == "replicated":
    assert not sharded
  else:  # the parameters really are split: some device holds only a part
    assert sharded
    assert any(x.addressable_shards[0].data.size < x.size
               for x in jax.tree.leaves(many.state.params))
  assert losses_1[0] > 0 and len(losses_n) == 4
  np.testing.assert_allclose(losses_n, losses_1, rtol=2e-5, atol=2e-6)
  for a, b in zip(params_n, params_1):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
  if norm == "batchnorm":  # running statistics over the whole global batch
    stats = [(a, b) for a, b in zip(jax.tree.leaves(many.state.rest),
                                    jax.tree.leaves(one.state.rest))
             if jax.numpy.issubdtype(a.dtype, jax.numpy.floating)]
    assert stats
    for a, b in stats:
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)


# -- the collectives of the compiled steps ---------------------------------------------------

OP = re.compile(r"= (.*?) (all-gather|all-reduce|reduce-scatter|all-to-all|collective-permute)"
                r"(?:-start)?\(")


def collectives(run, batch_size=512) -> dict:
  """{op: [result shapes]} in the HLO of the train step compiled for a global batch of
  `batch_size` (large enough that reducing gradients costs less than gathering activations,
  as in real training)."""
  shape = lambda *s, dtype=np.float32: jax.ShapeDtypeStruct(  # noqa: E731
      s, dtype, sharding=run.batch_sharding)
  batch = {"image": shape(batch_size, *run.cfg.model.input_shape),
           "label": shape(batch_size, dtype=np.int32)}
  with jax.set_mesh(run.mesh):
    text = run.train_step.lower(run.state, batch).compile().as_text()
  found = collections.defaultdict(list)
  for result, op in OP.findall(text):  # shapes as sorted dims: XLA may transpose a gradient
    found[op] += [tuple(sorted(int(d) for d in dims.split(",") if d))
                  for dims in re.findall(r"\w+\[([\d,]*)\]", result)]
  return found


def test_data_parallel_step_reduces_gradients_and_gathers_no_parameters(mock_fashion_mnist,
                                                                         tmp_path):
  cfg = tiny_training("vgg.py", "small_A", layout="replicated")
  cfg.model.lowering = "xla"  # the GPU/TPU route, the one these collectives matter on
  run = train.Run(cfg, str(tmp_path))
  ops = collectives(run)
  shapes = [tuple(sorted(s)) for s in run.layout.shapes.values()]
  assert not any(s in shapes for s in ops["all-gather"])
  reduced = collections.Counter(ops["all-reduce"])
  for shape, count in collections.Counter(shapes).items():  # every gradient, over `data`
    assert reduced[shape] >= count, shape


def test_fsdp_step_gathers_parameters_and_scatters_gradients(mock_fashion_mnist, tmp_path):
  cfg = tiny_training("vgg.py", "small_A", layout="fsdp", fsdp_min_size=1024)
  cfg.model.lowering = "xla"
  run = train.Run(cfg, str(tmp_path))
  ops = collectives(run)
  sharded = {k: run.layout.shapes[k] for k, s in run.layout.specs.items() if any(s)}
  assert len(sharded) >= 6
  for name, shape in sharded.items():
    assert tuple(sorted(shape)) in ops["all-gather"], f"{name} {shape} is not gathered"
    # the summed gradient kept as each device's 1/8: a reduce-scatter, or on XLA's CPU
    # backend (which has no reduce-scatter pass) an all-reduce then a dynamic slice
    shard = tuple(sorted(d // 8 if a == "data" else d
                         for d, a in zip(shape, (*run.layout.specs[name],
                                                 *[None] * len(shape)))))
    assert shard in ops["reduce-scatter"] or tuple(sorted(shape)) in ops["all-reduce"], name
  # and the state stays split: each device holds 1/8 of a sharded parameter
  params = dict(jax.tree_util.tree_flatten_with_path(run.state.params)[0])
  for path, leaf in params.items():
    name = parallel.path_of(path)
    if name in sharded:
      assert leaf.addressable_shards[0].data.size * 8 == leaf.size


# -- checkpoints across meshes ---------------------------------------------------------------

def host_leaves(tree) -> list:
  """The leaves as numpy arrays (PRNG keys as their key data)."""
  return [np.asarray(jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)
                     else x) for x in jax.tree.leaves(tree)]


def test_checkpoint_restores_across_meshes_and_layouts(mock_fashion_mnist, tmp_path):
  fsdp = {"layout": "fsdp", "fsdp_min_size": 1024}
  # saved on 8 devices with FSDP ...
  straight = train.train(tiny_training("simple_cnn.py", None, steps=4, **fsdp), str(tmp_path / "a"))
  half = tiny_training("simple_cnn.py", None, steps=2, **fsdp)
  train.train(half, str(tmp_path / "b"))
  saved = train.Run(half, str(tmp_path / "b"))
  assert saved.restore() == 2
  saved.close()  # gives the work directory up (one Run holds it at a time)
  # ... restored on one device: the same values, and training goes on from them
  one = tiny_training("simple_cnn.py", None, steps=4, data=1)
  restored = train.Run(one, str(tmp_path / "b"))
  assert restored.restore() == 2
  for a, b in zip(host_leaves(restored.state), host_leaves(saved.state)):
    np.testing.assert_array_equal(a, b)
  assert all(len(x.devices()) == 1 for x in jax.tree.leaves(restored.state.params))
  restored.close()
  resumed = train.train(one, str(tmp_path / "b"))
  assert resumed["layout"] == "replicated" and resumed["devices"] == 1
  assert straight["layout"] == "fsdp" and straight["devices"] == 8
  losses = {d: [r["loss"] for r in map(json.loads, open(tmp_path / d / "metrics.jsonl"))
                if "loss" in r] for d in ("a", "b")}
  np.testing.assert_allclose(losses["b"], losses["a"], rtol=1e-4)

  # and the reverse: saved on one device, restored split over 8
  single = tiny_training("simple_cnn.py", None, steps=2, data=1)
  train.train(single, str(tmp_path / "c"))
  back = train.Run(tiny_training("simple_cnn.py", None, steps=2, **fsdp), str(tmp_path / "c"))
  assert back.restore() == 2
  back.close()
  source = train.Run(single, str(tmp_path / "c"))
  source.restore()
  for path, leaf in jax.tree_util.tree_flatten_with_path(back.state.params)[0]:
    spec = back.layout.specs[parallel.path_of(path)]
    assert leaf.sharding.spec == spec
  for a, b in zip(host_leaves(back.state), host_leaves(source.state)):
    np.testing.assert_array_equal(a, b)


# -- two processes on localhost --------------------------------------------------------------

# gloo's own C++ lines reach both processes' stdout, some without the [Gloo] prefix
GLOO_LINE = re.compile(r"^\[Gloo\]|connected to \d+ peer ranks")


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def test_two_processes_match_one(mock_fashion_mnist, tmp_path):
  """jax.distributed over CPU collectives (gloo), 2 devices per process, FSDP over all 4."""
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
         "JAX_PLATFORMS": "cpu"}
  address = f"localhost:{free_port()}"
  procs = [subprocess.Popen([sys.executable, os.path.join(ROOT, "tests", "distributed_worker.py"),
                             address, "2", str(i), str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
           for i in range(2)]
  outs = []
  for p in procs:
    out, err = p.communicate(timeout=400)
    assert p.returncode == 0, err[-3000:]
    lines = [line for line in out.strip().splitlines() if not GLOO_LINE.search(line)]
    outs.append((lines[:-1], json.loads(lines[-1])))  # the result is the last line of its own
  (out0, r0), (out1, r1) = outs

  cfg = tiny_training("simple_cnn.py", **r0["mesh"])
  cfg.mesh.data = 1
  one = train.Run(cfg, str(tmp_path / "one"))
  losses, params = losses_on(one, global_batches(cfg, 4))
  for r in (r0, r1):
    np.testing.assert_allclose(r["losses"], losses, rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(r["param_sums"], [float(np.sum(p)) for p in params],
                               rtol=1e-4, atol=1e-5)
  # the whole run: both processes took part; only process 0 wrote logs and plots
  assert r0["final"]["processes"] == 2 and r0["final"]["devices"] == 4
  assert r0["final"]["layout"] == "fsdp"
  assert r0["final"]["eval_top1"] == r1["final"]["eval_top1"]
  assert any("mesh data=4,model=1 over 4 cpu devices, 2 processes" in line for line in out0)
  assert out1 == []  # process 1 printed only its result
  run_dir = tmp_path / "train"
  assert (run_dir / "metrics.jsonl").exists() and (run_dir / "curves.png").exists()
  assert sorted(os.listdir(run_dir / "checkpoints")) == ["4"]
  rows = [json.loads(line) for line in open(run_dir / "metrics.jsonl")]
  assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3, 4]  # one writer, no duplicates
