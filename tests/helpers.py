"""Small helpers shared by the tests."""

import fcntl
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from cnn_jax import config, inspect, models

ALL_CONFIGS = ([("simple_cnn", "base"), ("lenet5", "paper"), ("lenet5", "modern"),
                ("alexnet", "paper"), ("alexnet", "one_tower"), ("alexnet", "torchvision")]
               + [("vgg", v) for v in models.vgg.VARIANTS])


def model_cfg(name, variant, **overrides):
  return config.validate(config.base(name, variant, **overrides)).model


def summary(name, variant, **overrides):
  return inspect.summarize(models.abstract(model_cfg(name, variant, **overrides)))


def layer(summary_, name):
  return next(r for r in summary_.layers if r.name == name)


def abstract_logits(cfg, batch=2):
  model = models.abstract(cfg)
  x = jax.ShapeDtypeStruct((batch, *cfg.input_shape), jnp.float32)
  return nnx.eval_shape(lambda m, v: m(v), model, x)


@nnx.jit
def apply(model, x):
  """model(x), compiled (much faster than op-by-op for whole networks)."""
  return model(x)


def build_and_apply(cfg, x, seed=0):
  """Builds the model and applies it (evaluation mode) to x; returns (logits, model)."""
  model = models.build(cfg, seed)
  return apply(models.view(model, train=False), x), model



def load_config(file, arg=None):
  """get_config(arg) of configs/<file>, as run.py's --config=configs/<file>:<arg> loads it."""
  import importlib.util
  import os
  path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs",
                      file)
  spec = importlib.util.spec_from_file_location(f"config_{file[:-3]}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def tiny_training(file, arg=None, steps=3, batch=16, width=None, **mesh):
  """A few steps of `configs/<file>:<arg>` on mock Fashion-MNIST (48 examples), SGD with
  momentum, on the mesh `mesh` (e.g. data=1 for one device, layout='fsdp')."""
  cfg = load_config(file, arg)
  if width:
    cfg.model.width = width
  cfg.data.name, cfg.data.manual_dir = "fashion_mnist", ""
  cfg.optim.name, cfg.optim.lr, cfg.optim.momentum = "sgd", 0.01, 0.9
  cfg.optim.schedule, cfg.optim.weight_decay = "constant", 5e-4
  cfg.optim.warmup_epochs, cfg.optim.label_smoothing = 0.0, 0.0
  t = cfg.train
  t.batch_size, t.eval_batch_size, t.steps = batch, 16, steps
  t.eval_every_steps, t.log_every_steps = steps, 1
  cfg.mesh.update(mesh)
  return config.validate(cfg)


def global_batches(cfg, n, seed=0):
  """`n` global batches of random images and labels for cfg's model, the same on every
  process."""
  rng = np.random.default_rng(seed)
  shape = (cfg.train.batch_size, *cfg.model.input_shape)
  return [{"image": rng.standard_normal(shape).astype(np.float32),
           "label": rng.integers(0, cfg.model.num_classes, shape[0]).astype(np.int32)}
          for _ in range(n)]


def losses_on(run, batches):
  """Trains `run` (a train.Run) on the global `batches`, each process feeding its rows of
  them; returns the losses and the final parameters (as numpy, gathered)."""
  from jax.experimental import multihost_utils

  from cnn_jax import parallel
  assert run.cfg.train.log_every_steps == 1
  share, shares = parallel.input_share(run.mesh)
  losses = []
  with jax.set_mesh(run.mesh):
    for batch in batches:
      rows = len(batch["label"]) // shares
      local = {k: v[share * rows:(share + 1) * rows] for k, v in batch.items()}
      run.state = run.train_step(run.state, parallel.global_batch(local, run.batch_sharding))
      window = jax.device_get(run.state.window)  # log_every_steps=1: this step's metrics
      losses.append(float(window["loss"] / window["count"]))
    params = jax.tree.leaves(multihost_utils.process_allgather(run.state.params, tiled=True))
  return losses, [np.asarray(p) for p in params]


def epoch(ds, e=0, start=0):
  """Epoch `e`'s training batches of a built dataset, from step `start`."""
  return list(ds.train_batches(e, start))


def stack(batches, key="image"):
  """One array of `key` over batches."""
  return np.concatenate([b[key] for b in batches])


def built_once(tmp_path_factory, name, build) -> str:
  """The directory `name`, filled by `build(path)` once for the whole test session: the
  workers of `pytest -n` share it, the first to ask building it under a file lock while the
  others wait. Tests only read it; one that changes it works on a `copy_of` it."""
  root = tmp_path_factory.getbasetemp()
  if os.environ.get("PYTEST_XDIST_WORKER"):
    root = root.parent  # the session's folder, above each worker's own
  path, done = root / name, root / f"{name}.done"
  with open(root / f"{name}.lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
    if not done.exists():
      shutil.rmtree(path, ignore_errors=True)
      path.mkdir()
      build(str(path))
      done.touch()
  return str(path)


def copy_of(directory, destination) -> str:
  """A copy of `directory` at `destination` (which must not exist), for a test that changes
  it."""
  shutil.copytree(directory, destination)
  return str(destination)
