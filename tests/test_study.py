"""Studies: every study file loads at both scales with its declared comparisons; runs are named
by their seeds and data seeds; a tiny study runs end to end, resumes, and is collected; the
SLURM array holds one command per unfinished run."""

import glob
import os

import pytest

from cnn_jax import study
from cnn_jax.comparisons import Comparison
from conftest import ROOT
from test_reliability import write_noise

# experiments/ also holds scripts that are not studies (no get_study): named here
SCRIPTS = ("param_table.py", "eval_protocols.py", "make_png_folder.py")
STUDIES = sorted(os.path.basename(p) for p in glob.glob(os.path.join(ROOT, "experiments", "*.py"))
                 if os.path.basename(p) not in SCRIPTS)


def test_the_studies_of_the_issue_are_all_there():
  assert STUDIES == ["data_scaling.py", "lrn.py", "pooling.py", "stem.py", "vgg_depth.py",
                     "width.py", "width_data.py"]


@pytest.mark.parametrize("file", STUDIES)
@pytest.mark.parametrize("scale", ["small", "paper"])
def test_study_files_define_both_scales(file, scale):
  s = study.load(f"experiments/{file}:{scale}")
  runs = s.runs()
  assert s.name.endswith(scale) and len(runs) == len(s.arms) * len(s.seeds)
  assert len({r["name"] for r in runs}) == len(runs)
  if scale == "small":
    assert len(s.seeds) >= 3
    assert all(":small" in r["config"] or "simple_cnn" in r["config"] for r in runs)
  if s.scaling:
    assert len(s.arms) >= 5
  variants = [v for v, _ in s.arms]
  for c in s.comparisons:  # every claim names two arms and cites the paper's section
    assert c.a in variants and c.b in variants and c.a != c.b
    assert "Sec." in c.source and (c.claim != "same" or c.size)
  for r in runs:  # every command parses as a run.py config
    assert all(key.split(".")[0] in ("model", "data", "optim", "train", "seed")
               for key in r["overrides"])


def test_the_papers_claims_are_declared():
  claims = {f: {(c.a, c.b, c.metric, c.claim, c.size)
                for c in study.load(f"experiments/{f}:small").comparisons} for f in STUDIES}
  assert ("alexnet/lrn", "alexnet/none", "top1_error", "lower", 1.4) in claims["lrn.py"]
  assert ("alexnet/lrn", "alexnet/none", "top5_error", "lower", 1.2) in claims["lrn.py"]
  assert ("vgg_A-LRN", "vgg_A", "top1_error", "same", 1.0) in claims["lrn.py"]
  assert ("pooling=overlapping", "pooling=non_overlapping", "top1_error", "lower",
          0.4) in claims["pooling.py"]
  assert ("pooling=overlapping", "pooling=non_overlapping", "top5_error", "lower",
          0.3) in claims["pooling.py"]
  assert ("D", "C", "top1_error", "lower", None) in claims["vgg_depth.py"]
  assert {("B", "A"), ("D", "B")} <= {c[:2] for c in claims["vgg_depth.py"]}
  assert ("stem=stacked3x3", "stem=paper", "top1_error", "lower", None) in claims["stem.py"]
  assert study.load("experiments/width_data.py:small").scaling == "joint"


def test_seeds_and_data_seeds_name_the_runs():
  s = study.Study("s", (("w=1", {"model.width": 1.0}),), seeds=(0, 1), data_seeds=(0, 5))
  runs = s.runs()
  assert [r["name"] for r in runs] == ["w=1__seed0", "w=1__seed0_data5", "w=1__seed1_data0",
                                       "w=1__seed1_data5"]
  assert [(r["seed"], r["data_seed"]) for r in runs] == [(0, 0), (0, 5), (1, 0), (1, 5)]
  assert runs[0]["overrides"] == {"model.width": 1.0, "seed": 0}  # data.seed -1: as seed
  assert runs[1]["overrides"] == {"model.width": 1.0, "seed": 0, "data.seed": 5}
  command = study.command(runs[2], "/tmp/w")
  assert "--config.seed=1" in command and "--config.data.seed=0" in command
  # The default: three seeds, each its own data seed.
  default = study.Study("d", (("a", {}),)).runs()
  assert [r["name"] for r in default] == ["a__seed0", "a__seed1", "a__seed2"]
  assert all("data.seed" not in r["overrides"] for r in default)


def test_a_comparison_must_name_two_arms():
  arms = (("a", {}), ("b", {}))
  study.Study("ok", arms, comparisons=(Comparison(a="a", b="b"),))
  with pytest.raises(ValueError, match="two of the arms"):
    study.Study("bad", arms, comparisons=(Comparison(a="a", b="c"),))
  with pytest.raises(ValueError, match="needs size"):
    Comparison(a="a", b="b", claim="same")
  with pytest.raises(ValueError, match="scaling"):
    study.Study("bad", arms, scaling="width")


def test_unknown_study_or_scale_is_named():
  from cnn_jax.errors import UserError
  with pytest.raises(UserError, match="no such study file"):
    study.load("experiments/nope.py:small")
  with pytest.raises(UserError, match="unknown scale 'huge'"):
    study.load("experiments/lrn.py:huge")


def test_slurm_array_has_one_command_per_unfinished_run(tmp_path, capsys):
  assert study.main("experiments/lrn.py:paper", str(tmp_path), 1, True, False,
                    "--partition=gpu --gpus-per-task=1") == 0
  script = (tmp_path / "slurm.sh").read_text()
  assert "#SBATCH --array=0-3" in script and "#SBATCH --partition=gpu" in script
  commands = (tmp_path / "runs.txt").read_text().splitlines()
  assert len(commands) == 4
  assert all(" train --config=configs/" in c and "--config.seed=0" in c for c in commands)
  assert "--config.model.norm=none" in commands[1]
  assert f"sbatch {tmp_path / 'slurm.sh'}" in capsys.readouterr().out


def test_a_small_study_runs_resumes_and_is_collected(tmp_path, capsys):
  write_noise(tmp_path / "images", n_per_class=16)
  (tmp_path / "tiny.py").write_text(f'''
from cnn_jax.study import Study, grid

def get_study(scale="small"):
  return Study("tiny", grid(**{{"model.width": (0.25, 0.5)}}), seeds=(0,),
               base={{"data.name": "folder", "data.folder": "{tmp_path / 'images'}",
                     "model.num_classes": 2, "data.validation_fraction": 0.25,
                     "train.batch_size": 8, "train.steps": 3, "train.eval_every_steps": 3,
                     "mesh.data": 1}})
''')
  spec = f"{tmp_path / 'tiny.py'}:small"
  results = tmp_path / "results"
  assert study.main(spec, str(tmp_path / "runs"), 2, False, False, results=str(results)) == 0
  out = capsys.readouterr().out
  assert "2 runs: 0 finished already, 2 to run, 2 at a time" in out
  table = (results / "tiny" / "table.md").read_text()
  assert "width=0.25" in table and "width=0.5" in table
  assert table.index("width=0.25") < table.index("width=0.5")
  for name in ("table.csv", "error_vs_params.png", "curves.png", "command.txt"):
    assert (results / "tiny" / name).stat().st_size > 0
  assert study.main(spec, str(tmp_path / "runs"), 2, False, False, results=str(results)) == 0
  assert "2 runs: 2 finished already, 0 to run" in capsys.readouterr().out


TUNED_STUDIES = ("lrn.py", "pooling.py", "stem.py")  # vgg_depth: one recipe, as the paper


@pytest.mark.parametrize("file", TUNED_STUDIES)
def test_small_architecture_studies_tune_lr_per_arm(file):
  s = study.load(f"experiments/{file}:small")
  assert len(s.seeds) >= 3 and list(s.tune) == ["optim.lr"] and len(s.tune["optim.lr"]) == 3
  tuning_runs = s.tuning_runs()
  assert len(tuning_runs) == 3 * len(s.arms)
  assert len(s.all_runs()) == len(tuning_runs) + len(s.arms) * len(s.seeds)
  assert all(r["name"].startswith("tune/") and r["seed"] == s.tune_seed for r in tuning_runs)
  assert {r["overrides"]["optim.lr"] for r in tuning_runs} == set(s.tune["optim.lr"])
  # The tuned value becomes an override of the seeds' runs.
  chosen = {v: {"optim.lr": s.tune["optim.lr"][1]} for v, _ in s.arms}
  assert all(r["overrides"]["optim.lr"] == s.tune["optim.lr"][1] for r in s.runs(chosen))
  assert study.load(f"experiments/{file}:paper").tune is None  # the paper's own recipe


def test_vgg_b_to_e_start_from_the_a_of_their_seed(tmp_path):
  s = study.load("experiments/vgg_depth.py:small")
  runs = {r["name"]: study.formatted(r, str(tmp_path)) for r in s.all_runs()}
  assert "model.init_from" not in runs["A__seed1"]["overrides"]
  for v in "BCDE":
    assert runs[f"{v}__seed2"]["overrides"]["model.init_from"] == str(tmp_path / "A__seed2")
  # one recipe for every depth, as the paper; the layers not copied He-initialised
  assert s.tune is None and s.base["model.init"] == "he"
