"""The papers' test protocols on small networks: VGG's Tables 3 to 6 and AlexNet's ten crops.

Trains (or reuses, in --workdir) three small Fashion-MNIST runs and tests each checkpoint with
`run.py eval`'s protocols (cnn_jax/evaluation.py), then writes
experiments/results/eval_protocols_small/table.md:

  vgg_s32      VGG A at 1/4 width, 32x32 input, trained at a single scale S = 32 (the 28x28
               images resized so their shorter side is 32), random 32x32 crops (none: the
               image is the crop) and flips;
  vgg_jitter   the same, trained with scale jittering S in [32, 64] and random 32x32 crops, as
               VGG Sec. 3.1 trained its multi-scale models: "by fine-tuning all layers of a
               single-scale model with the same configuration" (here vgg_s32's checkpoint,
               every layer copied); at Q in {32, 48, 64} the crops are parts of the image, as
               at VGG's 224 crops of Q in {256, 384, 512};
  alexnet      AlexNet at 1/8 width, 67x67 input, images resized to 76 (AlexNet's 256 for 227
               crops), random 67x67 crops and flips.

Each is trained for 3 epochs on 30% of the training split less its validation share, SGD as
configs/common.py's small recipe. Reported: test top-1 and top-5 error on Fashion-MNIST's
test split, of each run's checkpoint `best` (by validation top-1).

  python experiments/eval_protocols.py                # the table (see README's timing)
  python experiments/eval_protocols.py --smoke --out=/tmp/x   # seconds, on mock data
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

RESULTS = os.path.join(ROOT, "experiments", "results", "eval_protocols_small")
COMMAND = "python experiments/eval_protocols.py"
BUDGET = {"epochs": 3.0, "train_split": "train[:30%]"}
VGG_SCALES = (32, 48, 64)       # {S_min, (S_min + S_max) / 2, S_max}, VGG Table 4
VGG_S32_SCALES = (32, 40)       # {S, S + 8}: S - 8 would be below the 32x32 input
ALEXNET_Q = 76


def load_config(arg: str, file: str):
  path = os.path.join(ROOT, "configs", file)
  spec = importlib.util.spec_from_file_location(f"config_{file[:-3]}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def run_configs(smoke: bool, workdir: str) -> dict:
  """{name: (config, description)} of the three runs, in the order they train (vgg_jitter
  starts from vgg_s32's checkpoint in `workdir`)."""
  from cnn_jax import config
  out = {}
  for name, jitter in (("vgg_s32", None), ("vgg_jitter", (32, 64))):
    cfg = load_config("small_A", "vgg.py")
    p = cfg.data.preprocess
    p.pad, p.random_crop, p.flip = 0, True, True
    if jitter:
      p.scale_jitter = jitter
      cfg.model.init_from = os.path.join(workdir, "vgg_s32")
      cfg.model.init_from_layers = "all"
    else:
      p.resize = 32
    cfg.model.init = "he"
    out[name] = cfg, (f"VGG A (1/4 width), train S = {jitter[0]}-{jitter[1]} (jittered), "
                      "fine-tuned from the S = 32 model" if jitter else "VGG A (1/4 width), train S = 32")
  cfg = load_config("small", "alexnet.py")
  p = cfg.data.preprocess
  p.resize, p.random_crop = ALEXNET_Q, True
  out["alexnet"] = cfg, f"AlexNet (1/8 width), 67x67 crops of images resized to {ALEXNET_Q}"
  for name, (cfg, text) in out.items():
    cfg.train.epochs, cfg.data.train_split = BUDGET["epochs"], BUDGET["train_split"]
    cfg.train.eval_batch_size = 200
    if smoke:
      cfg.data.manual_dir = ""  # tfds.testing.mock_data
      cfg.model.width = cfg.model.width / 2
      cfg.train.update(batch_size=16, eval_batch_size=16, steps=2, eval_every_steps=2,
                       log_every_steps=1)
      cfg.data.train_split = "train"
    out[name] = config.validate(cfg), text
  return out


def evaluate(cfg, workdir: str, protocol: str, scales=(), ensemble=(), batch: int = 0) -> dict:
  from cnn_jax import config, evaluation
  cfg = cfg.copy_and_resolve_references()
  cfg.eval.update(protocol=protocol, scales=tuple(scales), ensemble=tuple(ensemble),
                  batch_size=batch)
  cfg = config.validate(cfg)
  print(f"eval {os.path.basename(workdir)} {protocol} Q={scales or 'config'}"
        + (f" ensemble {len(ensemble) + 1}" if ensemble else ""), flush=True)
  result = evaluation.evaluate(cfg, workdir, "best")
  import json
  with open(result["file"]) as f:
    return json.load(f)["rows"]


def err(row: dict, k: int = 1) -> float:
  return 100 * (1 - row[f"test_top{k}"]) if f"test_top{k}" in row else 100 * (
      1 - row[f"eval_top{k}"])


def cells(row: dict) -> str:
  return f"{err(row):.2f} | {err(row, 5):.2f}"


def q(scales) -> str:
  return ",".join(map(str, scales))


def table(results: dict, texts: dict, elapsed: float, smoke: bool) -> str:
  j, s, a, ens = (results["vgg_jitter"], results["vgg_s32"], results["alexnet"],
                  results["ensemble"])
  lines = ["# Test protocols on small networks (VGG Tables 3-6, AlexNet Sec. 4.1)", "",
           f"Command: `{COMMAND}`" + (" (--smoke: mock data, not results)" if smoke else ""),
           "", "Fashion-MNIST's test split, top-1 / top-5 error %, one seed. "
           "Runs: " + "; ".join(f"`{k}`: {v}" for k, v in texts.items()) + ".", "",
           "## Table 3: single test scale (dense evaluation)", "",
           "| model | train S | test Q | top-1 err | top-5 err |", "|---|---|---:|---:|---:|"]
  lines += [f"| VGG A | 32 | 32 | {cells(s['dense Q=32'])} |",
            f"| VGG A | 32 | 40 | {cells(s['dense Q=40'])} |"]
  lines += [f"| VGG A | [32; 64] | {x} | {cells(j[f'dense Q={x}'])} |" for x in VGG_SCALES]
  lines += ["", "## Table 4: several test scales (dense evaluation, posteriors averaged)", "",
            "| model | train S | test Q | top-1 err | top-5 err |", "|---|---|---:|---:|---:|",
            f"| VGG A | 32 | {q(VGG_S32_SCALES)} | {cells(s['dense Q=' + q(VGG_S32_SCALES)])} |",
            f"| VGG A | [32; 64] | {q(VGG_SCALES)} | {cells(j['dense Q=' + q(VGG_SCALES)])} |",
            "", "## Table 5: dense against multi-crop, and both", "",
            "| model | train S | test Q | method | top-1 err | top-5 err |",
            "|---|---|---:|---|---:|---:|"]
  for name, rows, scales, train_s in (("VGG A", s, VGG_S32_SCALES, "32"),
                                      ("VGG A", j, VGG_SCALES, "[32; 64]")):
    lines += [f"| {name} | {train_s} | {q(scales)} | {method} | "
              f"{cells(rows[f'{method} Q=' + q(scales)])} |"
              for method in ("center", "dense", "multi_crop", "dense+multi_crop")
              if f"{method} Q={q(scales)}" in rows]
  lines += ["", "## Table 6: the two VGG models' softmax averaged (dense, Q = "
            f"{q(VGG_SCALES)})", "", "| models | top-1 err | top-5 err |", "|---|---:|---:|",
            f"| S = 32 | {cells(ens['S32 dense'])} |",
            f"| S = [32; 64] | {cells(ens['jitter dense'])} |",
            f"| both | {cells(ens['both'])} |",
            "", f"## AlexNet: one centre crop against ten crops (Q = {ALEXNET_Q})", "",
            "| protocol | views | top-1 err | top-5 err |", "|---|---:|---:|---:|",
            f"| center | 1 | {cells(a[f'center Q={ALEXNET_Q}'])} |",
            f"| ten_crop | 10 | {cells(a[f'ten_crop Q={ALEXNET_Q}'])} |", "",
            "## Orderings against the papers (computed from the rows above)", ""]
  claims = [
      ("Table 3: scale jittering at training beats a fixed S (VGG: 'significantly better')",
       err(j["dense Q=48"]), err(s["dense Q=32"]), "jittered at Q=48", "S=32 at Q=32"),
      ("Table 4: several test scales beat one (VGG: jittered models gain most)",
       err(j["dense Q=" + q(VGG_SCALES)]), err(j["dense Q=48"]), "Q=" + q(VGG_SCALES), "Q=48"),
      ("Table 5: multi-crop slightly better than dense (VGG: 'slightly')",
       err(j["multi_crop Q=" + q(VGG_SCALES)]), err(j["dense Q=" + q(VGG_SCALES)]),
       "multi_crop", "dense"),
      ("Table 5: dense+multi_crop better than either ('complementary')",
       err(j["dense+multi_crop Q=" + q(VGG_SCALES)]),
       min(err(j["dense Q=" + q(VGG_SCALES)]), err(j["multi_crop Q=" + q(VGG_SCALES)])),
       "dense+multi_crop", "the better one"),
      ("Table 6: an ensemble beats its best member",
       err(ens["both"]), min(err(ens["S32 dense"]), err(ens["jitter dense"])), "ensemble",
       "best member"),
      ("AlexNet Sec. 4.1: ten crops beat one centre crop (the paper's test practice)",
       err(a[f"ten_crop Q={ALEXNET_Q}"]), err(a[f"center Q={ALEXNET_Q}"]), "ten_crop",
       "center"),
  ]
  for text, ours, other, a_name, b_name in claims:
    verdict = "agrees" if ours < other else ("ties" if ours == other else "disagrees")
    lines.append(f"- {text}: {a_name} {ours:.2f}% against {b_name} {other:.2f}% top-1 "
                 f"error: **{verdict}**")
  lines += ["", "One seed and one training run each, no intervals: a difference smaller than "
            "the seed-to-seed spread of the small studies (experiments/results/) is no "
            "evidence either way.", "",
            f"Wall time of the whole script: {elapsed / 60:.1f} min."]
  return "\n".join(lines) + "\n"


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--smoke", action="store_true", help="tiny runs on mock data")
  parser.add_argument("--workdir", default=os.path.join(ROOT, "workdirs", "eval_protocols"))
  parser.add_argument("--out", default=RESULTS, help="folder for table.md")
  args = parser.parse_args()
  from cnn_jax import startup
  startup.configure()
  from cnn_jax import train
  start = time.monotonic()
  mock = contextlib.nullcontext()
  if args.smoke:
    import tensorflow_datasets as tfds
    mock = tfds.testing.mock_data(num_examples=48)
  with mock:
    runs = run_configs(args.smoke, args.workdir)
    dirs = {name: os.path.join(args.workdir, name) for name in runs}
    for name, (cfg, _) in runs.items():
      train.train(cfg, dirs[name])  # a finished run only reports its result
    multi = 0 if args.smoke else 40  # images per call: 40 x 150 views
    (jc, _), (sc, _), (ac, _) = runs["vgg_jitter"], runs["vgg_s32"], runs["alexnet"]
    results = {
        "vgg_jitter": {**evaluate(jc, dirs["vgg_jitter"], "dense+multi_crop", VGG_SCALES,
                                  batch=multi),
                       **evaluate(jc, dirs["vgg_jitter"], "center", VGG_SCALES)},
        "vgg_s32": {**evaluate(sc, dirs["vgg_s32"], "dense+multi_crop", VGG_S32_SCALES,
                               batch=multi),
                    **evaluate(sc, dirs["vgg_s32"], "center", VGG_S32_SCALES)},
        "alexnet": {**evaluate(ac, dirs["alexnet"], "center", (ALEXNET_Q,)),
                    **evaluate(ac, dirs["alexnet"], "ten_crop", (ALEXNET_Q,))},
    }
    key = "dense Q=" + q(VGG_SCALES)
    results["ensemble"] = {
        "S32 dense": evaluate(sc, dirs["vgg_s32"], "dense", VGG_SCALES)[key],
        "jitter dense": results["vgg_jitter"][key],
        "both": evaluate(sc, dirs["vgg_s32"], "dense", VGG_SCALES,
                         ensemble=(dirs["vgg_jitter"],))[key]}
  texts = {name: text for name, (_, text) in runs.items()}
  os.makedirs(args.out, exist_ok=True)
  path = os.path.join(args.out, "table.md")
  with open(path, "w") as f:
    f.write(table(results, texts, time.monotonic() - start, args.smoke))
  print(f"wrote {path}")


if __name__ == "__main__":
  main()
