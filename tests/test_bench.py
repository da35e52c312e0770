"""Performance machinery: the train step compiles once per run, bfloat16 compute keeps float32
parameters, `run.py bench` reports its figures, and lowering_ab switches rewrites through the
config (the lowerings' equivalence is in test_plan.py)."""

import json
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds
from flax import nnx

from benchmarks import lowering_ab
from cnn_jax import bench, config, huge_pages, models, train
from cnn_jax.models import plan
from conftest import ROOT
from helpers import load_config


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
  assert len(batches[0]) == len(batches[1]) == 5  # 48 mock examples, 5 held out: 43 // 8
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


def test_lowering_ab_switches_each_rewrite_in_the_config_and_none_compiles_the_same_step():
  cfg = lowering_ab.load(f"{ROOT}/configs/simple_cnn.py", 8)
  cfg.model.lowering = "cpu"
  for name in lowering_ab.REWRITES:
    for on in (True, False):
      with lowering_ab.switched(cfg, name, on=on):
        assert (name in plan.parse_rewrites(cfg.model.rewrites)) == on, name
        config.validate(cfg)
      assert cfg.model.rewrites == "all", name

  def texts(rewrite):
    steps = lowering_ab.compiled_steps(cfg, rewrite)
    return [_program(steps[v][0]) for v in ("on", "off")]

  same = texts("none")
  assert same[0] == same[1]  # the A/A comparison times one program twice
  differ = texts("pool_first")
  assert differ[0] != differ[1] and differ[1] != same[0] and differ[0] == same[0]
  cfg.model.lowering = "xla"
  with pytest.raises(ValueError, match="cpu route"):
    with lowering_ab.switched(cfg, "pool_first", on=False):
      pass
