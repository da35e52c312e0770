"""One process of a two-process run on localhost, started by test_parallel.py:

  python tests/distributed_worker.py COORDINATOR NUM_PROCESSES PROCESS_ID WORKDIR

Trains the small CNN with FSDP over every process's devices on fixed global batches (each
process feeding its rows), then runs the whole trainer on mock Fashion-MNIST; prints one JSON
line: the losses, the parameters' sums, the mesh and the final metrics.
"""

import json
import os
import sys

sys.path[:0] = [os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                os.path.dirname(os.path.abspath(__file__))]


def main(coordinator, num_processes, process_id, workdir):
  from cnn_jax import parallel
  parallel.initialize(coordinator, int(num_processes), int(process_id))  # before any device use

  import numpy as np
  import tensorflow_datasets as tfds

  from cnn_jax import train
  from helpers import global_batches, losses_on, tiny_training

  mesh = {"layout": "fsdp", "fsdp_min_size": 1024}
  with tfds.testing.mock_data(num_examples=48):
    cfg = tiny_training("simple_cnn.py", **mesh)
    run = train.Run(cfg, os.path.join(workdir, f"steps{process_id}"))
    losses, params = losses_on(run, global_batches(cfg, 4))
    cfg = tiny_training("simple_cnn.py", steps=4, **mesh)
    final = train.train(cfg, os.path.join(workdir, "train"))
  print(json.dumps({"losses": losses, "param_sums": [float(np.sum(p)) for p in params],
                    "mesh": mesh, "final": final}), flush=True)


if __name__ == "__main__":
  main(*sys.argv[1:])
