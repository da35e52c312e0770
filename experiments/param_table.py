"""The parameter table: the papers' figures beside the exact counts computed from the models.

  python experiments/param_table.py            # prints markdown
  python experiments/param_table.py --write    # also writes experiments/results/param_table.md

Exact counts and MACs are computed from abstract builds of each model (no memory used); the
"paper" column quotes each paper (VGG Table 2 in millions; AlexNet's abstract; LeNet-5's
Sec. II.B), and the next column says how far the exact count is from that figure.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cnn_jax import config, inspect, models  # noqa: E402

# (label, family, variant, the paper's figure as printed, that figure as a number)
ROWS = (
    ("VGG A", "vgg", "A", "133 M (Table 2)", 133e6),
    ("VGG A-LRN", "vgg", "A-LRN", "133 M (Table 2)", 133e6),
    ("VGG B", "vgg", "B", "133 M (Table 2)", 133e6),
    ("VGG C", "vgg", "C", "134 M (Table 2)", 134e6),
    ("VGG D", "vgg", "D", "138 M (Table 2)", 138e6),
    ("VGG E", "vgg", "E", "144 M (Table 2)", 144e6),
    ("AlexNet (two towers)", "alexnet", "paper", "60 M (abstract)", 60e6),
    ("AlexNet (one tower)", "alexnet", "one_tower", "-", None),
    ("AlexNet (torchvision)", "alexnet", "torchvision", "-", None),
    ("LeNet-5", "lenet5", "paper", "60,000 (Sec. II.B)", 60e3),
    ("LeNet-5 (modern)", "lenet5", "modern", "-", None),
    ("Fashion-MNIST CNN", "simple_cnn", "base", "-", None),
)

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "param_table.md")


def table() -> str:
  lines = ["| model | input | paper | exact parameters | exact vs paper | forward MACs |",
           "|---|---|---|---:|---:|---:|"]
  for label, name, variant, paper, figure in ROWS:
    s = inspect.summarize(models.abstract(config.base(name, variant).model))
    diff = "-" if figure is None else f"{100 * (s.params - figure) / figure:+.1f}%"
    size = "x".join(map(str, s.input_shape))
    lines.append(f"| {label} | {size} | {paper} | {s.params:,} | {diff} | "
                 f"{inspect.human(s.macs)} |")
  return "\n".join(lines)


def main(argv: list[str]) -> None:
  text = table()
  print(text)
  if "--write" in argv:
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
      f.write(f"<!-- python experiments/param_table.py --write -->\n{text}\n")


if __name__ == "__main__":
  main(sys.argv[1:])
