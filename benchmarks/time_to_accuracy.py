"""Time to accuracy of the main job: seconds of training to 91% and 92% Fashion-MNIST test
top-1 for the default recipe (`configs/simple_cnn.py`, the fast recipe), the earlier default
(`configs/simple_cnn.py:long`) and Keras 3 with the same network and the default recipe
(`keras`; `keras_long`, the earlier one, on request), in one invocation, the recipes
alternating, the median of `--rounds`.

  .venv/bin/python benchmarks/time_to_accuracy.py [--rounds=3] [--recipes=long,default,...]
      [--targets=0.91,0.92] [--json_out=PATH]
  .venv/bin/python benchmarks/time_to_accuracy.py --smoke    # seconds: tiny runs, low targets

What is measured. Each run is its own process; round r trains every recipe with seed r (the
initial weights and the data order), so the medians are over seeds as well as over the
machine's drift, and the final test top-1 is given with its range over the rounds. The test
split is evaluated every half epoch for this measurement only (the recipes were chosen on the
validation split; nothing here selects anything). "Training seconds" are the run's time from
its first step, its compilation included, with the evaluations left out (cnn_jax: `train_s`
of its evaluation records, `TrainClock.training_seconds`; Keras: `model.fit`'s time less its
`evaluate` calls); "from launch" is the wall time from starting the process, start-up
included. Both frameworks train on the same 54,000 images: cnn_jax's held-in training split,
and for Keras the original files' images less a hold-out of the same fraction
(data.validation_fraction) drawn by `splits.holdout` over the files' order (the same count;
TFDS orders the examples differently, so not the same images). Keras's model is
benchmarks/peer_cases.py's (parameter count checked by peers.py), He-normal initialised as
cnn_jax's; Adam with the recipe's learning rate, warm-up and cosine decay, label smoothing and
horizontal flips where the recipe has them. What Keras lacks is named in its row
(`keras_unsupported`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

START = time.monotonic()
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

# name: (framework, config); a Keras recipe follows the cnn_jax config named.
RECIPES = {"default": ("cnn_jax", "configs/simple_cnn.py"),
           "long": ("cnn_jax", "configs/simple_cnn.py:long"),
           "keras": ("keras", "configs/simple_cnn.py"),
           "keras_long": ("keras", "configs/simple_cnn.py:long")}
EVALS_PER_EPOCH = 2
SMOKE = {"train.epochs": 0.1, "train.log_every_steps": 5}


def load(spec: str, overrides: dict | None = None):
  """The validated run config of 'configs/file.py[:variant]' with `overrides` ({key: value})."""
  from cnn_jax import config, studyplan
  return config.validate(studyplan.load_config(spec, overrides or {}))


def first_at(history: list[dict], target: float) -> dict | None:
  """The first point of `history` ({test_top1, train_s, wall_s, epoch}) at `target`, if any."""
  return next((h for h in history if h["test_top1"] >= target), None)


def summarise(rounds: list[dict], targets) -> dict:
  """Per target, the median over the rounds of the training and launch seconds to reach it
  (None where a round never did: the median is then over the rounds that did, and `reached`
  says how many), and the median and range of the final test top-1."""
  finals = [r["history"][-1]["test_top1"] for r in rounds]
  out = {"rounds": len(rounds), "final_test_top1": statistics.median(finals),
         "final_test_top1_range": [min(finals), max(finals)]}
  for t in targets:
    hits = [h for h in (first_at(r["history"], t) for r in rounds) if h]
    out[f"{t}"] = {"reached": len(hits),
                   "train_s": statistics.median(h["train_s"] for h in hits) if hits else None,
                   "wall_s": statistics.median(h["wall_s"] for h in hits) if hits else None,
                   "epoch": statistics.median(h["epoch"] for h in hits) if hits else None}
  return out


# -- cnn_jax: run.py train in a fresh work directory ------------------------------------------
def overrides(smoke: bool, seed: int) -> dict:
  """What both frameworks change in a recipe's config: the round's seed, and the smoke size."""
  return {"seed": seed, **(SMOKE if smoke else {})}


def cnn_jax_overrides(smoke: bool, seed: int) -> dict:
  return {"data.eval_split": "test", "train.eval_every_epochs": 1 / EVALS_PER_EPOCH,
          **overrides(smoke, seed)}


def run_cnn_jax(spec: str, smoke: bool, seed: int, timeout: float) -> dict:
  """`run.py train --config=spec`, evaluating the test split every half epoch; its history
  from metrics.jsonl."""
  flags = [f"--config.{k}={v}" for k, v in cnn_jax_overrides(smoke, seed).items()]
  with tempfile.TemporaryDirectory(prefix="tta_") as workdir:
    launch = time.time()
    with open(os.path.join(workdir, "stderr.txt"), "w") as err:
      proc = subprocess.run([sys.executable, os.path.join(REPO, "run.py"), "train",
                             f"--config={os.path.join(REPO, spec)}",
                             f"--workdir={workdir}/run", *flags],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=err, timeout=timeout)
    if proc.returncode:
      with open(os.path.join(workdir, "stderr.txt")) as f:
        raise RuntimeError(f"run.py train {spec} failed ({proc.returncode}): {f.read()[-800:]}")
    with open(os.path.join(workdir, "run", "metrics.jsonl")) as f:
      records = [json.loads(line) for line in f if line.strip()]
  history = [{"epoch": r["epoch"], "test_top1": r["eval_top1"], "train_s": r["train_s"],
              "wall_s": r["time"] - launch} for r in records
             if "eval_top1" in r and "train_s" in r and not r.get("final")]
  return {"history": history}


# -- Keras: the same network and recipe with model.fit ----------------------------------------
def keras_unsupported(cfg) -> list[str]:
  """The recipe's settings the Keras worker does not reproduce."""
  p, o = cfg.data.preprocess, cfg.optim
  out = [f"data.preprocess.{k}" for k in ("pad", "random_crop", "scale_jitter", "pca_lighting")
         if p.get(k)]
  out += [f"optim.{k}" for k in ("weight_decay", "clip_norm", "lr_multipliers") if o.get(k)]
  if o.name != "adam" or o.schedule != "cosine":
    out.append(f"optim {o.name}/{o.schedule} (Adam/cosine only)")
  return out


def keras_worker(spec: str, smoke: bool, seed: int = 0) -> dict:
  """Trains peers.py's small CNN with Keras on the held-in images, as `spec`'s recipe says;
  the history of test top-1 every half epoch against training seconds."""
  os.environ.setdefault("KERAS_BACKEND", "tensorflow")
  import keras
  import numpy as np
  import tensorflow as tf
  from benchmarks import peer_cases, peer_keras
  from cnn_jax.data import VENDORED_FASHION_MNIST, idx, splits
  cfg = load(spec, overrides(smoke, seed))
  t, o, p = cfg.train, cfg.optim, cfg.data.preprocess
  (x, y), (xt, yt) = (idx.load(VENDORED_FASHION_MNIST, s) for s in ("train", "test"))
  keep = np.setdiff1d(np.arange(len(x)), splits.holdout(len(x), cfg.data.validation_fraction,
                                                        cfg.data.split_seed))
  x, y = x[keep].astype(np.float32) / 255.0, y[keep]
  mean, std = x.mean(axis=(0, 1, 2)), x.std(axis=(0, 1, 2))
  x, xt = (x - mean) / std, (xt.astype(np.float32) / 255.0 - mean) / std
  if smoke:
    xt, yt = xt[:500], yt[:500]
  keras.utils.set_random_seed(cfg.seed)
  steps = len(x) // t.batch_size
  total = int(round(t.epochs * steps))
  per_eval = max(1, min(steps // EVALS_PER_EPOCH, total // 2))  # at least two evaluations
  ds = tf.data.Dataset.from_tensor_slices((x, tf.one_hot(y, 10)))
  ds = ds.shuffle(len(x), seed=cfg.seed, reshuffle_each_iteration=True).repeat()
  ds = ds.batch(t.batch_size, drop_remainder=True)
  if p.flip:
    ds = ds.map(lambda a, b: (tf.image.random_flip_left_right(a), b))
  ds = ds.prefetch(tf.data.AUTOTUNE)
  warmup = int(round(o.warmup_epochs * steps))
  lr = keras.optimizers.schedules.CosineDecay(
      0.0 if warmup else o.lr, decay_steps=max(total - warmup, 1),
      warmup_target=o.lr if warmup else None, warmup_steps=warmup)
  model = peer_keras.keras_model(peer_cases.CASES["simple_cnn"], init="he_normal")
  model.compile(keras.optimizers.Adam(lr, beta_1=o.b1, beta_2=o.b2, epsilon=o.eps),
                keras.losses.CategoricalCrossentropy(from_logits=True,
                                                     label_smoothing=o.label_smoothing),
                metrics=["accuracy"], jit_compile=False)
  history, clock = [], {"eval": 0.0}

  class Record(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
      clock["begin"] = time.monotonic()

    def on_test_begin(self, logs=None):
      clock["test"] = time.monotonic()

    def on_test_end(self, logs=None):
      clock["eval"] += time.monotonic() - clock["test"]

    def on_epoch_end(self, epoch, logs=None):
      now = time.monotonic()
      history.append({"epoch": (epoch + 1) * per_eval / steps, "test_top1": logs["val_accuracy"],
                      "train_s": now - clock["begin"] - clock["eval"], "wall_s": now - START})

  model.fit(ds, epochs=max(1, round(total / per_eval)), steps_per_epoch=per_eval,
            validation_data=(xt, tf.one_hot(yt, 10)), validation_batch_size=1000,
            callbacks=[Record()], verbose=0)
  return {"history": history, "keras_unsupported": keras_unsupported(cfg),
          "version": f"keras {keras.__version__}, tensorflow {tf.__version__}"}


def run_keras(spec: str, smoke: bool, seed: int, timeout: float) -> dict:
  cmd = [sys.executable, os.path.abspath(__file__), "--keras_worker", spec, f"--seed={seed}"]
  out = subprocess.run(cmd + (["--smoke"] if smoke else []), cwd=REPO, capture_output=True,
                       text=True, timeout=timeout)
  if out.returncode:
    raise RuntimeError(f"the Keras worker for {spec} failed: {out.stderr[-800:]}")
  return json.loads(out.stdout.strip().splitlines()[-1])


# -- the table --------------------------------------------------------------------------------
def cell(seconds) -> str:
  return f"{seconds:.1f}" if seconds is not None else "not reached"


def table(results: dict, targets) -> str:
  head = " | ".join(f"train s to {100 * t:g}% | from launch to {100 * t:g}%" for t in targets)
  lines = [f"| recipe | rounds | {head} | final test top-1 |",
           "|---|---:|" + "---:|" * (2 * len(targets)) + "---:|"]
  for name, s in results.items():
    parts = []
    for t in targets:
      x = s[f"{t}"]
      note = f" ({x['reached']}/{s['rounds']})" if 0 < x["reached"] < s["rounds"] else ""
      parts += [cell(x["train_s"]) + note, cell(x["wall_s"])]
    low, high = s["final_test_top1_range"]
    spread = f" ({100 * low:.2f} to {100 * high:.2f})" if s["rounds"] > 1 else ""
    lines.append(f"| {name} | {s['rounds']} | " + " | ".join(parts)
                 + f" | {100 * s['final_test_top1']:.2f}%{spread} |")
  return "\n".join(lines)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--rounds", type=int, default=3)
  parser.add_argument("--recipes", default="long,default,keras",
                      help=f"comma-separated, of {', '.join(RECIPES)}")
  parser.add_argument("--targets", default="0.91,0.92")
  parser.add_argument("--smoke", action="store_true", help="tiny runs (0.1 epoch), targets 0.1")
  parser.add_argument("--json_out")
  parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per run")
  parser.add_argument("--keras_worker", help=argparse.SUPPRESS)
  parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.keras_worker:
    print(json.dumps(keras_worker(args.keras_worker, args.smoke, args.seed)))
    return 0
  targets = (0.1,) if args.smoke else tuple(float(t) for t in args.targets.split(","))
  names = args.recipes.split(",")
  unknown = [n for n in names if n not in RECIPES]
  if unknown:
    print(f"--recipes: unknown {unknown[0]!r}; choose from {', '.join(RECIPES)}", file=sys.stderr)
    return 2
  runs = {n: [] for n in names}
  for r in range(args.rounds):
    for name in names:
      framework, spec = RECIPES[name]
      result = (run_cnn_jax if framework == "cnn_jax" else run_keras)(spec, args.smoke, r,
                                                                       args.timeout)
      runs[name].append(result)
      hits = ", ".join(f"{100 * t:g}% at {cell((first_at(result['history'], t) or {}).get('train_s'))} s"
                       for t in targets)
      print(f"round {r + 1} {name}: {hits}; final {100 * result['history'][-1]['test_top1']:.2f}%",
            flush=True)
  results = {n: summarise(runs[n], targets) for n in names}
  for n in names:
    missing = runs[n][0].get("keras_unsupported")
    if missing:
      results[n]["keras_unsupported"] = missing
  print(table(results, targets))
  for n in names:
    if results[n].get("keras_unsupported"):
      print(f"{n}: not reproduced in Keras: {', '.join(results[n]['keras_unsupported'])}")
  if args.json_out:
    with open(args.json_out, "w") as f:
      json.dump({"summary": results, "runs": runs, "smoke": args.smoke,
                 "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}, f, indent=2)
  return 0


if __name__ == "__main__":
  sys.exit(main())
