"""VGG's training procedure for its deeper nets (Sec. 3.1): B to E start from a trained A,
its first four convolutional layers and its three FC layers copied, the rest random."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from cnn_jax import train, transfer
from cnn_jax.errors import UserError
from helpers import load_config


def small_vgg(variant, steps=2, **model):
  cfg = load_config("vgg.py", f"small_{variant}")
  cfg.model.update({"width": 0.0625, **model})  # 4 to 32 maps: a second of training
  cfg.data.preprocess.update(pad=2)
  cfg.train.update(batch_size=8, eval_batch_size=16, steps=steps, eval_every_steps=steps,
                   log_every_steps=1)
  cfg.mesh.data = 1
  return cfg


def params_of(run):
  import jax
  return {"/".join(str(k.key) for k in path if hasattr(k, "key")): np.asarray(v)
          for path, v in jax.tree_util.tree_flatten_with_path(run.state.params)[0]}


@pytest.fixture
def trained_a(tmp_path):
  with tfds.testing.mock_data(num_examples=48):
    train.train(small_vgg("A"), str(tmp_path / "a"))
  return tmp_path / "a"


def test_b_and_d_start_from_a_copied_layers_equal_the_rest_differ(trained_a, tmp_path):
  source = transfer.source_params(str(trained_a))
  with tfds.testing.mock_data(num_examples=48):
    for variant in ("B", "D"):
      plain = params_of(train.Run(small_vgg(variant), str(tmp_path / f"{variant}_plain")))
      run = train.Run(small_vgg(variant, init_from=str(trained_a)), str(tmp_path / variant))
      got = params_of(run)
      copied = {k for k in got if k.split("/")[0] in
                ("conv1_1", "conv2_1", "conv3_1", "conv3_2", "fc6", "fc7", "fc8")}
      assert len(copied) == 14 and set(run.steps.copied) == copied
      for k in copied:
        np.testing.assert_array_equal(got[k], source[k])
      for k in set(got) - copied:  # the intermediate layers: random, as initialised
        np.testing.assert_array_equal(got[k], plain[k])
        assert k not in source or got[k].shape != source[k].shape or \
            not np.array_equal(got[k], source[k])
      run.close()


def test_a_shape_mismatch_or_a_missing_layer_names_both(trained_a, tmp_path):
  with tfds.testing.mock_data(num_examples=48):
    with pytest.raises(UserError, match=r"conv1_1/bias is \(4,\) in its checkpoint but "
                                        r"\(8,\) in this model"):
      train.Run(small_vgg("B", init_from=str(trained_a), width=0.125), str(tmp_path / "w"))
    with pytest.raises(UserError, match=r"conv1_2/bias is not in its checkpoint"):
      train.Run(small_vgg("B", init_from=str(trained_a), init_from_layers="conv1_2/"),
                str(tmp_path / "m"))
