"""The device mesh, parameter layouts as regex rules, and multi-process set-up.

Models carry no parallelism: a layout is a list of rules from a regex on a parameter's path
('fc6/kernel') to how its dimensions split over the mesh axes `data` and `model`. The train
state is placed by these rules, the batch is split over `data`, and `jax.jit` with explicit
in/out shardings lets XLA's SPMD partitioner insert the collectives (mesh axes of type Auto).
Everything else in the state (batch-norm statistics, RNG streams, optimiser scalars) is
replicated; an optimiser slot with a parameter's path and shape (momentum, Adam's moments)
follows that parameter.

A rule's spec is one of
  ()  or 'replicated'           every device holds the whole array;
  (None, 'model', ...)          one entry per leading dimension: a mesh axis or None;
  'out:<axis>' / 'in:<axis>'    the last / second-to-last dimension over <axis> (a kernel's
                                output / input features, for dense and convolution kernels);
  'fsdp'                        the largest dimension divisible by the `data` axis, over
                                `data`, for arrays of at least mesh.fsdp_min_size elements
                                (Zhao et al. 2023, "PyTorch FSDP"; ZeRO-3, Rajbhandari 2020).
The first matching rule wins: `mesh.rules` first, then the layout's own, else replicated.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re

import jax
import ml_collections
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

from cnn_jax import schema
from cnn_jax.errors import ConfigError, UserError

AXES = ("data", "model")

# Named layouts; each is a tuple of (regex on the parameter path, spec) rules.
LAYOUTS = {
    # Data parallel: every device holds every parameter; gradients are all-reduced.
    "replicated": (),
    # Fully sharded data parallel: parameters, gradients and optimiser state split over `data`.
    "fsdp": ((r".*", "fsdp"),),
    # Megatron-style tensor parallelism for the large FC layers (Shoeybi et al. 2019, Sec. 3):
    # FC6 split by output units, FC7 by input units, so FC6-ReLU-dropout-FC7 needs one
    # all-reduce. VGG's FC6 and FC7 hold 119M of its 138M parameters (Table 2).
    "tensor_parallel": ((r"^fc6/(kernel|bias)$", "out:model"), (r"^fc7/kernel$", "in:model")),
    # AlexNet on two GPUs (Krizhevsky et al. 2012, Sec. 3.2, Fig. 2): each GPU holds half the
    # kernels of every layer; the grouped convolutions 2, 4, 5 stay within a GPU, conv3 and the
    # FC layers read both halves.
    "two_tower": ((r"^(conv|fc)\d+/(kernel|bias)$", "out:model"),),
}


def defaults() -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict({
      "data": -1,                 # devices on the `data` axis; -1: all devices not on `model`
      "model": 1,                 # devices on the `model` axis
      "layout": "replicated",     # replicated | fsdp | tensor_parallel | two_tower
      "rules": (),                # ((regex, spec), ...) tried before the layout's own rules
      "fsdp_min_size": 2 ** 14,   # fsdp: smaller arrays stay replicated
  })


def _check_spec(where: str, spec) -> None:
  if spec in ("replicated", "fsdp") or spec == ():
    return
  if isinstance(spec, str):
    kind, _, axis = spec.partition(":")
    if kind in ("out", "in") and axis in AXES:
      return
  elif isinstance(spec, (tuple, list)) and all(a is None or a in AXES for a in spec):
    return
  raise ConfigError(f"{where}: spec {spec!r} is not a layout spec; use (), a tuple of "
                    f"{list(AXES)} or None per dimension, 'out:model', 'in:model' or 'fsdp'")


RULES = {
    "data": schema.Num(low=1, integer=True, also=(-1,), hint="devices; -1 = all not on `model`"),
    "model": schema.at_least(1, "devices", integer=True),
    "layout": schema.Choice(LAYOUTS),
    "fsdp_min_size": schema.at_least(1, "elements", integer=True),
}


def validate(m: ml_collections.ConfigDict) -> None:
  schema.check("mesh.", m, RULES)
  if not isinstance(m.rules, (tuple, list)):
    raise ConfigError(f"mesh.rules={m.rules!r} must be a tuple of (regex, spec) pairs")
  for i, rule in enumerate(m.rules):
    if not (isinstance(rule, (tuple, list)) and len(rule) == 2 and isinstance(rule[0], str)):
      raise ConfigError(f"mesh.rules[{i}]={rule!r} must be a (regex, spec) pair, e.g. "
                        "('fc6/kernel', (None, 'model'))")
    try:
      re.compile(rule[0])
    except re.error as e:
      raise ConfigError(f"mesh.rules[{i}]: {rule[0]!r} is not a regular expression ({e})") \
          from None
    _check_spec(f"mesh.rules[{i}]", rule[1])
  if m.layout == "two_tower" and m.model != 2:
    raise ConfigError(f"mesh.layout='two_tower' puts each tower on one of the 2 devices of the "
                      f"model axis, but mesh.model={m.model}; set --config.mesh.model=2")
  uses_model = m.layout in ("tensor_parallel", "two_tower") or any(
      "model" in str(spec) for _, spec in m.rules)
  if m.model > 1 and not uses_model:
    raise ConfigError(f"mesh.model={m.model} but layout {m.layout!r} splits nothing over "
                      "`model`; use mesh.layout=tensor_parallel or two_tower, or mesh.model=1")


# -- multi-process set-up --------------------------------------------------------------------

def cluster_launched() -> bool:
  """Whether SLURM or Open MPI started this program as one of several processes."""
  env = os.environ
  slurm = "SLURM_JOB_ID" in env and int(env.get("SLURM_NTASKS", env.get("SLURM_NPROCS", "1"))) > 1
  mpi = int(env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1
  return slurm or mpi


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, distributed: bool = False) -> bool:
  """Starts `jax.distributed` when the run spans processes; returns whether it did.

  Explicit flags win; `distributed` lets JAX detect the cluster (Cloud TPU pods, SLURM, Open
  MPI, Kubernetes); a SLURM or MPI launch of several processes is detected without a flag.
  Call before anything touches the devices.
  """
  explicit = coordinator_address is not None or num_processes is not None
  if not (explicit or distributed or cluster_launched()):
    return False
  if explicit and None in (coordinator_address, num_processes, process_id):
    raise UserError("--coordinator_address, --num_processes and --process_id go together; "
                    "give all three (or none, on SLURM, MPI or a TPU pod)")
  try:
    jax.distributed.initialize(coordinator_address, num_processes, process_id)
  except (RuntimeError, ValueError) as e:
    reason = " ".join(str(e).split())[:200]
    raise UserError(f"jax.distributed.initialize failed ({reason}); check the coordinator "
                    "address and that every process was started") from e
  return True


# -- the mesh --------------------------------------------------------------------------------

def make_mesh(m: ml_collections.ConfigDict, devices=None) -> jax.sharding.Mesh:
  """The (data, model) mesh of `m` (the `mesh` config group) over `devices` (default: all).

  A mesh smaller than the devices uses the first ones (single-process runs only).
  """
  devices = list(jax.devices() if devices is None else devices)
  n = len(devices)
  if n % m.model:
    raise UserError(f"mesh.model={m.model} does not divide the {n} devices; set mesh.model to "
                    "a divisor")
  data = n // m.model if m.data == -1 else m.data
  if data * m.model > n:
    raise UserError(f"mesh.data={m.data} x mesh.model={m.model} needs {data * m.model} devices "
                    f"but there are {n}; use mesh.data=-1 to take them all")
  if data * m.model < n and jax.process_count() > 1:
    raise UserError(f"mesh.data x mesh.model = {data * m.model} leaves some of the {n} devices "
                    "unused, which a multi-process run cannot do; use mesh.data=-1")
  return jax.make_mesh((data, m.model), AXES, axis_types=(AxisType.Auto,) * 2,
                       devices=devices[:data * m.model])


def input_share(mesh) -> tuple[int, int]:
  """(index, count): this process reads input share `index` of `count` equal shares.

  Processes whose devices hold the same rows of the batch (the same `data` coordinates, the
  model axis spanning processes) read the same share.
  """
  axis = mesh.axis_names.index("data")
  rows: dict[int, set] = {}
  for index, device in np.ndenumerate(mesh.devices):
    rows.setdefault(device.process_index, set()).add(index[axis])
  groups = sorted({tuple(sorted(r)) for r in rows.values()})
  covered = sorted(i for g in groups for i in g)
  if covered != list(range(mesh.shape["data"])) or len({len(g) for g in groups}) != 1:
    raise UserError(f"the processes hold uneven parts of the data axis ({groups}); use a mesh "
                    "whose data axis splits evenly over the processes")
  return groups.index(tuple(sorted(rows[jax.process_index()]))), len(groups)


def describe(mesh) -> str:
  kinds = sorted({d.platform for d in mesh.devices.flat})
  return (f"data={mesh.shape['data']},model={mesh.shape['model']} over {mesh.size} "
          f"{'/'.join(kinds)} device{'s' * (mesh.size > 1)}, {jax.process_count()} "
          f"process{'es' * (jax.process_count() > 1)}")


# -- layouts ---------------------------------------------------------------------------------

def path_of(path) -> str:
  """'fc6/kernel' for a tree path through nnx.State dictionaries."""
  return "/".join(str(k.key) for k in path if isinstance(k, jax.tree_util.DictKey))


def _resolve(name: str, shape: tuple, spec, mesh, min_size: int, rule: str) -> P:
  sizes = dict(mesh.shape)
  if spec in ((), "replicated"):
    return P()
  if spec == "fsdp":
    if math.prod(shape) < min_size:
      return P()
    for dim in sorted(range(len(shape)), key=lambda d: (-shape[d], d)):
      if shape[dim] % sizes["data"] == 0:
        return P(*[None] * dim, "data")
    return P()
  if isinstance(spec, str):  # out:axis / in:axis
    kind, _, axis = spec.partition(":")
    dim = len(shape) - (1 if kind == "out" else 2)
    if dim < 0:
      raise ConfigError(f"layout rule {rule!r} -> {spec!r}: {name} has shape {shape}, with no "
                        f"{kind}put dimension")
    spec = (None,) * dim + (axis,)
  spec = tuple(spec)
  if len(spec) > len(shape):
    raise ConfigError(f"layout rule {rule!r} -> {spec}: {name} has only {len(shape)} "
                      "dimensions; give one entry per dimension")
  for dim, axis in enumerate(spec):
    if axis is not None and shape[dim] % sizes[axis]:
      raise ConfigError(f"layout rule {rule!r}: {name} dimension {dim} has size {shape[dim]}, "
                        f"not divisible by the {sizes[axis]} devices of mesh axis {axis!r}; "
                        "change the rule or the mesh")
  return P(*spec)


@dataclasses.dataclass(frozen=True)
class Layout:
  """Where each parameter lives: its PartitionSpec, by parameter path."""
  name: str
  mesh: jax.sharding.Mesh
  specs: dict           # 'fc6/kernel' -> PartitionSpec
  shapes: dict          # 'fc6/kernel' -> shape

  @classmethod
  def of(cls, m: ml_collections.ConfigDict, mesh, params) -> "Layout":
    """The layout of `m` (the `mesh` config group) for the parameter tree `params`."""
    rules = [(re.compile(r), s, r) for r, s in (*m.rules, *LAYOUTS[m.layout])]
    specs, shapes = {}, {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
      name = path_of(path)
      shape = tuple(np.shape(leaf))
      rule = next(((s, r) for regex, s, r in rules if regex.search(name)), ((), ""))
      specs[name] = _resolve(name, shape, rule[0], mesh, m.fsdp_min_size, rule[1])
      shapes[name] = shape
    layout = cls(m.layout, mesh, specs, shapes)
    if mesh.shape["model"] > 1 and not any("model" in tuple(s) for s in specs.values()):
      raise ConfigError(f"mesh.model={mesh.shape['model']} but layout {m.layout!r} matches no "
                        "parameter of this model; check mesh.rules or use mesh.model=1")
    return layout

  def spec(self, path, leaf) -> P:
    """The parameter's spec for a leaf at a parameter's path and shape; else replicated."""
    name = path_of(path)
    return self.specs[name] if self.shapes.get(name) == tuple(np.shape(leaf)) else P()

  def shardings(self, tree):
    """NamedShardings for every leaf of `tree` (the train state, or its shapes)."""
    return jax.tree_util.tree_map_with_path(
        lambda path, leaf: NamedSharding(self.mesh, self.spec(path, leaf)), tree)

  def gather(self, params):
    """`params` constrained to their compute layout: the stored one without `data` (FSDP
    keeps parameters split over `data` between steps, whole for the computation)."""
    def compute(path, leaf):
      spec = self.spec(path, leaf)
      return NamedSharding(self.mesh, P(*[None if a == "data" else a for a in spec]))
    return jax.lax.with_sharding_constraint(
        params, jax.tree_util.tree_map_with_path(compute, params))

  def scatter(self, grads):
    """`grads` constrained to the stored layout (reduce-scattered over `data` for FSDP)."""
    return jax.lax.with_sharding_constraint(grads, self.shardings(grads))

  def per_device_params(self) -> int:
    """Parameters each device holds."""
    sizes = dict(self.mesh.shape)
    return sum(math.prod(self.shapes[k]) // math.prod(sizes[a] for a in s if a)
               for k, s in self.specs.items())

  def describe(self) -> str:
    sharded = sum(1 for s in self.specs.values() if any(s))
    return (f"layout {self.name}: {sharded} of {len(self.specs)} parameter arrays sharded, "
            f"{self.per_device_params():,} of {sum(map(math.prod, self.shapes.values())):,} "
            "parameters per device")

  def table(self) -> str:
    return "\n".join(f"{k:24s} {str(self.shapes[k]):20s} {s}" for k, s in self.specs.items())


def batch_sharding(mesh) -> NamedSharding:
  """A batch's leading dimension split over `data` (replicated over `model`)."""
  return NamedSharding(mesh, P("data"))


def replicated(mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def place(tree, shardings):
  """`tree`'s arrays (the same values on every process) laid out by `shardings`."""
  def put(x, sharding):
    if jax.dtypes.issubdtype(getattr(x, "dtype", None), jax.dtypes.prng_key):
      data = put(jax.random.key_data(x), sharding)
      return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])
  return jax.tree.map(put, tree, shardings)


def global_batch(batch: dict, sharding: NamedSharding) -> dict:
  """The global batch from each process's rows of it."""
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}
