"""`python run.py bench`: how fast a config trains on this machine, and how close to the peak.

For the config's model at its batch size and input size it measures, in one process:
  - the train step: compile time, steady-state training images per second (synthetic batches
    already on the devices, so the input pipeline is not in it), and the same for `--peer`
    lowerings when asked;
  - FLOP/s: the model's own FLOPs (3 x 2 x MACs per image: forward, input and weight
    gradients) and XLA's count for the compiled step, each over the step time, and the model
    FLOP/s as a fraction of a float32 matmul's FLOP/s measured just before (MFU against the
    practical peak of this machine, not a datasheet number);
  - memory: XLA's buffers for the step (arguments, outputs, temporaries) and the process's peak
    resident memory;
  - the input pipeline alone: images per second out of the config's own tf.data pipeline
    (`data`), or an ImageNet-style one (JPEG decode, the config's crop and flip) over generated
    JPEGs (`--input=jpeg`), and its ratio to the training step's consumption.
Prints one line per figure, or one JSON object with --json.
"""

from __future__ import annotations

import io
import resource
import time

import jax
import jax.numpy as jnp
import numpy as np

from cnn_jax import huge_pages, parallel
from cnn_jax.errors import UserError


def matmul_peak(n: int = 4096, seconds: float = 2.0) -> float:
  """FLOP/s of a jitted float32 n x n matmul: the practical peak utilisation is measured
  against."""
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  f = jax.jit(lambda a, b: a @ b)
  f(a, a).block_until_ready()
  reps, start = 0, time.perf_counter()
  while time.perf_counter() - start < seconds or reps < 2:
    f(a, a).block_until_ready()  # dispatch is asynchronous: unsynced, the loop queues far
    reps += 1                    # more products than `seconds` allows (30 s for 2 s)
  return 2 * n ** 3 * reps / (time.perf_counter() - start)


def _cost(compiled) -> float:
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  return float((cost or {}).get("flops", 0.0))


def _memory(compiled) -> dict:
  m = compiled.memory_analysis()
  if m is None:
    return {}
  return {"step_argument_bytes": int(m.argument_size_in_bytes),
          "step_output_bytes": int(m.output_size_in_bytes),
          "step_temp_bytes": int(m.temp_size_in_bytes)}


# Distinct synthetic batches taken in turn: one batch repeated is memorised within tens of steps,
# and its vanishing gradients (likely denormal) ran LeNet-5 22-41% slower.
BATCHES = 16


def synthetic_batches(cfg, batch_sharding, batch_size: int, count: int = BATCHES) -> list:
  rng = np.random.default_rng(0)
  shape = (batch_size, *cfg.model.input_shape)
  return [parallel.global_batch(
      {"image": rng.standard_normal(shape, dtype=np.float32),
       "label": rng.integers(0, cfg.model.num_classes, batch_size).astype(np.int32)},
      batch_sharding) for _ in range(count)]


def train_step(cfg, seconds: float = 5.0, min_steps: int = 5) -> dict:
  """Compile time and steady-state images/s of the config's train step on synthetic data."""
  from cnn_jax.steps import build_steps
  mesh = parallel.make_mesh(cfg.mesh)
  batch_size = cfg.train.batch_size
  with jax.set_mesh(mesh):
    b = build_steps(cfg, mesh, cfg.model.num_classes, steps_per_epoch=1000,
                            total_steps=1_000_000)
    batches = synthetic_batches(cfg, b.batch_sharding, batch_size)
    start = time.perf_counter()
    compiled = b.train_step.lower(b.state, batches[0]).compile()
    compile_s = time.perf_counter() - start
    state = compiled(b.state, batches[0])  # first run: allocation, thread pools
    for batch in batches[1:3]:
      state = compiled(state, batch)
    jax.block_until_ready(state)
    steps, start = 0, time.perf_counter()
    while steps < min_steps or time.perf_counter() - start < seconds:
      state = compiled(state, batches[steps % len(batches)])
      steps += 1
      if steps % 10 == 0:
        jax.block_until_ready(state.step)  # bounded queue, steady timing
    jax.block_until_ready(state)
    step_s = (time.perf_counter() - start) / steps
  model_flops = 6.0 * b.summary.macs * batch_size
  return {"model": f"{cfg.model.name}:{cfg.model.variant}", "batch_size": batch_size,
          "input_shape": "x".join(map(str, cfg.model.input_shape)),
          "lowering": cfg.model.lowering, "dtype": cfg.model.dtype, "params": b.summary.params,
          "macs": b.summary.macs, "compile_s": compile_s, "step_ms": step_s * 1e3,
          "train_images_per_sec": batch_size / step_s, "timed_steps": steps,
          "model_flops_per_step": model_flops, "model_flops_per_sec": model_flops / step_s,
          "xla_flops_per_step": _cost(compiled), **_memory(compiled),
          "devices": mesh.size, "platform": jax.devices()[0].platform,
          "huge_pages": huge_pages.active()}


def input_pipeline(cfg, seconds: float = 5.0) -> float:
  """Training images/s out of the config's own pipeline (its dataset must be available)."""
  from cnn_jax import data
  ds = data.build(cfg.data, image_shape=tuple(cfg.model.input_shape),
                  global_batch=cfg.train.batch_size, eval_batch=cfg.train.eval_batch_size,
                  seed=data.seed(cfg.data, cfg.seed))
  return _drain(ds.train_batches(0), seconds)


def _drain(batches, seconds: float) -> float:
  next(batches)  # start-up: threads, first shuffle buffer fill
  images, start = 0, time.perf_counter()
  for batch in batches:
    images += len(batch["label"])
    if time.perf_counter() - start > seconds:
      break
  return images / (time.perf_counter() - start)


def generated_jpegs(count: int, size=(375, 500), seed: int = 0) -> list[bytes]:
  """`count` JPEG files of ImageNet's typical size (500x375), smooth random colour fields with
  noise, so they compress like photographs rather than like noise or flat colour."""
  import tensorflow as tf
  rng = np.random.default_rng(seed)
  h, w = size
  files = []
  for _ in range(count):
    coarse = rng.uniform(0, 255, (1, h // 25 + 1, w // 25 + 1, 3)).astype(np.float32)
    smooth = tf.image.resize(coarse, (h, w), method="bicubic")[0].numpy()
    image = np.clip(smooth + rng.normal(0, 12, smooth.shape), 0, 255).astype(np.uint8)
    files.append(tf.io.encode_jpeg(image, quality=90).numpy())
  return files


def jpeg_pipeline(cfg, seconds: float = 5.0, count: int = 256) -> float:
  """Training images/s of an ImageNet-style pipeline: JPEG bytes decoded, then the config's
  own training preprocessing (scale jitter or resize, random crop, flip, mean), batched, as
  the TFDS imagenet2012 source feeds it."""
  import tensorflow as tf
  from cnn_jax.data import pipeline, preprocess
  from cnn_jax.data.preprocess import plain
  p, shape = cfg.data.preprocess, tuple(cfg.model.input_shape)
  channels = shape[-1]
  files = generated_jpegs(count)
  decoded = tf.data.Dataset.from_tensor_slices(files).map(
      plain(lambda f: tf.io.decode_jpeg(f, channels=channels)))
  mean_mode = "channel" if p.mean != "none" else "none"  # sizes vary, as in ImageNet
  prep = pipeline.preprocessor(p, shape, decoded, mean_mode, batched=False)
  key = tf.constant(preprocess.stream_key(cfg.seed, 0))

  def example(position, encoded):
    image = tf.io.decode_jpeg(encoded, channels=channels)
    u = preprocess.draws(key, 0, position, 1)
    return {"image": prep(image[None], u)[0], "label": tf.constant(0)}

  ds = tf.data.Dataset.from_tensor_slices(files).repeat().enumerate()
  ds = ds.map(plain(example), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  ds = ds.batch(cfg.train.batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
  return _drain(ds.with_options(pipeline._options()).as_numpy_iterator(), seconds)


def run(cfg, seconds: float = 5.0, input_kind: str = "data", peers: tuple = ()) -> dict:
  """Every figure for `cfg` (see the module docstring)."""
  peak = matmul_peak()
  result = train_step(cfg, seconds)
  result["matmul_peak_flops_per_sec"] = peak
  result["mfu"] = result["model_flops_per_sec"] / peak
  result["xla_flops_utilisation"] = (result["xla_flops_per_step"] / result["step_ms"] * 1e3
                                     / peak)
  for lowering in peers:
    peer = cfg.copy_and_resolve_references()
    peer.model.lowering = lowering
    result[f"train_images_per_sec[{lowering}]"] = train_step(peer, seconds)[
        "train_images_per_sec"]
  if input_kind != "none":
    try:
      rate = jpeg_pipeline(cfg, seconds) if input_kind == "jpeg" else input_pipeline(cfg,
                                                                                     seconds)
      result.update(input_kind=input_kind, input_images_per_sec=rate,
                    input_over_train=rate / result["train_images_per_sec"])
    except UserError as e:
      result.update(input_kind=input_kind, input_images_per_sec=None,
                    input_unavailable=str(e).splitlines()[0])
  result["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
  return result


def format_result(r: dict) -> str:
  from cnn_jax.inspect import human
  out = io.StringIO()
  p = lambda *a: print(*a, file=out)  # noqa: E731
  p(f"{r['model']} at {r['input_shape']}, batch {r['batch_size']}, {r['dtype']}, lowering "
    f"{r['lowering']}, {r['devices']} {r['platform']} device(s): {r['params']:,} parameters, "
    f"{human(r['macs'])} MACs per image")
  p(f"  compile          {r['compile_s']:.2f} s")
  p(f"  train step       {r['step_ms']:.2f} ms = {r['train_images_per_sec']:,.0f} images/s "
    f"({r['timed_steps']} steps)")
  for key, value in r.items():
    if key.startswith("train_images_per_sec["):
      p(f"  {key[len('train_images_per_sec'):]:<16s} {value:,.0f} images/s "
        f"(ratio {r['train_images_per_sec'] / value:.2f})")
  pages = "huge pages" if r.get("huge_pages") else "4 KB pages"
  p(f"  matmul peak      {r['matmul_peak_flops_per_sec'] / 1e9:,.1f} GFLOP/s (f32 4096^2, "
    f"{pages})")
  p(f"  model FLOP/s     {r['model_flops_per_sec'] / 1e9:,.1f} GFLOP/s = {100 * r['mfu']:.1f}% "
    "of the matmul peak (MFU)")
  p(f"  XLA FLOP/s       {r['xla_flops_per_step'] / r['step_ms'] * 1e3 / 1e9:,.1f} GFLOP/s = "
    f"{100 * r['xla_flops_utilisation']:.1f}% of the peak")
  if "step_temp_bytes" in r:
    p(f"  step memory      {human(r['step_argument_bytes'])}B arguments, "
      f"{human(r['step_temp_bytes'])}B temporaries; process peak "
      f"{human(r['peak_rss_bytes'])}B resident")
  if r.get("input_images_per_sec"):
    p(f"  input pipeline   {r['input_images_per_sec']:,.0f} images/s ({r['input_kind']}) = "
      f"{r['input_over_train']:.1f}x what the train step consumes")
  elif "input_unavailable" in r:
    p(f"  input pipeline   not measured: {r['input_unavailable']}")
  return out.getvalue().rstrip()
