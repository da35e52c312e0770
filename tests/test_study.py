"""Studies: every study file loads at both scales; a tiny study runs end to end, resumes, and
is collected; the SLURM array holds one command per unfinished run."""

import glob
import os

import pytest

from cnn_jax import study
from conftest import ROOT
from test_reliability import write_noise

STUDIES = sorted(os.path.basename(p) for p in glob.glob(os.path.join(ROOT, "experiments", "*.py"))
                 if not p.endswith("param_table.py"))


def test_the_studies_of_the_issue_are_all_there():
  assert STUDIES == ["data_scaling.py", "lrn.py", "pooling.py", "stem.py", "vgg_depth.py",
                     "width.py"]


@pytest.mark.parametrize("file", STUDIES)
@pytest.mark.parametrize("scale", ["small", "paper"])
def test_study_files_define_both_scales(file, scale):
  s = study.load(f"experiments/{file}:{scale}")
  runs = s.runs()
  assert s.name.endswith(scale) and len(runs) == len(s.arms) * len(s.seeds)
  assert len({r["name"] for r in runs}) == len(runs)
  if scale == "small":
    assert len(s.seeds) >= 2
    assert all(":small" in r["config"] or "simple_cnn" in r["config"] for r in runs)
  if s.scaling:
    assert len(s.arms) >= 5
  for r in runs:  # every command parses as a run.py config
    assert all(key.split(".")[0] in ("model", "data", "optim", "train", "seed")
               for key in r["overrides"])


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
