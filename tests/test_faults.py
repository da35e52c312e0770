"""Bad input and faults through run.py, as an adversarial user meets them.

Every case is a command, its exit status, the one `error:` line and the words it must name
(the key, the file, the fix), no traceback, and the work directory afterwards: nothing
created where the run could not start, nothing changed or lost where a run was there before
(checkpoints, config.json, metrics.jsonl, results). `.lock`, the file the lock is taken on, is
the one file a refused command may rewrite. The commands are forked from one process that
has done the imports (tests/fork_runner.py), so a case costs about a second, or a few where
it trains. The storage faults mount file systems and need root (CI runs as root).
"""

import glob
import hashlib
import os
import shutil
import signal
import subprocess
import threading
import time

import numpy as np
import pytest
from PIL import Image

from forked import ForkedRuns, run, wait_for

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="mounting file systems needs root")


def write_images(root, n_per_class=24, size=28, classes=2):
  rng = np.random.default_rng(0)
  for label in range(classes):
    os.makedirs(root / f"class{label}", exist_ok=True)
    for i in range(n_per_class):
      pixels = rng.integers(60 * label, 60 * label + 120, (size, size), dtype=np.uint8)
      Image.fromarray(pixels, "L").save(root / f"class{label}" / f"{i}.png")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
  """The datasets, config and study files the cases point at."""
  root = tmp_path_factory.mktemp("files")
  write_images(root / "images")
  write_images(root / "tiny_images", size=8)
  write_images(root / "one_class", classes=1)
  (root / "syntax.py").write_text("def get_config(:\n")
  (root / "name_error.py").write_text("def get_config():\n  return undefined_name\n")
  (root / "typo.py").write_text(
      "from configs.simple_cnn import get_config as base\n\n"
      "def get_config():\n  cfg = base()\n  cfg.optim.lrr = 0.1\n  return cfg\n")
  (root / "study_syntax.py").write_text("def get_study(scale:\n")
  (root / "study_empty.py").write_text("X = 1\n")
  return root


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  server = ForkedRuns(tmp_path_factory.mktemp("server"))
  yield server
  server.close()


def tiny(files, steps=8, folder="images"):
  """A run of `steps` on the two-class image folder, evaluated and saved every 4 steps."""
  return ["--config.data.name=folder", f"--config.data.folder={files / folder}",
          "--config.model.num_classes=2", "--config.data.validation_fraction=0.25",
          f"--config.train.steps={steps}", "--config.train.batch_size=8",
          "--config.train.eval_batch_size=12", "--config.train.eval_every_steps=4",
          "--config.train.log_every_steps=2", "--config.checkpoint.every_steps=4",
          "--config.mesh.data=1"]


@pytest.fixture(scope="module")
def trained(runs, files, tmp_path_factory):
  """A finished 8-step run with checkpoints at steps 4 and 8."""
  workdir = tmp_path_factory.mktemp("trained") / "run"
  code, text = run(runs, ["train", f"--workdir={workdir}", *tiny(files)], workdir.parent / "log")
  assert code == 0, text[-3000:]
  assert sorted(os.listdir(workdir / "checkpoints")) == ["4", "8"]
  return workdir


def snapshot(root) -> dict | None:
  """{relative path: sha256} of every file under `root` but the lock; None if it is absent."""
  if not os.path.exists(root):
    return None
  out = {}
  for path in sorted(glob.glob(f"{root}/**/*", recursive=True) + glob.glob(f"{root}/.*")):
    if os.path.isfile(path) and os.path.basename(path) != ".lock":
      with open(path, "rb") as f:
        out[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
  return out


def error_line(code, text, status=2) -> str:
  """The one `error:` line of a command that ended with `status`, no traceback printed."""
  assert code == status, text[-3000:]
  assert "Traceback" not in text, text[-3000:]
  lines = [ln for ln in text.splitlines() if ln.startswith("error:")]
  assert len(lines) == 1, text[-3000:]
  return lines[0]


def copy_run(trained, tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(trained, workdir, ignore=shutil.ignore_patterns(".lock"))
  return workdir


# -- mistakes in the command or the config: one line, nothing created -------------------------
# (id, command arguments, words the error line must contain); {f} is the files folder.
MISTAKES = [
    ("misspelled group", ["summary", "--config.trian.steps=5"], ["--config.trian", "train"]),
    ("unknown key", ["summary", "--config.model.depth=3"], ["--config.model.depth"]),
    ("config syntax error", ["summary", "--config={f}/syntax.py"], ["syntax.py line 1"]),
    ("config name error", ["summary", "--config={f}/name_error.py"],
     ["name_error.py line 2", "NameError"]),
    ("typo in a config file", ["train", "--config={f}/typo.py"], ["optim.lrr", "optim.lr"]),
    ("missing config file", ["summary", "--config={f}/nowhere.py"], ["nowhere.py", "path"]),
    ("unknown variant", ["summary", "--config=configs/vgg.py:F"], ["model.variant='F'"]),
    ("unknown command", ["sumary"], ["unknown command", "summary"]),
    ("width inf in summary", ["summary", "--config.model.width=inf"], ["model.width", "finite"]),
    ("width nan", ["train", "--config.model.width=nan"], ["model.width"]),
    ("width zero", ["train", "--config.model.width=0"], ["model.width", "> 0"]),
    ("width not a number", ["summary", "--config.model.width=wide"], ["model.width=wide"]),
    ("epochs inf", ["train", "--config.train.epochs=inf"], ["train.epochs", "finite"]),
    ("eval interval inf", ["train", "--config.train.eval_every_epochs=inf"],
     ["train.eval_every_epochs"]),
    ("warm-up inf", ["train", "--config.optim.warmup_epochs=inf"], ["optim.warmup_epochs"]),
    ("lr inf", ["train", "--config.optim.lr=inf"], ["optim.lr"]),
    ("lr negative", ["train", "--config.optim.lr=-0.1"], ["optim.lr", "> 0"]),
    ("b2 out of range", ["train", "--config.optim.b2=5"], ["optim.b2", "[0, 1)"]),
    ("momentum negative", ["train", "--config.optim.momentum=-0.5"], ["optim.momentum"]),
    ("eps zero", ["train", "--config.optim.eps=0"], ["optim.eps"]),
    ("decay factor zero", ["train", "--config.optim.decay_factor=0"], ["optim.decay_factor"]),
    ("label smoothing one", ["train", "--config.optim.label_smoothing=1.0"],
     ["optim.label_smoothing"]),
    ("decay epochs inf", ["train", "--config.optim.decay_epochs=(30.0, 1e400)"],
     ["optim.decay_epochs"]),
    ("dropout one", ["train", "--config.model.dropout=1.0"], ["model.dropout"]),
    ("one class in the model", ["train", "--config.model.num_classes=1"],
     ["model.num_classes", "two"]),
    ("batch zero", ["train", "--config.train.batch_size=0"], ["train.batch_size"]),
    ("batch not split", ["train", "--config.optim.accumulate_steps=3"],
     ["train.batch_size", "optim.accumulate_steps=3"]),
    ("log interval zero", ["train", "--config.train.log_every_steps=0"],
     ["train.log_every_steps"]),
    ("keep zero", ["train", "--config.checkpoint.keep=0"], ["checkpoint.keep"]),
    ("mesh zero", ["train", "--config.mesh.data=0"], ["mesh.data", "-1"]),
    ("seed negative", ["train", "--config.seed=-1"], ["seed"]),
    ("pca negative", ["train", "--config.data.preprocess.pca_colour=-1.0"],
     ["data.preprocess.pca_colour"]),
    ("input shape of two", ["summary", "--config.model.input_shape=(28, 28)"],
     ["model.input_shape"]),
    ("input too small", ["summary", "--config=configs/alexnet.py",
                         "--config.model.input_shape=(40, 40, 3)"], ["at least 67x67"]),
    ("folder without held-out share", ["train", "--config.data.validation_fraction=0.0"],
     ["data.eval_split='validation'", "validation_fraction > 0"]),
    ("held-out share above one", ["train", "--config.data.validation_fraction=1.5"],
     ["data.validation_fraction"]),
    ("folder images too small", ["train", "--config.data.folder={f}/tiny_images"],
     ["8x8", "data.preprocess.resize"]),
    ("one-class folder", ["train", "--config.data.folder={f}/one_class"],
     ["1 class", "two"]),
    ("folder missing", ["train", "--config.data.folder={f}/nowhere"],
     ["data.folder", "not a directory"]),
    ("eval of a step name", ["eval", "--checkpoint=foo"], ["no checkpoint in"]),
    ("eval of an empty directory", ["eval"], ["no checkpoint in", "train first"]),
    ("study syntax error", ["study", "--study={f}/study_syntax.py"],
     ["study_syntax.py line 1", "fix the study file"]),
    ("study without get_study", ["study", "--study={f}/study_empty.py"], ["get_study"]),
    ("study is a directory", ["study", "--study={f}"], ["no such study file"]),
    ("study missing", ["study", "--study=experiments/nowhere.py"], ["no such study file"]),
    ("study with no processes", ["study", "--study=experiments/lrn.py", "--processes=0"],
     ["--processes=0", "at least 1"]),
]


@pytest.mark.parametrize("args,words", [c[1:] for c in MISTAKES], ids=[c[0] for c in MISTAKES])
def test_a_mistake_is_one_line_and_creates_nothing(runs, files, tmp_path, args, words):
  workdir = tmp_path / "new" / "run"
  command, *rest = [a.replace("{f}", str(files)) for a in args]
  extra = [] if command in ("summary", "study", "sumary") else tiny(files)
  given = {a.split("=")[0] for a in rest}
  extra = [a for a in extra if a.split("=")[0] not in given]  # the case's own value wins
  first = [a for a in rest if a.startswith("--config=")]  # a config file before overrides
  rest = [a for a in rest if a not in first]
  code, text = run(runs, [command, *first, f"--workdir={workdir}", *extra, *rest],
                   tmp_path / "log")
  line = error_line(code, text)
  for word in words:
    assert word in line, line
  assert not os.path.exists(tmp_path / "new"), "a refused command created its work directory"


# -- a run already in the directory: refused commands change nothing ---------------------------
CONFLICTS = [
    ("eval at another width", ["eval", "--config.model.width=0.5"],
     ["step 8", "params/conv1/bias is (32,) in the checkpoint and (16,)", "model.width"]),
    ("resume at another width", ["train", "--allow_config_change", "--config.model.width=0.5"],
     ["does not fit the config", "(16,)", "nothing was changed"]),
    ("resume with batch norm", ["train", "--allow_config_change", "--config.model.norm=batchnorm"],
     ["is in the config's model but not in the checkpoint"]),
    ("resume with another lr", ["train", "--config.optim.lr=0.5"],
     ["different config", "optim.lr: 0.003 -> 0.5", "--allow_config_change"]),
    ("eval of a missing step", ["eval", "--checkpoint=5"], ["no checkpoint at step 5", "[4, 8]"]),
    ("eval of a step name", ["eval", "--checkpoint=foo"], ["--checkpoint=foo", "latest, best"]),
    ("eval width inf", ["eval", "--config.model.width=inf"], ["model.width"]),
]


@pytest.mark.parametrize("args,words", [c[1:] for c in CONFLICTS], ids=[c[0] for c in CONFLICTS])
def test_a_refused_command_on_a_run_loses_nothing(runs, files, trained, tmp_path, args, words):
  workdir = copy_run(trained, tmp_path)
  before = snapshot(workdir)
  command, *rest = args
  code, text = run(runs, [command, f"--workdir={workdir}", *tiny(files), *rest], tmp_path / "log")
  line = error_line(code, text)
  for word in words:
    assert word in line, line
  assert snapshot(workdir) == before
  assert not os.path.exists(f"{workdir}/checkpoints.corrupt")


def truncate(path):
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) // 2)


def largest_file(directory):
  return max((p for p in glob.glob(f"{directory}/**/*", recursive=True) if os.path.isfile(p)),
             key=os.path.getsize)


@pytest.mark.parametrize("damage", ["truncated", "file deleted"])
def test_a_damaged_newest_checkpoint_falls_back_with_a_warning_only(runs, files, trained,
                                                                     tmp_path, damage):
  workdir = copy_run(trained, tmp_path)
  newest = largest_file(workdir / "checkpoints" / "8")
  truncate(newest) if damage == "truncated" else os.remove(newest)
  step4 = snapshot(workdir / "checkpoints" / "4")
  code, text = run(runs, ["train", f"--workdir={workdir}", *tiny(files)], tmp_path / "log")
  assert code == 0 and "Traceback" not in text, text[:3000]
  assert "warning: the checkpoint at step 8 is unreadable" in text
  assert "checkpoints.corrupt/8" in text and "resuming from the checkpoint at step 4" in text
  assert os.path.isdir(workdir / "checkpoints.corrupt" / "8")
  assert snapshot(workdir / "checkpoints" / "4") == step4  # the good one is untouched


def test_when_no_checkpoint_is_readable_nothing_moves_until_the_user_says(runs, files, trained,
                                                                          tmp_path):
  workdir = copy_run(trained, tmp_path)
  for step in ("4", "8"):
    truncate(largest_file(workdir / "checkpoints" / step))
  before = snapshot(workdir)
  args = ["train", f"--workdir={workdir}", *tiny(files)]
  line = error_line(*run(runs, args, tmp_path / "log1"))
  assert "all 2 checkpoints" in line and "--discard_unreadable_checkpoints" in line
  assert snapshot(workdir) == before
  old_log = (workdir / "metrics.jsonl").read_text()

  code, text = run(runs, [*args, "--discard_unreadable_checkpoints"], tmp_path / "log2")
  assert code == 0 and "Traceback" not in text, text[:3000]
  assert sorted(os.listdir(workdir / "checkpoints.corrupt")) == ["4", "8"]
  assert (workdir / "metrics.attempt1.jsonl").read_text() == old_log  # kept beside
  new_log = (workdir / "metrics.jsonl").read_text()
  assert new_log.count('"final": true') == 1 and new_log.startswith('{"step": 2,')
  assert sorted(os.listdir(workdir / "checkpoints")) == ["4", "8"]


# -- two processes, one work directory ---------------------------------------------------------

@pytest.fixture
def second_server(tmp_path):
  server = ForkedRuns(tmp_path / "second")
  yield server
  server.close()


def test_a_second_process_is_refused_and_a_killed_holder_leaves_no_lock(runs, second_server,
                                                                        files, tmp_path):
  workdir = tmp_path / "run"
  args = ["train", f"--workdir={workdir}", *tiny(files, steps=10 ** 6),
          "--config.train.eval_every_steps=10000", "--config.checkpoint.every_steps=20"]
  holder_log = tmp_path / "holder"
  holder = second_server.start(args, holder_log)
  try:
    assert wait_for(holder_log, "\nstep "), open(holder_log).read()[-3000:]
    for command in (args, ["eval", *args[1:]]):
      started = time.monotonic()
      line = error_line(*run(runs, command, tmp_path / "refused"))
      assert f"is in use by process {holder} on" in line and "--workdir" in line, line
      assert time.monotonic() - started < 30
  finally:
    os.kill(holder, signal.SIGKILL)
    assert second_server.wait()["signal"] == signal.SIGKILL
  saved = max([int(d) for d in os.listdir(workdir / "checkpoints") if d.isdigit()], default=0)
  # the kernel dropped the killed process's lock: the same run goes on, to a nearer end
  code, text = run(runs, [*args, f"--config.train.steps={saved + 10}"], tmp_path / "after")
  assert code == 0, text[-3000:]
  assert not saved or f"resuming from the checkpoint at step {saved}" in text


# -- storage that stops taking writes ----------------------------------------------------------

def mount(*args):
  subprocess.run(["mount", *map(str, args)], check=True)


def umount(path):
  subprocess.run(["umount", "-l", str(path)], check=False)


def stops_in_seconds(runs, args, log, when, action, timeout=60.0):
  """Starts `args`, runs `action` once `when()` holds, and returns (exit status, output,
  seconds from the action to the exit)."""
  done = {}

  def watch():
    end = time.monotonic() + timeout
    while time.monotonic() < end and not when():
      time.sleep(0.01)
    action()
    done["at"] = time.monotonic()
  runs.start(args, log)
  watcher = threading.Thread(target=watch)
  watcher.start()
  end = runs.wait()
  watcher.join()
  with open(log) as f:
    return end["code"], f.read(), time.monotonic() - done["at"]


@ROOT_ONLY
def test_read_only_checkpoints_between_two_saves_stop_the_run_in_seconds(runs, files, tmp_path):
  workdir, backing = tmp_path / "run", tmp_path / "backing"
  os.makedirs(workdir / "checkpoints")
  os.makedirs(backing)
  mount("--bind", backing, workdir / "checkpoints")
  try:
    args = ["train", f"--workdir={workdir}", *tiny(files, steps=3000),
            "--config.checkpoint.every_steps=40", "--config.train.eval_every_steps=3000"]
    code, text, seconds = stops_in_seconds(
        runs, args, tmp_path / "log", lambda: os.path.isdir(workdir / "checkpoints" / "40"),
        lambda: mount("-o", "remount,bind,ro", workdir / "checkpoints"))
    line = error_line(code, text)
    assert "stopped accepting writes" in line and "Read-only file system" in line, line
    assert "checkpoints already written (steps [40" in line, line
    assert seconds < 20, seconds
    mount("-o", "remount,bind,rw", workdir / "checkpoints")
    code, text = run(runs, [*args, "--config.train.steps=120"], tmp_path / "log2")
    assert code == 0 and "resuming from the checkpoint at step 40" in text, text[-3000:]
  finally:
    umount(workdir / "checkpoints")


@ROOT_ONLY
def test_a_full_disk_stops_the_run_with_one_line_and_keeps_the_checkpoints(runs, files, tmp_path):
  disk = tmp_path / "disk"
  os.makedirs(disk)
  mount("-t", "tmpfs", "-o", "size=6m", "tmpfs", disk)  # one checkpoint of the CNN fits
  try:
    workdir = disk / "run"
    args = ["train", f"--workdir={workdir}", *tiny(files, steps=60),
            "--config.checkpoint.every_steps=20", "--config.train.eval_every_steps=60"]
    code, text = run(runs, args, tmp_path / "log")
    line = error_line(code, text)
    assert "is full" in line and "free space" in line and "steps [20]" in line, line
    kept = snapshot(workdir / "checkpoints" / "20")
    mount("-o", "remount,size=64m", disk)
    code, text = run(runs, args, tmp_path / "log2")
    assert code == 0 and "resuming from the checkpoint at step 20" in text, text[-3000:]
    assert "Traceback" not in text
    assert kept  # it was complete, and the resumed run started from it
  finally:
    umount(disk)


@ROOT_ONLY
def test_a_read_only_work_directory_is_refused_before_anything_runs(runs, files, trained,
                                                                    tmp_path):
  workdir = copy_run(trained, tmp_path)
  before = snapshot(workdir)
  mount("--bind", workdir, workdir)
  mount("-o", "remount,bind,ro", workdir)
  try:
    line = error_line(*run(runs, ["train", f"--workdir={workdir}", *tiny(files, steps=12)],
                           tmp_path / "log"))
    assert "not writable" in line and "--workdir" in line, line
  finally:
    umount(workdir)
  assert snapshot(workdir) == before
