"""run.py summary, the parameter table script, and one-line errors for bad input."""

import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT


def run(*args):
  return subprocess.run([sys.executable, os.path.join(ROOT, "run.py"), *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=300)


def test_summary_json():
  r = run("summary", "--config=configs/vgg.py:D", "--json")
  assert r.returncode == 0, r.stderr
  d = json.loads(r.stdout)
  assert d["params"] == 138_357_544
  assert round(d["macs"] / 1e9, 3) == 15.470
  assert len([x for x in d["layers"] if x["name"].startswith("conv")
              and not x["name"].endswith("relu")]) == 13
  assert {"name", "output_shape", "params", "macs", "receptive_field"} <= set(d["layers"][0])


def test_summary_table_with_overrides():
  r = run("summary", "--config=configs/alexnet.py:paper", "--config.model.norm=batchnorm",
          "--config.model.stem=stacked3x3", "--config.model.input_shape=(99, 99, 3)")
  assert r.returncode == 0, r.stderr
  assert "conv1_4_bn" in r.stdout and "alexnet 'paper' at 99x99x3" in r.stdout


def test_no_command_trains_the_main_job(tmp_path):
  # The main job is `python run.py`: train, small CNN, Fashion-MNIST. Shortened here.
  r = run(f"--workdir={tmp_path}", "--config.train.steps=3", "--config.train.eval_every_steps=3",
          "--config.data.train_split=train[:1%]", "--config.data.eval_split=test[:1%]")
  assert r.returncode == 0, r.stderr
  assert "simple_cnn 'base' on fashion_mnist: 333,526 parameters" in r.stdout
  assert "540 training images" in r.stdout  # 1% of the 54,000 left beside the validation split
  assert "done: step 3" in r.stdout
  assert os.path.exists(tmp_path / "checkpoints" / "3")


@pytest.mark.parametrize("args,words", [
    (["summary", "--config=configs/vgg.py:F"], ["model.variant='F'", "A-LRN"]),
    (["summary", "--config=configs/vgg.py", "--config.model.depth=3"],
     ["--config.model.depth", "no such config key"]),
    (["summary", "--config.model.width=wide"], ["--config.model.width=wide"]),
    (["summary", "--config=configs/missing.py"], ["configs/missing.py", "check the path"]),
    (["summary", "--config=configs/alexnet.py", "--config.model.input_shape=(40, 40, 3)"],
     ["too small", "at least 67x67"]),
    (["summary", "--config=configs/vgg.py:A", "--config.model.norm=layernorm"],
     ["model.norm='layernorm'", "batchnorm"]),
    (["sumary"], ["unknown command", "summary"]),
    (["summary", "--config=configs/simple_cnn.py:nope"], ["no such variant", "base, fast"]),
])
def test_bad_input_gets_one_line_error_and_exit_2(args, words):
  r = run(*args)
  assert r.returncode == 2
  assert "Traceback" not in r.stderr
  lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
  assert len(lines) == 1, r.stderr
  for w in words:
    assert w in lines[0]


def test_param_table_script_matches_readme():
  r = subprocess.run([sys.executable, os.path.join(ROOT, "experiments", "param_table.py")],
                     capture_output=True, text=True, timeout=300, cwd=ROOT)
  assert r.returncode == 0, r.stderr
  assert "| VGG D | 224x224x3 | 138 M (Table 2) | 138,357,544 | +0.3% | 15.470G |" in r.stdout
  assert "| LeNet-5 | 32x32x1 | 60,000 (Sec. II.B) | 60,000 | +0.0% |" in r.stdout
  with open(os.path.join(ROOT, "README.md")) as f:
    assert r.stdout.strip() in f.read()  # the README shows the script's current output


def test_ci_runs_the_readme_test_command():
  with open(os.path.join(ROOT, ".ci", "run")) as f:
    ci_command = f.read().strip().splitlines()[-1]
  with open(os.path.join(ROOT, "README.md")) as f:
    readme = f.read()
  assert ci_command.endswith("pytest -q -n 2 tests")
  assert f"```\n{ci_command}\n```" in readme


def test_a_bug_shows_its_traceback_and_exit_1_not_a_user_error():
  code = ("import sys, run; sys.argv = ['run.py', 'summary']; "
          "run.summary = lambda cfg: {}['a key our code lacks']; run.cli()")
  r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                     timeout=300)
  assert r.returncode == 1, r.stderr[-2000:]
  assert "Traceback" in r.stderr and "KeyError: 'a key our code lacks'" in r.stderr
  assert not any(ln.startswith("error:") for ln in r.stderr.splitlines())
