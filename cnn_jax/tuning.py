"""A study's per-arm tuning on the validation split (`Study(tune={"optim.lr": (...)})`).

Phase 1 trains every arm at every grid point once, at the study's `tune_seed`, in
`<study dir>/tune/<variant>__<key>=<value>` (study_run.json "tuning": true). Phase 2 (`resolve`)
picks per arm the grid point whose run reached the best validation top-1 (`best_eval_top1` of
its final record, the best evaluation on the selection split; never a test metric), ties going
to the smaller values, and records the choice in `<study dir>/tuned.json`, which is then fixed:
a study resumed later keeps it. Phase 3 runs the arm's seeds with the chosen values as
overrides. A tuning run that failed counts as no candidate; an arm with no finished tuning run
cannot be resolved. The collector writes `tuning.md` from the tuning runs (`write_markdown`).
"""

from __future__ import annotations

import json
import math
import os

from cnn_jax import runlog

TUNED = "tuned.json"
TUNE_DIR = "tune"


def point_name(point: dict) -> str:
  """{"optim.lr": 0.01, "optim.weight_decay": 0.0} -> 'lr=0.01,weight_decay=0.0'."""
  return ",".join(f"{k.split('.')[-1]}={v}" for k, v in point.items())


def score(final: dict | None) -> float | None:
  """The validation top-1 a tuning run is judged by: its best evaluation (best_eval_top1), or
  its last (eval_top1) for a log written before best_eval_top1 existed; None if neither."""
  if final is None:
    return None
  for key in ("best_eval_top1", "eval_top1"):
    v = final.get(key)
    if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
      return float(v)
  return None


def choose(candidates: list[tuple[dict, float | None]]) -> dict | None:
  """The point with the highest validation top-1 among (point, top-1) pairs (None top-1: no
  candidate), ties to the smaller values (compared key by key in the grid's order)."""
  scored = [(p, s) for p, s in candidates if s is not None]
  if not scored:
    return None
  best = max(s for _, s in scored)
  return min((p for p, s in scored if s == best), key=lambda p: tuple(p.values()))


def load(study_dir: str) -> dict:
  path = os.path.join(study_dir, TUNED)
  if not os.path.exists(path):
    return {}
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def resolve(study, study_dir: str, failed=(), announce=print) -> dict:
  """{variant: chosen point} of the arms whose tuning is over: every tuning run of the arm
  finished or in `failed` (names of runs that failed this session), at least one finished.
  Choices already in tuned.json stay as they are; new ones are added to it and announced."""
  saved = load(study_dir)
  arms = dict(saved.get("arms", {}))
  chosen = {v: a["chosen"] for v, a in arms.items() if a.get("chosen") is not None}
  changed = False
  by_arm = {}
  for run in study.tuning_runs():
    by_arm.setdefault(run["variant"], []).append(run)
  for variant, runs in by_arm.items():
    if variant in chosen:
      continue
    points, over = [], True
    for run in runs:
      final = runlog.final(os.path.join(study_dir, run["name"]))
      status = ("finished" if final is not None else
                "failed" if run["name"] in failed else "unfinished")
      over &= status != "unfinished"
      points.append({"run": run["name"], "point": run["point"], "status": status,
                     "best_eval_top1": score(final),
                     "best_step": (final or {}).get("best_step")})
    if not over:
      continue
    pick = choose([(p["point"], p["best_eval_top1"]) for p in points])
    if pick is None:
      continue  # every tuning run failed: the arm cannot be resolved
    arms[variant] = {"chosen": pick, "points": points}
    chosen[variant] = pick
    changed = True
    best = next(p for p in points if p["point"] == pick)["best_eval_top1"]
    announce(f"tuned {variant}: {point_name(pick)} (validation top-1 {100 * best:.2f}%, best "
             f"of {sum(p['best_eval_top1'] is not None for p in points)} grid points)",
             flush=True)
  if changed:
    with open(os.path.join(study_dir, TUNED), "w", encoding="utf-8") as f:
      json.dump({"seed": study.tune_seed, "grid": {k: list(v) for k, v in study.tune.items()},
                 "selected_on": "best_eval_top1 (validation)", "arms": arms}, f, indent=2)
  return chosen


def unresolvable(study, study_dir: str, failed) -> list[str]:
  """The arms every tuning run of which failed (so none can be chosen)."""
  by_arm = {}
  for run in study.tuning_runs():
    by_arm.setdefault(run["variant"], []).append(run["name"] in failed)
  chosen = load(study_dir).get("arms", {})
  return [v for v, f in by_arm.items() if all(f) and v not in chosen]


def markdown(tune_runs: list[dict], chosen: dict, title: str = "") -> str:
  """tuning.md: per arm (row) and grid point (column) the validation top-1 error (%) of its
  tuning run at its best evaluation, the chosen point in bold; '-' where a run has not
  finished."""
  names, arms = [], {}
  for run in tune_runs:
    name = point_name(run["point"])
    if name not in names:
      names.append(name)
    arms.setdefault(run["variant"], {})[name] = run
  lines = [f"# Tuning{': ' + title if title else ''}", "",
           "Validation top-1 error % of each arm's tuning run (one seed) at each grid point, at "
           "its best evaluation (best_eval_top1); the chosen point, the lowest (ties to the "
           "smaller value), in bold. The test split plays no part.", "",
           "| arm | " + " | ".join(names) + " | chosen |",
           "|---|" + "---:|" * len(names) + "---|"]
  for variant, runs in arms.items():
    pick = chosen.get(variant)
    cells = []
    for name in names:
      run = runs.get(name)
      s = score(run["final"]) if run else None
      text = "-" if s is None else f"{100 * (1 - s):.2f}"
      cells.append(f"**{text}**" if pick is not None and point_name(pick) == name else text)
    lines.append(f"| {variant} | " + " | ".join(cells) + " | "
                 + ("-" if pick is None else point_name(pick)) + " |")
  return "\n".join(lines)


def write_markdown(study_dir: str, tune_runs: list[dict], path: str, title: str = "") -> None:
  """Writes tuning.md for `tune_runs` (collect.find_runs(..., tuning_runs=True)): the choices
  recorded in tuned.json, else those its finished runs give."""
  saved = {v: a["chosen"] for v, a in load(study_dir).get("arms", {}).items()
           if a.get("chosen") is not None}
  by_arm = {}
  for run in tune_runs:
    by_arm.setdefault(run["variant"], []).append((run["point"], score(run["final"])))
  chosen = {v: saved.get(v) or choose(c) for v, c in by_arm.items()}
  with open(path, "w", encoding="utf-8") as f:
    f.write(markdown(tune_runs, {v: p for v, p in chosen.items() if p}, title) + "\n")
