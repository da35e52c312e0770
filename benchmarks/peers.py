"""Training throughput of cnn_jax beside PyTorch (CPU, channels_last) and Keras 3 (TensorFlow).

The same network (layers, parameter count, input size, batch, optimiser) is trained in each
framework on synthetic batches held in memory; steady-state training images/s (forward,
backward, update; compile and warm-up steps excluded) are compared. Each measurement runs in
its own process, the frameworks alternating (cnn_jax, torch, keras, cnn_jax, ...) for
`--repeats` rounds; the median per framework is reported.

  .venv/bin/python benchmarks/peers.py [--cases=simple_cnn,lenet5] [--repeats=2] \\
      [--seconds=10] [--json_out=PATH] [--params_only]

Time to accuracy of the main job against Keras: benchmarks/time_to_accuracy.py.

cnn_jax is timed by `run.py bench --json` (its `train_images_per_sec`); the parameter counts
of the torch and Keras models are asserted equal to `run.py summary --json`'s.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import statistics
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from benchmarks.peer_cases import CASES, Case  # noqa: E402

FRAMEWORKS = ("cnn_jax", "torch", "keras")
INSTALL = {"torch": "pip install torch==2.13.0",
           "keras": "pip install tensorflow-cpu==2.21.0 (Keras 3 comes with it)"}

# ---------------------------------------------------------------------------------------------
# The driver: one subprocess per measurement.

def last_error_line(text: str) -> str:
  """The line that says what went wrong: the last one that is not a log line."""
  lines = [l.strip() for l in text.splitlines() if l.strip()
           and not re.match(r"^([IWE]\d{4} |WARNING: All log messages)", l.strip())]
  return lines[-1] if lines else "no output"


def run_json(cmd: list[str], key: str, timeout: float) -> dict:
  """Runs `cmd`; its last stdout line that is a JSON object with `key`, or {'error': ...}."""
  try:
    p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)
  except subprocess.TimeoutExpired:
    return {"error": f"timed out after {timeout:.0f} s"}
  for line in reversed(p.stdout.splitlines()):
    if line.startswith("{"):
      try:
        out = json.loads(line)
      except json.JSONDecodeError:
        continue
      if key in out or "error" in out:
        return out
  return {"error": f"exit {p.returncode}: {last_error_line(p.stderr + p.stdout)}"}


def cnn_jax_params(case: Case, timeout: float) -> dict:
  out = run_json([sys.executable, "run.py", "summary", f"--config={case.config}", "--json"],
                 "params", timeout)
  return {"params": out.get("params"), "constants": out.get("constants", 0), **(
      {"error": out["error"]} if "error" in out else {})}


def cnn_jax_bench(case: Case, seconds: float, timeout: float) -> dict:
  """`run.py bench` for the case; without --input/--seconds should its flags have changed."""
  base = [sys.executable, "run.py", "bench", f"--config={case.config}",
          f"--config.train.batch_size={case.batch}", "--json"]
  out = run_json(base + ["--input=none", f"--seconds={seconds}"], "train_images_per_sec",
                 timeout)
  if "unknown command line flag" in out.get("error", "").lower():
    out = run_json(base, "train_images_per_sec", timeout)
  if "train_images_per_sec" in out:
    out["images_per_sec"] = out["train_images_per_sec"]
  return out


def peer(framework: str, name: str, args) -> dict:
  cmd = [sys.executable, os.path.abspath(__file__), f"--worker={framework}", f"--case={name}",
         f"--seconds={args.seconds}", f"--min_steps={args.min_steps}",
         f"--keras_jit={args.keras_jit}"] + (["--params_only"] if args.params_only else [])
  return run_json(cmd, "params", args.timeout)


def check_params(name: str, framework: str, got: dict, want: dict) -> None:
  """Asserts a peer's trainable (and fixed) parameter counts equal cnn_jax's."""
  if "error" in got or want.get("params") is None:
    return
  tol = CASES[name].param_tolerance
  assert abs(got["params"] - want["params"]) <= tol and got["constants"] == want["constants"], (
      f"{name}: {framework} has {got['params']:,} trainable + {got['constants']:,} fixed "
      f"parameters, cnn_jax {want['params']:,} + {want['constants']:,} (tolerance {tol})")


def available(framework: str) -> str | None:
  """None, or why the framework cannot be measured."""
  module = {"torch": "torch", "keras": "keras", "cnn_jax": "jax"}[framework]
  if framework == "keras" and importlib.util.find_spec("tensorflow") is None:
    module = "tensorflow"
  if importlib.util.find_spec(module) is None:
    return f"{module} is not installed: {INSTALL.get(framework, 'pip install -e .')}"
  return None


def measure(names: list[str], args) -> dict:
  results = {}
  missing = {fw: available(fw) for fw in FRAMEWORKS}
  for fw, why in missing.items():
    if why:
      print(f"{fw}: {why}", file=sys.stderr)
  for name in names:
    case, record = CASES[name], {fw: {"runs": []} for fw in FRAMEWORKS}
    record["cnn_jax"].update(cnn_jax_params(CASES[name], args.timeout))
    for round_ in range(1 if args.params_only else args.repeats):
      for fw in FRAMEWORKS:
        if missing[fw]:
          record[fw]["error"] = missing[fw]
          continue
        if fw == "cnn_jax":
          if args.params_only:
            continue
          out = cnn_jax_bench(case, args.seconds, args.timeout)
        else:
          out = peer(fw, name, args)
          check_params(name, fw, out, record["cnn_jax"])
          record[fw].update({k: out[k] for k in ("params", "constants", "version") if k in out})
        record[fw]["runs"].append(out)
        rate = out.get("images_per_sec")
        print(f"[{name} round {round_ + 1}] {fw}: "
              + (f"{rate:,.1f} images/s" if rate else out.get("error", "built")),
              file=sys.stderr, flush=True)
    for fw in FRAMEWORKS:
      rates = [r["images_per_sec"] for r in record[fw]["runs"] if "images_per_sec" in r]
      record[fw]["median"] = statistics.median(rates) if rates else None
      errors = [r["error"] for r in record[fw]["runs"] if "error" in r]
      if not rates and errors:
        record[fw]["error"] = errors[-1]
    jits = [r.get("jit_compile") for r in record["keras"]["runs"] if "jit_compile" in r]
    record["keras"]["jit_compile"] = max(set(jits), key=jits.count) if jits else None
    results[name] = record
  return results


def rate_cell(r: dict) -> str:
  if r.get("median"):
    return f"{r['median']:,.1f}"
  return f"n/a ({r['error'][:70]})" if r.get("error") else "n/a"


def throughput_table(results: dict) -> str:
  """Markdown: median training images/s per framework, and cnn_jax over the faster peer."""
  rows = ["| case | batch | cnn_jax img/s | PyTorch img/s | Keras img/s | "
          "cnn_jax / faster peer |", "|---|---:|---:|---:|---:|---:|"]
  for name, r in results.items():
    jax_rate = r["cnn_jax"].get("median")
    peers = [r[fw]["median"] for fw in ("torch", "keras") if r[fw].get("median")]
    ratio = f"{jax_rate / max(peers):.2f}" if jax_rate and peers else "n/a"
    keras = rate_cell(r["keras"])
    if r["keras"].get("median"):
      keras += f" (jit_compile={r['keras']['jit_compile']})"
    rows.append(f"| {name} | {CASES[name].batch} | {rate_cell(r['cnn_jax'])} | "
                f"{rate_cell(r['torch'])} | {keras} | {ratio} |")
  return "\n".join(rows)


def params_table(results: dict) -> str:
  """Markdown: trainable parameters per framework (fixed ones, LeNet-5's codes, noted)."""
  rows = ["| case | cnn_jax params | PyTorch params | Keras params | match |",
          "|---|---:|---:|---:|---|"]
  for name, r in results.items():
    counts = [r[fw].get("params") for fw in FRAMEWORKS]
    cells = " | ".join(f"{c:,}" if c is not None else "n/a" for c in counts)
    match = "exact" if None not in counts and len(set(counts)) == 1 else "not checked"
    fixed = r["cnn_jax"].get("constants")
    rows.append(f"| {name} | {cells} | {match}" + (f" (+{fixed:,} fixed in each)" if fixed
                                                  else "") + " |")
  return "\n".join(rows)


# ---------------------------------------------------------------------------------------------

def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--cases", default=",".join(CASES), help="comma-separated: " + ", ".join(CASES))
  p.add_argument("--repeats", type=int, default=3, help="rounds of jax, torch, keras (median)")
  p.add_argument("--seconds", type=float, default=10.0, help="timed seconds per measurement")
  p.add_argument("--min_steps", type=int, default=5, help="timed steps at least")
  p.add_argument("--keras_jit", choices=("auto", "on", "off"), default="auto",
                 help="Keras jit_compile: auto times both and keeps the faster")
  p.add_argument("--json_out", help="also write the results here")
  p.add_argument("--params_only", action="store_true",
                 help="only build the models and compare parameter counts")
  p.add_argument("--timeout", type=float, default=1800.0, help="seconds per subprocess")
  p.add_argument("--worker", choices=("torch", "keras"), help=argparse.SUPPRESS)
  p.add_argument("--case", help=argparse.SUPPRESS)
  return p.parse_args(argv)


def main(argv=None) -> None:
  args = parse_args(argv)
  if args.worker:  # one measurement, printed as one JSON line
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    case = CASES[args.case]
    if args.worker == "torch":
      from benchmarks.peer_torch import torch_worker
      work = torch_worker(case, args.seconds, args.min_steps, args.params_only)
    else:
      from benchmarks.peer_keras import keras_worker
      work = keras_worker(case, args.seconds, args.min_steps, args.params_only, args.keras_jit)
    print(json.dumps(work), flush=True)
    return
  names = [n.strip() for n in args.cases.split(",") if n.strip()]
  unknown = [n for n in names if n not in CASES]
  if unknown:
    sys.exit(f"unknown case(s) {unknown}; use some of {list(CASES)}")
  results = measure(names, args)
  if not args.params_only:
    print(throughput_table(results) + "\n")
  print(params_table(results))
  if args.json_out:
    with open(args.json_out, "w") as f:
      json.dump({"seconds": args.seconds, "repeats": args.repeats, "cpu_count": os.cpu_count(),
                 "results": results}, f, indent=1)


if __name__ == "__main__":
  main()

