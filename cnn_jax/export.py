"""A checkpoint's parameters to a portable file, keyed by the paper's layer names.

  python -m cnn_jax.export --workdir=DIR --out=FILE.npz [--checkpoint=latest|STEP]
  python -m cnn_jax.export --workdir=DIR --out=FILE.safetensors

Keys are the model's parameter paths, which are its paper's layer names: 'conv1/kernel',
'fc6/bias', VGG's 'conv3_2/kernel', a batch norm's 'conv1_1_bn/mean'; kernels in cnn_jax's
layout (HWIO; FC (in, out), the first FC layer's rows in NHWC flatten order). The file loads
back with `model.init_from=FILE` (and numpy.load or safetensors.numpy.load_file anywhere).
`--workdir` takes a work directory, its checkpoints/ folder or one step's folder. A mistake
prints one line and exits with status 2, writing nothing.
"""

from __future__ import annotations

import argparse
import os
import sys

from cnn_jax import weights_io
from cnn_jax.errors import UserError


def export(workdir: str, out: str, checkpoint: str = "latest") -> dict:
  """Writes the parameters of `workdir`'s checkpoint to `out`; returns what it wrote."""
  if not out.endswith(weights_io.FILE_FORMATS):
    raise UserError(f"--out={out!r} must end in {' or '.join(weights_io.FILE_FORMATS)}")
  path = workdir
  if checkpoint != "latest":
    if not checkpoint.isdigit():
      raise UserError(f"--checkpoint={checkpoint!r} must be latest or a step number")
    path = os.path.join(workdir, "checkpoints", checkpoint)
    if not os.path.isdir(os.path.join(path, "state")):
      raise UserError(f"--checkpoint={checkpoint}: {workdir} has no checkpoint of that step; "
                      "see its checkpoints/ folder")
  params = weights_io.read_checkpoint(path, key="--workdir")
  weights_io.write(params, out)
  return {"out": out, "arrays": len(params), "layers": weights_io.layer_names(params),
          "values": int(sum(v.size for v in params.values()))}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m cnn_jax.export", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--out", required=True)
  parser.add_argument("--checkpoint", default="latest")
  parser.add_argument("--config", default=None, help="accepted for symmetry with run.py; "
                      "the checkpoint holds its own names")
  args = parser.parse_args(argv)
  try:
    result = export(args.workdir, args.out, args.checkpoint)
  except UserError as e:
    print(f"error: {str(e).strip().splitlines()[0]}", file=sys.stderr, flush=True)
    return 2
  print(f"wrote {result['arrays']} arrays ({result['values']:,} values) of "
        f"{', '.join(result['layers'])} to {result['out']}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
