"""The results README's one table of the papers' claims, computed from the studies' results.

  python -m cnn_jax.claims_table experiments/results    # rewrites experiments/results/README.md

reads every `<results>/*/comparisons.json` (written by the collector) and writes, between the
markers START and END of `<results>/README.md` (appended to it where they are missing), one row
per declared comparison: the paper's claim and its source, the paper's figure (the claimed
difference a - b, from the declared direction and size), ours (a - b with its 95% interval, on
the split the study's table reports), the p-value and the verdict (`stats.verdict`). Nothing in
it is typed in: running it again after a study is re-collected updates the table.
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os

START = "<!-- claims table: python -m cnn_jax.claims_table experiments/results -->"
END = "<!-- end of claims table -->"


def _num(v, digits=2, sign=True) -> str:
  if v is None or (isinstance(v, float) and not math.isfinite(v)):
    return "-"
  return f"{v:+.{digits}f}" if sign else f"{v:.{digits}g}"


def papers_figure(result: dict) -> str:
  """The claimed difference a - b in the metric's units: '-1.4' for "a lower by 1.4", 'within
  ±1' for "the same", '< 0' / '> 0' for a direction without a size."""
  size, claim = result.get("size"), result["claim"]
  if claim == "same":
    return f"0 (within ±{size:g})"
  sign = "-" if claim == "lower" else "+"
  return f"{sign}{size:g}" if size is not None else ("< 0" if claim == "lower" else "> 0")


def rows(results_dir: str) -> list[dict]:
  """Every comparison of every study under results_dir, studies in name order, with "study"."""
  out = []
  for path in sorted(glob.glob(os.path.join(results_dir, "*", "comparisons.json"))):
    with open(path, encoding="utf-8") as f:
      for result in json.load(f):
        out.append({**result, "study": os.path.basename(os.path.dirname(path))})
  return out


def markdown(results: list[dict]) -> str:
  """The table: claim (source) | study | a vs b | metric | paper's figure | ours [95% CI] | p |
  verdict."""
  lines = ["| paper's claim (source) | study | a vs b | metric | paper: a − b | ours: a − b "
           "[95% interval] | p (test) | verdict |",
           "|---|---|---|---|---:|---:|---:|---|"]
  for r in results:
    metric = f"{r['metric']} ({r.get('split', 'validation')})"
    head = (f"| {r.get('source') or r['claim']} | [{r['study']}]({r['study']}/table.md) | "
            f"{r['a']} vs {r['b']} | {metric} | {papers_figure(r)} | ")
    if "reason" in r:
      lines.append(head + f"- | - | {r['reason']} |")
      continue
    c, v = r["comparison"], r["verdict"]
    ours = _num(c["diff"]) + ("" if c.get("low") is None
                              else f" [{_num(c['low'])}, {_num(c['high'])}]")
    p = "-" if c.get("pvalue") is None else f"{_num(c['pvalue'], 3, sign=False)} ({c['test']})"
    lines.append(head + f"{ours} | {p} | **{v['verdict']}** |")
  if not results:
    lines.append("| (no study has a comparisons.json yet) | | | | | | | |")
  return "\n".join(lines)


def write(results_dir: str, readme: str | None = None) -> str:
  """Puts the table between the markers of results_dir/README.md (or `readme`); returns it."""
  readme = readme or os.path.join(results_dir, "README.md")
  table = markdown(rows(results_dir))
  block = f"{START}\n{table}\n{END}"
  text = open(readme, encoding="utf-8").read() if os.path.exists(readme) else ""
  if START in text and END in text:
    before, rest = text.split(START, 1)
    text = before + block + rest.split(END, 1)[1]
  else:
    text = text.rstrip("\n") + ("\n\n" if text else "") + block + "\n"
  with open(readme, "w", encoding="utf-8") as f:
    f.write(text)
  return table


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("results_dir", nargs="?", default=os.path.join(
      os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "experiments", "results"))
  args = parser.parse_args(argv)
  print(write(args.results_dir))
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
