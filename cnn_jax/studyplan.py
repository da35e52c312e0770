"""A study's cost before anything runs: every run's training FLOPs, predicted wall time and
device-hours, and the study's total (`python run.py study --study=... --plan`).

Each run's config is loaded the way `study.command` would run it (the config file's
get_config(arg), then the run's overrides applied in-process), and

  training FLOPs = 3 x MACs per image x images trained

with MACs the forward multiply-accumulates of `inspect.summarize(models.abstract(cfg.model))`
(3: the forward pass and twice its cost backward; scaling.FLOPS_PER_MAC_TRAINING) and images
trained = train.batch_size x the number of updates, which is, in this order:
- for a FLOP budget (train.flops > 0, e.g. a Study's budget_flops): the budget's images,
  train.flops / (3 x MACs), in whole batches: max(1, round(train.flops / (3 x MACs x batch)));
- train.steps if set;
- else round(train.epochs x (train examples // batch size)), as the trainer counts them
  (batches are whole; the remainder of an epoch is dropped).
Evaluation is not counted. A tuned study's plan lists its tuning runs (one per arm and grid
point) before its own runs; their cost does not depend on the values tuned.

Train examples come, without downloading anything, from the Study's `train_examples` hint
(the size of the unsliced split) or the split sizes TFDS publishes for the datasets the configs
use (KNOWN_SPLITS), else from TFDS's metadata where the dataset is prepared; a slice such as
'train[:25%]' or 'train[1000:]' is applied as TFDS does (percent boundaries rounded to the
closest example). As `cnn_jax.data.splits` does, where data.validation_fraction > 0 the
validation split is first held out of the whole 'train' split (round(fraction x N) examples)
and a slice of 'train' is taken of the rest: 'train[:25%]' of Fashion-MNIST is 25% of 54,000.

The wall time is images / images_per_sec: one number for every run (--images_per_sec=), or
{variant: images/s} measured with `run.py bench` (a dict or a JSON file of one); device-hours
are that wall time x `devices` / 3600. The total also gives the study's time with each run's
start-up (STARTUP_S: process start, data loading, compilation; 20-40 s on the 2-core CPU).
"""

from __future__ import annotations

import functools
import importlib.util
import json
import math
import os
import re
import sys

from cnn_jax import metrics, scaling, study
from cnn_jax.errors import UserError

# Examples per split as TFDS publishes them (the datasets' own sizes, not results).
KNOWN_SPLITS = {
    "fashion_mnist": {"train": 60000, "test": 10000},
    "mnist": {"train": 60000, "test": 10000},
    "cifar10": {"train": 50000, "test": 10000},
    "cifar100": {"train": 50000, "test": 10000},
    "imagenet2012": {"train": 1281167, "validation": 50000},
}
STARTUP_S = 30.0  # seconds a run takes to start on the 2-core CPU before it trains (20-40 s)
_SLICE = re.compile(r"^(?P<name>[A-Za-z_][\w-]*)(\[(?P<start>-?\d*%?):(?P<end>-?\d*%?)\])?$")


def load_config(spec: str, overrides: dict):
  """The run config of 'configs/<file>.py[:arg]' (relative to the repository root) with the
  dotted `overrides` applied, as `run.py train --config=... --config.k=v` would build it."""
  path, _, arg = spec.partition(":")
  full = path if os.path.isabs(path) else os.path.join(study.ROOT, path)
  if study.ROOT not in sys.path:  # config files import `configs.common`
    sys.path.insert(0, study.ROOT)
  cfg = _config_file(full, arg).copy_and_resolve_references()
  for key, value in overrides.items():
    *groups, leaf = key.split(".")
    node = cfg
    for g in groups:
      node = node[g]
    if isinstance(node[leaf] if leaf in node else None, tuple) and isinstance(value, list):
      value = tuple(value)
    node[leaf] = value
  return cfg


@functools.lru_cache(maxsize=None)
def _config_file(full: str, arg: str):
  module_spec = importlib.util.spec_from_file_location(f"plan_config_{abs(hash(full))}", full)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg) if arg else module.get_config()


def split_examples(split: str, total: int) -> int:
  """The examples of TFDS split string `split` ('train', 'train[:25%]', 'train[1000:]'; one
  slice, no '+') of a split holding `total` examples."""
  m = _SLICE.match(split.replace(" ", ""))
  if not m:
    raise UserError(f"data.train_split={split!r}: cannot count its examples; use 'train' or "
                    "one slice such as 'train[:25%]', or give the Study train_examples")
  if m.group("start") is None:
    return total

  def bound(text, default):
    if not text:
      return default
    value = int(round(int(text[:-1]) * total / 100)) if text.endswith("%") else int(text)
    return max(0, min(total, value + total if value < 0 else value))

  return max(0, bound(m.group("end"), total) - bound(m.group("start"), 0))


def train_examples(data_cfg, hint: int | None = None) -> int:
  """The training examples a run sees: its split of the dataset `data_cfg.name`, sized by the
  Study's `hint`, KNOWN_SPLITS, or the prepared dataset's TFDS metadata (in that order)."""
  base = _SLICE.match(data_cfg.train_split.replace(" ", ""))
  split = base.group("name") if base else data_cfg.train_split
  total = hint or KNOWN_SPLITS.get(data_cfg.name, {}).get(split)
  if total is None and data_cfg.name != "folder":
    try:
      import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
      builder = tfds.builder(data_cfg.name, data_dir=data_cfg.data_dir or None)
      total = builder.info.splits[split].num_examples or None
    except Exception:  # noqa: BLE001 - unknown or unprepared: the hint is the way out
      total = None
  if not total:
    raise UserError(f"data.name={data_cfg.name!r}, split {split!r}: its size is unknown here; "
                    "give the Study train_examples=<examples in the unsliced split>")
  if split == "train":
    total -= held_out(total, data_cfg.get("validation_fraction", 0.0))
  return split_examples(data_cfg.train_split, total)


def held_out(examples: int, fraction: float) -> int:
  """The examples of a split of `examples` held out as validation: round(fraction x examples),
  halves up, as `cnn_jax.data.splits.holdout` counts them."""
  return int(math.floor((fraction or 0.0) * examples + 0.5))


_COSTS: dict[str, tuple[int, int]] = {}


def model_cost(model_cfg) -> tuple[int, int]:
  """(parameters, forward MACs per image) of the `model` config group, from an abstract build
  (no memory), once per distinct model config."""
  key = model_cfg.to_json(sort_keys=True)
  if key not in _COSTS:
    from cnn_jax import inspect, models  # pylint: disable=g-import-not-at-top
    s = inspect.summarize(models.abstract(model_cfg))
    _COSTS[key] = (s.params, s.macs)
  return _COSTS[key]


def throughput(value) -> float | dict | None:
  """--images_per_sec: None, a number, {variant: images/s}, or a JSON file of either."""
  if value is None or isinstance(value, (int, float, dict)):
    return value
  text = str(value)
  try:
    return float(text)
  except ValueError:
    pass
  if not os.path.isfile(text):
    raise UserError(f"--images_per_sec={text!r} is neither a number nor a JSON file of "
                    "{variant: images/s}")
  with open(text, encoding="utf-8") as f:
    return json.load(f)


def run_cost(run: dict, hint: int | None = None) -> dict:
  """One run's row: name, variant, params, macs, train_examples, steps, images, flops."""
  cfg = load_config(run["config"], run["overrides"])
  examples = train_examples(cfg.data, hint)
  batch = cfg.train.batch_size
  params, macs = model_cost(cfg.model)
  budget = cfg.train.get("flops", 0) or 0
  if budget > 0:
    steps = max(1, int(round(budget / (scaling.FLOPS_PER_MAC_TRAINING * macs * batch))))
  else:
    steps = cfg.train.steps or max(1, int(round(cfg.train.epochs * (examples // batch))))
  images = steps * batch
  return {"name": run["name"], "variant": run["variant"], "config": run["config"],
          "params": params, "macs": macs, "train_examples": examples, "steps": steps,
          "images": images, "flops": scaling.FLOPS_PER_MAC_TRAINING * macs * images,
          "budget_flops": budget or None}


def plan(spec, images_per_sec=None, devices: int = 1,
         startup_s: float = STARTUP_S) -> tuple[list[dict], str]:
  """(rows, markdown table) of the study `spec` (a Study or 'experiments/<file>.py[:scale]'):
  one row per run (tuning runs first) with its cost (`run_cost`), images_per_sec, wall_s and
  device_hours (None without a throughput for its variant), then a "total" row summing flops,
  images, wall_s and device_hours over the runs, and with_startup_s: wall_s plus `startup_s`
  per run."""
  s = study.load(spec) if isinstance(spec, str) else spec
  rates = throughput(images_per_sec)
  rows = []
  for run in s.all_runs():
    row = {**run_cost(run, s.train_examples), "tuning": run["tuning"]}
    rate = rates.get(run["variant"]) if isinstance(rates, dict) else rates
    row["images_per_sec"] = rate
    row["wall_s"] = row["images"] / rate if rate else None
    row["device_hours"] = row["wall_s"] * devices / 3600 if rate else None
    rows.append(row)
  timed = [r for r in rows if r["wall_s"] is not None]
  total = {"name": "total", "variant": "", "runs": len(rows),
           "images": sum(r["images"] for r in rows), "flops": sum(r["flops"] for r in rows),
           "wall_s": sum(r["wall_s"] for r in timed) if timed else None,
           "device_hours": sum(r["device_hours"] for r in timed) if timed else None,
           "untimed": len(rows) - len(timed), "tuning_runs": sum(r["tuning"] for r in rows)}
  total["with_startup_s"] = (None if total["wall_s"] is None
                             else total["wall_s"] + startup_s * len(rows))
  total["startup_s"] = startup_s
  return rows + [total], format_plan(s, rows, total)


def _e(x) -> str:
  return f"{x:.3g}" if x is not None else "-"


def format_plan(s, rows: list[dict], total: dict) -> str:
  """The plan as markdown: a row per run, then the total."""
  lines = [f"# Plan: {s.title or s.name} ({len(rows)} runs)", "",
           "| run | params | MACs | train examples | steps | images | training FLOPs | "
           "images/s | wall time | device-hours |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
  for r in rows:
    wall = "-" if r["wall_s"] is None else metrics.format_duration(r["wall_s"])
    lines.append(f"| {r['name']} | {r['params']:,} | {r['macs']:,} | {r['train_examples']:,} | "
                 f"{r['steps']:,} | {r['images']:,} | {r['flops']:.3e} | "
                 f"{_e(r['images_per_sec'])} | {wall} | {_e(r['device_hours'])} |")
  wall = "-" if total["wall_s"] is None else metrics.format_duration(total["wall_s"])
  lines.append(f"| **total** | | | | | {total['images']:,} | {total['flops']:.3e} | | {wall} | "
               f"{_e(total['device_hours'])} |")
  note = ("Training only (3 x MACs x images; no evaluation, compilation or start-up); wall "
          "time = images / images/s, one run after another.")
  if total["tuning_runs"]:
    note += (f" {total['tuning_runs']} of the {total['runs']} runs are tuning runs (each arm at "
             "each grid point, under tune/).")
  if total["with_startup_s"] is not None:
    note += (f" With {total['startup_s']:g} s of start-up a run: "
             f"{metrics.format_duration(total['with_startup_s'])} in all.")
  if total["untimed"]:
    note += f" {total['untimed']} runs have no images/s (give --images_per_sec) and no time."
  return "\n".join(lines + ["", note])


def main(spec: str, images_per_sec=None, devices: int = 1) -> int:
  """`python run.py study --study=SPEC --plan [--images_per_sec=N|FILE.json]`: prints the plan."""
  print(plan(spec, images_per_sec, devices)[1])
  return 0
