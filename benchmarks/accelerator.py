"""The accelerator path in one script: training throughput, MFU, compile time and memory of the
papers' networks on one GPU (or TPU chip), and the main job trained to 92% there.

  python benchmarks/accelerator.py [--out=FILE.json] [--peak_tflops=BF16,F32]   # <= 5 min, GPU
  python benchmarks/accelerator.py --smoke        # the same code on tiny models, any CPU
  python benchmarks/accelerator.py --check_xla    # the full-size cases' 'xla' programs at
                                                  # batch 2, one step each, any machine

For VGG D (bfloat16 at batch 64, 128 and 256; float32 at 128), AlexNet as in the paper (two
towers) and as torchvision's one tower, and the small Fashion-MNIST CNN, each at its config's
input size: the train step on synthetic batches already on the device (`cnn_jax.bench`), its
images/s, model FLOP/s (6 x MACs per image) as a fraction of the device's dense peak (MFU; the
peak read from PEAKS by device kind, or given), compile time and XLA's buffer sizes; and which
lowering ran (`model.lowering=auto` must resolve to `xla` off the CPU). Then the main job
(configs/simple_cnn.py, unchanged) on Fashion-MNIST read from the vendored original files as
arrays (`cnn_jax.data.idx`, no TensorFlow), evaluated on the test split after every epoch, with
the wall time at which it first reaches 92% top-1 (DAWNBench's time-to-accuracy; this times
the recipe, it selects nothing).

It imports neither TensorFlow, TensorFlow Datasets nor clu, and runs on JAX 0.10 and 0.11, so
it runs on a machine that has only JAX, Flax, Optax and Orbax (ml_collections, pure Python,
travels with the working tree where it is missing: PYTHONPATH=<its site-packages copy>).
Published figures to compare with are in benchmarks/README.md ("Accelerators").
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# Dense peak TFLOP/s (bfloat16, float32 as XLA computes it: TF32 tensor cores on Ampere and
# later, plain FP32 on Volta), from the vendors' datasheets; matched by substring of
# jax.Device.device_kind, first match wins.
PEAKS = (
    ("H200", (989.0, 494.5)), ("H100", (989.0, 494.5)),   # SXM; H100 PCIe: (756, 378)
    ("A100", (312.0, 156.0)), ("L40S", (362.0, 183.0)), ("L4", (121.0, 60.0)),
    ("A10G", (70.0, 35.0)), ("V100", (125.0, 15.7)),
    ("TPU v5p", (459.0, 459.0)), ("TPU v5 lite", (197.0, 197.0)), ("TPU v4", (275.0, 275.0)),
)
TARGET = 0.92


def cases(smoke: bool) -> list[tuple[str, str, dict]]:
  """(label, config spec, overrides) of every throughput measurement."""
  if smoke:
    tiny = {"model.width": 0.125, "train.batch_size": 8}
    return [("vgg_D bf16 b8", "vgg.py:small_D", {**tiny, "model.dtype": "bfloat16"}),
            ("alexnet two-tower", "alexnet.py:small", tiny),
            ("simple_cnn", "simple_cnn.py", {"train.batch_size": 8})]
  vgg = [(f"vgg_D bf16 b{b}", "vgg.py:D", {"model.dtype": "bfloat16", "train.batch_size": b})
         for b in (64, 128, 256)]
  return vgg + [("vgg_D f32 b128", "vgg.py:D", {"train.batch_size": 128}),
                ("alexnet two-tower b128", "alexnet.py:paper", {}),
                ("alexnet torchvision b128", "alexnet.py:torchvision", {}),
                ("simple_cnn b128", "simple_cnn.py", {"train.batch_size": 128})]


def load_config(spec: str, overrides: dict):
  import importlib.util
  from cnn_jax import config
  file, _, arg = spec.partition(":")
  module_spec = importlib.util.spec_from_file_location(f"cfg_{file[:-3]}",
                                                       os.path.join(ROOT, "configs", file))
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  cfg = module.get_config(arg or None)
  for key, value in overrides.items():
    group, name = key.rsplit(".", 1)
    cfg[group][name] = value
  cfg.mesh.data = 1  # one chip
  return config.validate(cfg)


def given_peaks(text: str) -> tuple[float, float]:
  """--peak_tflops's 'BF16,F32' as FLOP/s; ValueError (its message the fix) if it is not."""
  try:
    bf16, f32 = (float(x) * 1e12 for x in text.split(","))
  except ValueError:
    bf16 = f32 = 0.0
  if not (bf16 > 0 and f32 > 0):
    raise ValueError(f"--peak_tflops={text!r} is not two positive numbers; give the dense "
                     "bfloat16 and float32 peaks in TFLOP/s, e.g. --peak_tflops=989,494.5")
  return bf16, f32


def peak(kind: str, given: str | None) -> tuple[float, float, str]:
  """(bf16, f32) peak FLOP/s of this device and where they come from."""
  if given:
    return (*given_peaks(given), "given")
  for name, (bf16, f32) in PEAKS:
    if name.lower() in kind.lower():
      return bf16 * 1e12, f32 * 1e12, f"datasheet ({name})"
  from cnn_jax import bench
  measured = bench.matmul_peak(1024 if kind.lower().startswith("cpu") else 8192, 1.0)
  return measured, measured, "measured (f32 matmul)"


def throughput(label, spec, overrides, peaks, seconds, min_steps=3) -> dict:
  import jax
  from cnn_jax import bench
  from cnn_jax.models import plan
  cfg = load_config(spec, overrides)
  r = bench.train_step(cfg, seconds=seconds, min_steps=min_steps)
  lowering = plan.resolve(cfg.model.lowering)
  p = peaks[0] if cfg.model.dtype == "bfloat16" else peaks[1]
  r.update(label=label, lowering_used=lowering, mfu=r["model_flops_per_sec"] / p,
           peak_flops=p)
  if (jax.default_backend() != "cpu" or overrides.get("model.lowering")) and lowering != "xla":
    raise AssertionError(f"{label}: model.lowering=auto resolved to {lowering!r} on "
                         f"{jax.default_backend()}; the accelerator path must be 'xla'")
  return r


def main_job(smoke: bool) -> dict:
  """configs/simple_cnn.py trained on arrays, test top-1 after each epoch, and the time to 92%."""
  import jax
  import numpy as np
  from cnn_jax import parallel
  from cnn_jax.data import VENDORED_FASHION_MNIST, idx
  from cnn_jax.steps import build_steps, prefetch_to_device
  cfg = load_config("simple_cnn.py", {"train.epochs": 1.0} if smoke else {})
  t = cfg.train
  (x, y), (xt, yt) = (idx.load(VENDORED_FASHION_MNIST, s) for s in ("train", "test"))
  if smoke:
    x, y, xt, yt = x[:2048], y[:2048], xt[:1000], yt[:1000]
  x = x.astype(np.float32) / 255.0
  mean, std = x.mean(axis=(0, 1, 2)), x.std(axis=(0, 1, 2))  # per channel, as the config
  x, xt = (x - mean) / std, (xt.astype(np.float32) / 255.0 - mean) / std
  steps_per_epoch = len(x) // t.batch_size
  total = int(round(t.epochs * steps_per_epoch))
  mesh = parallel.make_mesh(cfg.mesh)
  with jax.set_mesh(mesh):
    b = build_steps(cfg, mesh, 10, steps_per_epoch, total)
    eval_batches = [{"image": xt[i:i + 500], "label": yt[i:i + 500],
                     "mask": np.ones(len(yt[i:i + 500]), np.float32)}
                    for i in range(0, len(xt), 500)]
    state, rng, history = b.state, np.random.default_rng(cfg.seed), []
    start = time.perf_counter()
    reached = None
    for epoch in range(int(np.ceil(total / steps_per_epoch))):
      order = rng.permutation(len(x))[:steps_per_epoch * t.batch_size]
      batches = ({"image": x[order[i:i + t.batch_size]], "label": y[order[i:i + t.batch_size]]}
                 for i in range(0, len(order), t.batch_size))
      for batch in prefetch_to_device(batches, b.batch_sharding):
        state = b.train_step(state, batch)
      sums = None
      for batch in eval_batches:
        out = b.eval_step(state, parallel.global_batch(batch, b.batch_sharding))
        sums = out if sums is None else jax.tree.map(lambda a, c: a + c, sums, out)
      sums = jax.device_get(sums)
      top1, elapsed = float(sums["top1"] / sums["count"]), time.perf_counter() - start
      history.append({"epoch": epoch + 1, "test_top1": top1, "seconds": elapsed})
      print(f"  main job epoch {epoch + 1}: test top-1 {100 * top1:.2f}% at {elapsed:.1f} s",
            flush=True)
      if reached is None and top1 >= TARGET:
        reached = elapsed
  return {"epochs": history, "seconds_to_92": reached, "final_test_top1": history[-1]["test_top1"],
          "train_examples": len(x)}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--smoke", action="store_true", help="tiny models, one short epoch")
  parser.add_argument("--out", help="write the results as JSON here")
  parser.add_argument("--peak_tflops", help="BF16,F32 dense peak TFLOP/s, if not in PEAKS")
  parser.add_argument("--seconds", type=float, default=None, help="timing per measurement")
  parser.add_argument("--check_xla", action="store_true",
                      help="the full-size cases through model.lowering=xla at batch 2, one "
                           "step each, and no main job: the accelerator's programs compile "
                           "and run here (on the CPU, JAX's other version)")
  args = parser.parse_args(argv)
  if args.peak_tflops:
    try:
      given_peaks(args.peak_tflops)  # before any work: bad input is one line
    except ValueError as e:
      print(f"error: {e}", file=sys.stderr)
      return 2
  from cnn_jax import startup
  startup.configure(reexec=False)
  import jax
  device = jax.devices()[0]
  bf16, f32, source = peak(device.device_kind, args.peak_tflops)
  print(f"{device.device_kind} ({jax.default_backend()}), JAX {jax.__version__}; peak "
        f"{bf16 / 1e12:,.1f} TFLOP/s bf16, {f32 / 1e12:,.1f} f32, {source}", flush=True)
  seconds = args.seconds or (0.3 if args.smoke else 3.0)
  results = []
  out = {"device": device.device_kind, "backend": jax.default_backend(),
         "jax": jax.__version__, "peak_bf16": bf16, "peak_f32": f32, "peak_source": source,
         "throughput": results, "main_job": None, "smoke": args.smoke,
         "check_xla": args.check_xla,
         "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}

  def save():  # after every measurement: a run cut short by its time limit keeps what it did
    if args.out:
      with open(args.out + ".partial", "w") as f:
        json.dump(out, f, indent=2, default=str)
      os.replace(args.out + ".partial", args.out)

  for label, spec, overrides in cases(args.smoke):
    if args.check_xla:
      label, overrides = f"{label} as b2", {**overrides, "model.lowering": "xla",
                                             "train.batch_size": 2}
    r = throughput(label, spec, overrides, (bf16, f32), 0.0 if args.check_xla else seconds,
                   1 if args.check_xla else 3)
    results.append(r)
    save()
    print(f"  {label:<30s} {r['train_images_per_sec']:>10,.0f} images/s  MFU "
          f"{100 * r['mfu']:5.1f}%  compile {r['compile_s']:5.1f} s  temp "
          f"{r.get('step_temp_bytes', 0) / 2**30:6.2f} GiB  lowering {r['lowering_used']}",
          flush=True)
  if args.check_xla:
    return 0
  job = main_job(args.smoke)
  reached = job["seconds_to_92"]
  outcome = f"92% test top-1 after {reached:.1f} s" if reached else "did not reach 92%"
  print(f"  main job: {outcome}; final {100 * job['final_test_top1']:.2f}%", flush=True)
  out["main_job"] = job
  save()
  return 0


if __name__ == "__main__":
  sys.exit(main())
