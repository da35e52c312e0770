"""A stand-in for `run.py train` in the study-runner tests: parses --workdir and --config.k=v,
and writes a metrics.jsonl whose validation top-1 peaks at the lr `model.peak` names (its test
top-1 peaks elsewhere, at `model.test_peak`, so a selection that looked at test would show).

It appends 'start NAME t' and 'end NAME t' to $FAKE_LOG, records its XLA_FLAGS and overrides in
the work directory (seen.json), fails (exit 1) where the work directory's name is in
$FAKE_FAIL, and where model.init_from is set fails unless that run has finished. With
`--group JSON` (a list of such argument lists) it stands in for `python -m cnn_jax.stacked`:
it appends 'group NAME,NAME,... t' and trains each in turn, stopping at the first that fails.
"""

import json
import math
import os
import sys
import time


def main(argv):
  workdir = next(a.split("=", 1)[1] for a in argv if a.startswith("--workdir="))
  cfg = dict(a[len("--config."):].split("=", 1) for a in argv if a.startswith("--config."))
  name = os.path.relpath(workdir, os.path.dirname(workdir))
  if os.path.basename(os.path.dirname(workdir)) == "tune":
    name = "tune/" + name
  log = os.environ.get("FAKE_LOG")
  if log:
    with open(log, "a") as f:
      f.write(f"start {name} {time.time()}\n")
  with open(os.path.join(workdir, "seen.json"), "w") as f:
    json.dump({"xla_flags": os.environ.get("XLA_FLAGS", ""), "config": cfg}, f)
  time.sleep(0.2)
  if name in os.environ.get("FAKE_FAIL", "").split(","):
    print("error: told to fail")
    return 1
  source = cfg.get("model.init_from")
  if source and not os.path.exists(os.path.join(source, "metrics.jsonl")):
    print(f"error: model.init_from={source} has not finished")
    return 2
  lr, seed = float(cfg.get("optim.lr", 0.02)), int(cfg.get("seed", 0))
  peak, test_peak = float(cfg.get("model.peak", 0.02)), float(cfg.get("model.test_peak", 0.007))
  val = 0.9 - 0.05 * abs(math.log(lr / peak)) - 0.001 * seed
  test = 0.85 - 0.05 * abs(math.log(lr / test_peak)) - 0.002 * seed
  with open(os.path.join(workdir, "config.json"), "w") as f:
    json.dump({"data": {"threads": int(cfg.get("data.threads", 0))}}, f)
  records = [{"step": 50, "epoch": 1.0, "eval_top1": val}, {"step": 100, "epoch": 2.0,
                                                            "eval_top1": val},
             {"final": True, "step": 100, "epoch": 2.0, "eval_top1": val, "eval_top5": 0.99,
              "eval_loss": 1 - val, "best_eval_top1": val, "best_step": 100, "test_top1": test,
              "test_top5": 0.98, "test_loss": 1 - test, "test_split": "test", "test_step": 100,
              "params": 1000, "macs": 3000, "train_examples": 100, "wall_time_s": 1.0}]
  with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in records)
  if log:
    with open(log, "a") as f:
      f.write(f"end {name} {time.time()}\n")
  return 0


def group(members):
  log = os.environ.get("FAKE_LOG")
  names = [os.path.basename(next(a.split("=", 1)[1] for a in m if a.startswith("--workdir=")))
           for m in members]
  if log:
    with open(log, "a") as f:
      f.write(f"group {','.join(names)} {time.time()}\n")
  for argv in members:
    code = main(argv)
    if code:
      return code
  return 0


if __name__ == "__main__":
  if sys.argv[1:2] == ["--group"]:
    sys.exit(group(json.loads(sys.argv[2])))
  sys.exit(main(sys.argv[1:]))
