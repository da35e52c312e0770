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

Metrics are in table units: top-1 and top-5 error in percentage points, the loss as is. They
are read from the final records' test metrics (`test_top1`, `test_top5`, `test_loss`: the
checkpoint chosen on validation, tested once) where every finished run of the study has them,
else from their last validation evaluation (`eval_*`): `reported_split`. Selection never looks
at the test split; the convergence check reads the logged validation curve.
"""

from __future__ import annotations

import collections
import dataclasses
import math

from cnn_jax import stats

METRICS = {  # metric name -> (final-record key without its split prefix, value of the number)
    "top1_error": ("top1", lambda v: 100 * (1 - v)),
    "top5_error": ("top5", lambda v: 100 * (1 - v)),
    "loss": ("loss", lambda v: v),
}
ALIASES = {"eval_loss": "loss"}  # the name of the loss metric before test metrics existed
UNITS = {"top1_error": "points", "top5_error": "points", "loss": ""}
# The split a table reports -> the prefix of its final-record keys.
PREFIXES = {"test": "test_", "validation": "eval_"}


def record_key(metric: str, split: str) -> str:
  """The final-record key of `metric` on `split`: record_key("top1_error", "test") ==
  "test_top1"."""
  return PREFIXES[split] + METRICS[ALIASES.get(metric, metric)][0]


def _number(v) -> bool:
  return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def reported_split(runs) -> str:
  """"test" where every finished run's final record has a test top-1 (the runs had a test
  split), else "validation" (their eval_* keys): one split for a whole table, so that every
  cell and comparison reads the same one."""
  finals = [r["final"] for r in runs if r.get("final") is not None]
  return "test" if finals and all(_number(f.get("test_top1")) for f in finals) else "validation"


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
    object.__setattr__(self, "metric", ALIASES.get(self.metric, self.metric))
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


def metric_values(runs: list[dict], metric: str, split: str = "validation") -> dict:
  """{(seed, data seed): the metric on `split`} over the finished runs that logged it."""
  key, value = record_key(metric, split), METRICS[ALIASES.get(metric, metric)][1]
  return {seed_key(r): value(r["final"][key]) for r in runs
          if r.get("final") is not None and _number(r["final"].get(key))}


def evaluate(groups: dict, comparisons, split: str | None = None) -> list[dict]:
  """One result per declared comparison: the claim, the split its metric was read from
  ("test" or "validation"; default `reported_split` of all the runs), the `stats.Comparison`
  of a against b and its `stats.Verdict` (JSON-safe dicts); "reason" instead where an arm has
  no finished run."""
  split = split or reported_split([r for runs in groups.values() for r in runs])
  out = []
  for c in comparisons:
    row = {"a": c.a, "b": c.b, "metric": c.metric, "split": split, "claim": c.claim,
           "size": c.size, "source": c.source}
    values = [metric_values(groups.get(v, []), c.metric, split) for v in (c.a, c.b)]
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
    metric = f"{r['metric']} ({r.get('split', 'validation')})"
    if "reason" in r:
      lines.append(f"| {r['a']} vs {r['b']} | {metric} | - | - | {claim} | "
                   f"{r['reason']} |")
      continue
    c, v = r["comparison"], r["verdict"]
    diff = f"{_num(c['diff'], sign=True)} [{_num(c['low'], sign=True)}, " \
           f"{_num(c['high'], sign=True)}]" if c["low"] is not None else _num(c["diff"],
                                                                             sign=True)
    pvalue = "-" if c["pvalue"] is None else f"{c['pvalue']:.3g} ({c['test']}, " \
                                             f"n = {c['n_a']}, {c['n_b']})"
    lines.append(f"| {r['a']} vs {r['b']} | {metric} | {diff} | {pvalue} | {claim} | "
                 f"**{v['verdict']}** |")
  return "\n".join(lines)


def eval_error_curve(runs: list[dict]) -> tuple[list[float], list[float]]:
  """(steps, mean over the finished runs logging that step of the validation top-1 error in
  %: the logged evaluations, which are on the selection split, never the test split)."""
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
  """`stats.convergence` of the arm's mean validation-error curve (in %) over its finished
  runs, against `half_width`, the half-width of the interval of its final validation top-1
  error (%)."""
  steps, values = eval_error_curve(runs)
  return stats.convergence(steps, values, half_width)
