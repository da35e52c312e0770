"""benchmarks/accelerator.py runs end to end (--smoke) without TensorFlow, TFDS, clu,
Matplotlib or Pillow, as on an accelerator machine that has only JAX, Flax, Optax, Orbax and
TensorBoard; and the IDX reader it uses."""

import gzip
import json
import subprocess
import sys

import numpy as np
import pytest

from cnn_jax.data import VENDORED_FASHION_MNIST, idx
from cnn_jax.errors import UserError
from conftest import ROOT

BLOCKED = ("tensorflow", "tensorflow_datasets", "clu", "matplotlib", "PIL")
RUN = f"""
import runpy, sys
class Block:
  def find_spec(self, name, path=None, target=None):
    if name.split(".")[0] in {BLOCKED!r}:
      raise ImportError(name + " is not installed here")
sys.meta_path.insert(0, Block())
sys.argv = ["accelerator.py"] + sys.argv[1:]
runpy.run_path("benchmarks/accelerator.py", run_name="__main__")
"""


def test_smoke_runs_without_tensorflow(tmp_path):
  out = tmp_path / "acc.json"
  r = subprocess.run([sys.executable, "-c", RUN, "--smoke", f"--out={out}"], cwd=ROOT,
                     capture_output=True, text=True, timeout=600)
  assert r.returncode == 0, r.stderr[-3000:]
  result = json.loads(out.read_text())
  labels = [t["label"] for t in result["throughput"]]
  assert labels == ["vgg_D bf16 b8", "alexnet two-tower", "simple_cnn"]
  for t in result["throughput"]:
    assert t["train_images_per_sec"] > 0 and 0 < t["mfu"] < 1.5 and t["compile_s"] > 0
    assert t["lowering_used"] == "cpu"  # auto on the CPU backend; 'xla' is checked off it
  job = result["main_job"]
  assert job["train_examples"] == 2048 and len(job["epochs"]) == 1
  assert job["epochs"][0]["test_top1"] > 0.3  # one short epoch learns something
  assert "main job" in r.stdout and "MFU" in r.stdout


def test_idx_reads_the_original_files_and_refuses_others(tmp_path):
  images, labels = idx.load(VENDORED_FASHION_MNIST, "test")
  assert images.shape == (10000, 28, 28, 1) and images.dtype == np.uint8
  assert labels.dtype == np.int32 and np.bincount(labels).tolist() == [1000] * 10
  raw = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
  header = bytes([0, 0, 8, 3]) + np.array(raw.shape, ">i4").tobytes()
  np.testing.assert_array_equal(idx.decode(header + raw.tobytes()), raw)
  with pytest.raises(ValueError, match="IDX header"):
    idx.decode(header + raw.tobytes()[:-1])
  for name in idx.FILES["test"]:
    (tmp_path / name).write_bytes(gzip.compress(header + raw.tobytes()))
  with pytest.raises(UserError, match="is not the original t10k-images"):
    idx.load(str(tmp_path), "test")
  with pytest.raises(UserError, match="does not exist"):
    idx.load(str(tmp_path), "train")


@pytest.mark.parametrize("text", ["abc", "1", "1,-2", "nan,1"])
def test_a_bad_peak_is_one_line_and_exit_2(text):
  r = subprocess.run([sys.executable, "benchmarks/accelerator.py", "--smoke",
                      f"--peak_tflops={text}"], cwd=ROOT, capture_output=True, text=True,
                     timeout=120)
  assert r.returncode == 2
  assert r.stderr.strip().count("\n") == 0 and "--peak_tflops=" in r.stderr
  assert "e.g. --peak_tflops=" in r.stderr
