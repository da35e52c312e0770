"""A study's declared comparisons (a paper's claim about two arms) checked against its runs, and
each arm's convergence check.

A study file declares, e.g. for AlexNet's LRN (Krizhevsky et al. 2012, Sec. 3.3):

  Comparison(a="alexnet/lrn", b="alexnet/none", metric="top1_error", claim="lower", size=1.4,
             source="Krizhevsky et al. 2012, Sec. 3.3: LRN reduces top-1 error by 1.4%")

read as "arm a's metric is `claim` ('lower', 'higher' or 'same') than arm b's, by about `size`"
(for 'same', `size` is the margin within which a difference counts as none). The collector
computes mean(a) - mean(b) over the arms' finished seeds with its 95% interval and p-value
(`stats.compare`: Welch's t-test, or the paired t-test when both arms ran the same (seed,
data seed) pairs) and the verdict by `stats.verdict`'s fixed rule; nothing here is typed in.

Metrics are in table units: top-1 and top-5 error in percentage points, the eval loss as is.
"""

from __future__ import annotations

import collections
import dataclasses
import math

from cnn_jax import stats

METRICS = {  # metric name -> (final-record key, value of the record's number)
    "top1_error": ("eval_top1", lambda v: 100 * (1 - v)),
    "top5_error": ("eval_top5", lambda v: 100 * (1 - v)),
    "eval_loss": ("eval_loss", lambda v: v),
}
UNITS = {"top1_error": "points", "top5_error": "points", "eval_loss": ""}


@dataclasses.dataclass(frozen=True)
class Comparison:
  """A paper's claim about arms `a` and `b` (variant names): a's `metric` is `claim` than b's
  (stats.DIRECTIONS), by about `size` in the metric's units (percentage points for the errors;
  for claim='same' the margin of equivalence, required); `source` cites the paper's section."""
  a: str
  b: str
  metric: str = "top1_error"
  claim: str = "lower"
  size: float | None = None
  source: str = ""

  def __post_init__(self):
    if self.metric not in METRICS:
      raise ValueError(f"metric must be one of {tuple(METRICS)}, got {self.metric!r}")
    if self.claim not in stats.DIRECTIONS:
      raise ValueError(f"claim must be one of {stats.DIRECTIONS}, got {self.claim!r}")
    if self.claim == "same" and self.size is None:
      raise ValueError("claim='same' needs size: the margin within which a difference is none")
    if self.size is not None and not self.size > 0:
      raise ValueError(f"size must be positive, got {self.size}")


def seed_key(run: dict):
  """What pairs a run with its twin in another arm: (seed, data seed)."""
  return (run.get("seed"), run.get("data_seed", run.get("seed")))


def metric_values(runs: list[dict], metric: str) -> dict:
  """{(seed, data seed): the metric} over the finished runs that logged it."""
  key, value = METRICS[metric]
  return {seed_key(r): value(r["final"][key]) for r in runs
          if r.get("final") is not None and isinstance(r["final"].get(key), (int, float))}


def evaluate(groups: dict, comparisons) -> list[dict]:
  """One result per declared comparison: the claim, the `stats.Comparison` of a against b and
  its `stats.Verdict` (JSON-safe dicts); "reason" instead where an arm has no finished run."""
  out = []
  for c in comparisons:
    row = {"a": c.a, "b": c.b, "metric": c.metric, "claim": c.claim, "size": c.size,
           "source": c.source}
    values = [metric_values(groups.get(v, []), c.metric) for v in (c.a, c.b)]
    if not all(values):
      missing = [v for v, vals in zip((c.a, c.b), values) if not vals]
      out.append({**row, "reason": f"no finished run of {', '.join(missing)}"})
      continue
    paired = set(values[0]) == set(values[1]) and len(values[0]) > 1
    result = stats.compare(values[0], values[1], names=(c.a, c.b), paired=paired)
    out.append({**row, "comparison": result.to_dict(),
                "verdict": stats.verdict(result, c.claim, c.size).to_dict()})
  return out


def _num(v, digits=2, sign=False) -> str:
  if v is None or (isinstance(v, float) and not math.isfinite(v)):
    return "-"
  return f"{v:+.{digits}f}" if sign else f"{v:.{digits}f}"


def markdown(results: list[dict]) -> str:
  """The comparisons as a markdown table: a - b with its 95% interval, the p-value and test,
  the paper's claim and the verdict."""
  lines = ["| a vs b | metric | a − b [95% interval] | p (test) | paper's claim | verdict |",
           "|---|---|---:|---:|---|---|"]
  for r in results:
    size = "" if r["size"] is None else (
        f" (±{r['size']:g})" if r["claim"] == "same" else f" by {r['size']:g}")
    claim = f"a {r['claim']}{size}" + (f"; {r['source']}" if r["source"] else "")
    if "reason" in r:
      lines.append(f"| {r['a']} vs {r['b']} | {r['metric']} | - | - | {claim} | "
                   f"{r['reason']} |")
      continue
    c, v = r["comparison"], r["verdict"]
    diff = f"{_num(c['diff'], sign=True)} [{_num(c['low'], sign=True)}, " \
           f"{_num(c['high'], sign=True)}]" if c["low"] is not None else _num(c["diff"],
                                                                             sign=True)
    pvalue = "-" if c["pvalue"] is None else f"{c['pvalue']:.3g} ({c['test']}, " \
                                             f"n = {c['n_a']}, {c['n_b']})"
    lines.append(f"| {r['a']} vs {r['b']} | {r['metric']} | {diff} | {pvalue} | {claim} | "
                 f"**{v['verdict']}** |")
  return "\n".join(lines)


def eval_error_curve(runs: list[dict]) -> tuple[list[float], list[float]]:
  """(steps, mean over the finished runs logging that step of the eval top-1 error in %)."""
  values = collections.defaultdict(list)
  for run in runs:
    if run.get("final") is None:
      continue
    for r in run["records"]:
      if isinstance(r.get("eval_top1"), (int, float)) and isinstance(r.get("step"), int):
        values[r["step"]].append(100 * (1 - r["eval_top1"]))
  steps = sorted(values)
  return steps, [sum(values[s]) / len(values[s]) for s in steps]


def arm_convergence(runs: list[dict], half_width: float) -> stats.Convergence:
  """`stats.convergence` of the arm's mean eval-error curve (in %) over its finished runs,
  against `half_width`, the half-width of the interval of its final top-1 error (%)."""
  steps, values = eval_error_curve(runs)
  return stats.convergence(steps, values, half_width)
