"""cnn_jax's single entry point.

  python run.py train   --config=configs/<family>.py:<variant> --workdir=DIR [--config.a.b=v ...]
  python run.py eval    --config=... --workdir=DIR [--checkpoint=latest|best|STEP]
  python run.py summary --config=configs/vgg.py:D [--json]
  python run.py study   --study=experiments/<file>.py:small [--processes=N | --slurm | --plan]
  python run.py bench   --config=configs/alexnet.py:torchvision [--input=jpeg] [--json]

The mesh and layout come from the config (--config.mesh.layout=fsdp, --config.mesh.model=2,
...); a run over several hosts also takes --distributed or --coordinator_address,
--num_processes and --process_id (see README, "Launching on GPUs and TPU pods").

With no arguments, trains the main job: the small CNN on Fashion-MNIST, offline, into
workdirs/simple_cnn_fashion_mnist. Running the same train command again resumes it.
A mistake in the command line or the config is reported in one line, with exit status 2.
"""

from __future__ import annotations

import json
import os
import sys
from typing import NoReturn

from absl import app, flags

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CONFIG = os.path.join(HERE, "configs", "simple_cnn.py")
COMMANDS = ("train", "eval", "summary", "study", "bench")
FLAGS = flags.FLAGS


def define_flags() -> None:
  from ml_collections import config_flags
  config_flags.DEFINE_config_file(
      "config", DEFAULT_CONFIG,
      "Config file, optionally with a variant: configs/vgg.py:D", lock_config=True)
  flags.DEFINE_bool("json", False, "summary, bench: print one JSON object instead of the table.")
  flags.DEFINE_float("seconds", 5.0, "bench: seconds to time each measurement.")
  flags.DEFINE_enum("input", "data", ["data", "jpeg", "none"], "bench: the input pipeline "
                    "to time: the config's dataset, generated JPEGs through the config's "
                    "ImageNet-style preprocessing, or none.")
  flags.DEFINE_list("peer_lowering", [], "bench: also time the train step with these "
                    "model.lowering values (xla, cpu) and print the ratios.")
  flags.DEFINE_string("workdir", None, "train, eval: the run's directory (checkpoints, metrics, "
                      "plots); default workdirs/<model>_<dataset>.")
  flags.DEFINE_string("checkpoint", "latest", "eval: latest, best, or a step number.")
  flags.DEFINE_string("study", None, "study: experiments/<file>.py[:small|paper].")
  flags.DEFINE_integer("processes", 1, "study: runs trained at once on this machine.")
  flags.DEFINE_bool("slurm", False, "study: write a SLURM job-array script instead of running.")
  flags.DEFINE_string("slurm_options", "", "study: extra #SBATCH options, e.g. "
                      "'--partition=gpu --gpus-per-task=1 --time=48:00:00'.")
  flags.DEFINE_bool("collect_only", False, "study: only gather the finished runs' results.")
  flags.DEFINE_bool("plan", False, "study: print every run's training FLOPs and predicted "
                    "time, and the total, and run nothing.")
  flags.DEFINE_string("images_per_sec", None, "study --plan: training images/s of the devices "
                      "(a number, or a JSON file of {variant: images/s} from run.py bench).")
  flags.DEFINE_bool("allow_config_change", False, "train: continue a work directory whose "
                    "recorded run has a different config.")
  flags.DEFINE_bool("discard_unreadable_checkpoints", False, "train: when every checkpoint in "
                    "the work directory is unreadable, move them all to checkpoints.corrupt/ "
                    "and train from step 0 (without it the run stops and moves nothing).")
  # A run over several processes (hosts): SLURM and Open MPI launches are detected by
  # themselves; --distributed lets JAX detect a Cloud TPU pod or Kubernetes; or give all three.
  flags.DEFINE_bool("distributed", False, "train, eval: start jax.distributed and detect the "
                    "cluster (Cloud TPU pod, SLURM, Open MPI, Kubernetes).")
  flags.DEFINE_string("coordinator_address", None, "train, eval: host:port of process 0, for "
                      "a multi-process run started by hand.")
  flags.DEFINE_integer("num_processes", None, "train, eval: processes in the run.")
  flags.DEFINE_integer("process_id", None, "train, eval: this process's index, 0 to "
                       "num_processes - 1.")


def fail(message: str) -> NoReturn:
  """Prints `message` as the one line `error: ...` and exits with status 2 at once: what was
  written is on disk, and a background thread that a failed checkpoint write left waiting
  (Orbax's, up to its timeout of minutes) must not hold the exit."""
  print(f"error: {message}", file=sys.stderr, flush=True)
  sys.stdout.flush()
  os._exit(2)


def command_line_error(e: BaseException, argv: list[str]) -> str:
  """One line for a mistake in the flags, the overrides or a config file: parsing them runs
  nothing of ours but the config file itself, so any failure there is the user's to fix."""
  lines = [ln for ln in (str(e.args[0]) if e.args else str(e)).strip().splitlines() if ln]
  first = lines[0] if lines else type(e).__name__
  if "Error whilst parsing config file" in first and len(lines) > 1:  # the config's own error,
    return f"{first.split(': Error whilst')[0]}: {lines[-1].strip()}"  # last in the traceback
  if isinstance(e, SyntaxError):
    return f"{e.filename} line {e.lineno}: {e.msg}; fix the config file"
  if isinstance(e, (AttributeError, KeyError)) and not _config_frame(e, argv):
    key = first.strip("\"'")
    bad = [a.split("=")[0] for a in argv if a.startswith("--config.") and key in a]
    hint = f" ({lines[1].strip().rstrip('?').lower()}?)" if len(lines) > 1 else ""
    return (f"{bad[0] if bad else key}: no such config key {key!r}{hint}; "
            "see the config file for the keys it has")
  if isinstance(e, OSError) and not _config_frame(e, argv):
    given = [a for a in argv if a.startswith("--config=")]
    return f"{given[-1] if given else '--config'}: cannot load the config file; check the path"
  where = _config_frame(e, argv)
  if where:  # raised by the config file's own code
    return f"{where}: {type(e).__name__}: {first}; fix the config file"
  return first


def _config_frame(e: BaseException, argv: list[str]) -> str:
  """'FILE line N' of the innermost frame of `e` in the config file given, if any."""
  import traceback
  given = [a[len("--config="):] for a in argv if a.startswith("--config=")]
  path = given[-1].partition(":")[0] if given else DEFAULT_CONFIG
  frames = [f for f in traceback.extract_tb(e.__traceback__)
            if os.path.abspath(f.filename) == os.path.abspath(path)]
  return f"{frames[-1].filename} line {frames[-1].lineno}" if frames else ""


def parse_flags(argv: list[str]) -> list[str]:
  from cnn_jax.errors import UserError
  try:
    rest = FLAGS(argv)
    FLAGS.config.get("model")  # loading errors surface here, not at first use
    return rest
  except UserError as e:
    fail(str(e).strip().splitlines()[0])
  except Exception as e:  # noqa: BLE001 - parsing flags and loading a config file only
    fail(command_line_error(e, argv))


def summary(cfg) -> None:
  from cnn_jax import inspect, models
  table = inspect.summarize(models.abstract(cfg.model))
  print(json.dumps(table.to_json()) if FLAGS.json else inspect.format_table(table))


def bench(cfg) -> None:
  from cnn_jax import bench as benchmark
  result = benchmark.run(cfg, FLAGS.seconds, FLAGS.input, tuple(FLAGS.peer_lowering))
  print(json.dumps(result) if FLAGS.json else benchmark.format_result(result), flush=True)


def workdir(cfg) -> str:
  if FLAGS.workdir:
    return FLAGS.workdir
  path = os.path.join("workdirs", f"{cfg.model.name}_{cfg.data.name}")
  print(f"work directory: {path}", flush=True)
  return path


def train(cfg) -> None:
  from cnn_jax import train as trainer
  trainer.train(cfg, workdir(cfg), allow_config_change=FLAGS.allow_config_change,
                discard_unreadable=FLAGS.discard_unreadable_checkpoints)


def evaluate(cfg) -> None:
  from cnn_jax import evaluation  # the plain evaluation, or eval.protocol's (protocols.py)
  result = evaluation.evaluate(cfg, workdir(cfg), FLAGS.checkpoint)
  print(json.dumps(result))


def quiet_orbax() -> None:
  """Orbax logs each failure of a background write or read, with its traceback, from every
  thread and coroutine involved, and leaves the coroutines of a failed restore to be
  collected with their exception; the run reports such a failure itself, in one line (a
  warning where it falls back, an error where it stops), so these are dropped, unless
  --verbosity is given."""
  import logging as pylogging

  from absl import logging
  logging.get_absl_logger().addFilter(
      lambda record: "/orbax/" not in record.pathname or record.levelno >= pylogging.CRITICAL)
  default = sys.unraisablehook

  def hook(unraisable):
    if not (_orbax_coroutine(unraisable.object) or _closed_loop(unraisable)):
      default(unraisable)
  sys.unraisablehook = hook


def _orbax_coroutine(obj) -> bool:
  code = getattr(obj, "cr_code", None)
  return code is not None and "/orbax/" in code.co_filename


def _closed_loop(unraisable) -> bool:
  """TensorStore's done-callbacks of a failed read, run after Orbax closed its event loop."""
  import traceback
  frames = traceback.extract_tb(unraisable.exc_traceback) if unraisable.exc_traceback else []
  return (unraisable.exc_type is RuntimeError and str(unraisable.exc_value) ==
          "Event loop is closed" and bool(frames) and frames[-1].name == "_check_closed")


def main(argv) -> None:
  from absl import logging
  from cnn_jax import config, preemption
  from cnn_jax.errors import UserError
  if not FLAGS["verbosity"].present:  # not given on the command line
    logging.set_verbosity(logging.WARNING)  # libraries' INFO lines (Orbax, TFDS) off by default
    quiet_orbax()
  command = argv[1] if len(argv) > 1 else "train"
  try:
    if len(argv) > 2 or command not in COMMANDS:
      raise UserError(f"unknown command {' '.join(argv[1:])!r}; use one of {list(COMMANDS)}")
    if command == "study":
      from cnn_jax import study
      if not FLAGS.study:
        raise UserError("study needs --study=experiments/<file>.py[:small|paper]")
      if FLAGS.plan:
        from cnn_jax import studyplan
        sys.exit(studyplan.main(FLAGS.study, FLAGS.images_per_sec))  # a number or a file
      sys.exit(study.main(FLAGS.study, FLAGS.workdir, FLAGS.processes, FLAGS.slurm,
                          FLAGS.collect_only, FLAGS.slurm_options))
    cfg = config.validate(FLAGS.config)
    if command != "summary":
      from cnn_jax import parallel
      parallel.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id,
                          FLAGS.distributed)
    {"train": train, "eval": evaluate, "summary": summary, "bench": bench}[command](cfg)
  except UserError as e:
    fail(str(e).strip().splitlines()[0])
  except preemption.Interrupted as e:  # SIGTERM / SIGINT: checkpoint saved, resumable
    print(f"{e}", file=sys.stderr, flush=True)
    sys.exit(e.exit_status)
  except KeyboardInterrupt:  # Ctrl-C before training started, or a second one
    print("interrupted; run the same command to resume from the newest checkpoint",
          file=sys.stderr, flush=True)
    sys.exit(130)


def cli() -> None:
  """Parses the command line (a mistake there is one line, exit 2) and runs the command."""
  try:
    define_flags()  # parses the default config, with any overrides, right away
  except Exception as e:  # noqa: BLE001 - parsing flags and loading a config file only
    fail(command_line_error(e, sys.argv))
  app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
  sys.path.insert(0, HERE)
  from cnn_jax import startup
  startup.configure()  # first: huge pages (a restart of this process), XLA's options
  cli()
