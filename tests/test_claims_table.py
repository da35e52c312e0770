"""The results README's claims table: computed from the studies' comparisons.json files,
written between its markers, the rest of the README kept."""

import json

from cnn_jax import claims_table, stats


def comparison(a, b, claim, size, values_a, values_b, source):
  c = stats.compare(values_a, values_b, names=(a, b))
  return {"a": a, "b": b, "metric": "top1_error", "split": "test", "claim": claim,
          "size": size, "source": source, "comparison": c.to_dict(),
          "verdict": stats.verdict(c, claim, size).to_dict()}


def write(results, study, rows):
  (results / study).mkdir(parents=True, exist_ok=True)
  (results / study / "comparisons.json").write_text(json.dumps(rows))


def test_the_table_is_computed_from_every_study(tmp_path):
  results = tmp_path / "results"
  lower = comparison("lrn", "none", "lower", 1.4, [20.0, 21.0, 19.5], [23.0, 24.5, 22.0],
                     "Krizhevsky et al. 2012, Sec. 3.3")
  same = comparison("A-LRN", "A", "same", 1.0, [20.0, 25.0, 18.0], [21.0, 22.0, 23.0],
                    "Simonyan & Zisserman 2015, Sec. 4.1")
  write(results, "lrn_small", [lower, same])
  write(results, "stem_small", [{"a": "s", "b": "p", "metric": "top1_error", "claim": "lower",
                                 "size": None, "source": "VGG Sec. 2.3",
                                 "reason": "no finished run of s"}])
  readme = results / "README.md"
  readme.write_text(f"# Results\n\nintro\n\n{claims_table.START}\nold\n{claims_table.END}\n\n"
                    "tail\n")
  claims_table.main([str(results)])
  text = readme.read_text()
  assert text.startswith("# Results\n\nintro\n\n") and text.endswith("\n\ntail\n")
  assert "old" not in text and text.count(claims_table.START) == 1
  lines = [line for line in text.splitlines() if line.startswith("| ") and "Sec." in line]
  assert len(lines) == 3
  c = lower["comparison"]
  assert lines[0].startswith("| Krizhevsky et al. 2012, Sec. 3.3 | [lrn_small](lrn_small/"
                             "table.md) | lrn vs none | top1_error (test) | -1.4 | ")
  assert f"{c['diff']:+.2f} [{c['low']:+.2f}, {c['high']:+.2f}]" in lines[0]
  assert f"**{lower['verdict']['verdict']}** |" in lines[0]
  assert "| 0 (within ±1) |" in lines[1] and f"**{same['verdict']['verdict']}**" in lines[1]
  assert "| < 0 | - | - | no finished run of s |" in lines[2]

  # The verdict follows the data: the same claim on data where lrn is worse contradicts it.
  flipped = comparison("lrn", "none", "lower", 1.4, [24.0, 25.0, 23.5], [23.0, 24.5, 22.0],
                       "Krizhevsky et al. 2012, Sec. 3.3")
  assert flipped["verdict"]["verdict"] != lower["verdict"]["verdict"]
  write(results, "lrn_small", [flipped])
  claims_table.write(str(results))
  text = readme.read_text()
  assert f"**{flipped['verdict']['verdict']}**" in text and "A-LRN" not in text


def test_a_readme_without_markers_gets_the_table_appended(tmp_path):
  (tmp_path / "README.md").write_text("# Results\n")
  claims_table.write(str(tmp_path))
  text = (tmp_path / "README.md").read_text()
  assert text.startswith("# Results\n\n" + claims_table.START)
  assert "no study has a comparisons.json yet" in text
