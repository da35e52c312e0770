"""The ablation knobs: stem, pooling, normalisation, head, width, activation, dtype, dropout."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from cnn_jax import models
from cnn_jax.errors import ConfigError
from helpers import abstract_logits, apply, build_and_apply, layer, model_cfg, summary


@pytest.mark.parametrize("variant,size", [("paper", 227), ("torchvision", 224)])
def test_stacked_3x3_stem_has_the_paper_stems_receptive_field(variant, size):
  paper, stacked = summary("alexnet", variant), summary("alexnet", variant, stem="stacked3x3")
  stem = [r for r in stacked.layers if r.name.startswith("conv1_") and r.kind == "Conv"]
  assert [r.name for r in stem] == ["conv1_1", "conv1_2", "conv1_3", "conv1_4"]
  assert stem[-1].receptive_field == layer(paper, "conv1").receptive_field == (11, 11)
  assert stem[-1].effective_stride == layer(paper, "conv1").effective_stride == (4, 4)
  assert stem[-1].output_shape == layer(paper, "conv1").output_shape
  assert stacked.layers[-1].output_shape == paper.layers[-1].output_shape


def test_stacked_stem_for_lenet_and_refused_for_vgg():
  s = summary("lenet5", "paper", stem="stacked3x3")
  assert layer(s, "c1_2").receptive_field == (5, 5)
  assert layer(s, "c1_2").output_shape == (28, 28, 6)
  with pytest.raises(ConfigError, match="model.stem"):
    summary("vgg", "A", stem="stacked3x3")


def test_pooling_overlap_knob():
  over, non = summary("alexnet", "paper"), summary("alexnet", "paper", pooling="non_overlapping")
  assert layer(over, "pool1").receptive_field == (19, 19)  # 11 + (3 - 1) * 4
  assert layer(non, "pool1").receptive_field == (15, 15)  # 11 + (2 - 1) * 4
  # AlexNet's maps keep their sizes either way (55 -> 27 -> 13 -> 6), as Sec. 3.4 compares.
  assert layer(non, "pool5").output_shape == layer(over, "pool5").output_shape == (6, 6, 256)
  vgg = summary("vgg", "A", pooling="overlapping")
  assert layer(vgg, "pool1").output_shape == (111, 111, 64)


def test_norm_knob():
  plain = summary("alexnet", "paper", norm="none")
  assert not any(r.kind == "LRN" for r in plain.layers)
  assert plain.params == summary("alexnet", "paper").params
  names = lambda s: [r.name for r in s.layers]  # noqa: E731
  assert names(summary("vgg", "A", norm="lrn")) == names(summary("vgg", "A-LRN"))
  assert names(summary("vgg", "A-LRN", norm="none")) == names(summary("vgg", "A"))
  bn = summary("vgg", "A", norm="batchnorm")
  convs = [r for r in bn.layers if r.kind == "Conv"]
  assert [r.name for r in bn.layers if r.kind == "BatchNorm"] == [f"{c.name}_bn" for c in convs]
  extra = sum(2 * c.output_shape[-1] for c in convs)  # scale and bias per channel
  assert bn.params == summary("vgg", "A").params + extra
  assert bn.constants == extra  # running mean and variance


def test_batchnorm_trains_on_batch_statistics_and_evaluates_on_running_ones():
  cfg = model_cfg("simple_cnn", "base", norm="batchnorm")
  model = models.build(cfg)
  x = jax.random.normal(jax.random.key(0), (8, 28, 28, 1)) * 3 + 1
  before = np.asarray(model.conv1_bn.mean[...]).copy()
  eval_out = apply(models.view(model, train=False), x)
  np.testing.assert_array_equal(before, model.conv1_bn.mean[...])  # evaluation leaves them
  train_out = apply(models.view(model, train=True), x)
  assert not np.allclose(before, model.conv1_bn.mean[...])  # training updates them
  assert not np.allclose(eval_out, train_out)


def test_dropout_only_in_training():
  cfg = model_cfg("vgg", "A", input_shape=(32, 32, 3), width=0.125, num_classes=5)
  model = models.build(cfg)
  x = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
  ev = models.view(model, train=False)
  np.testing.assert_array_equal(apply(ev, x), apply(ev, x))
  tr = models.view(model, train=True)
  assert not np.allclose(apply(tr, x), apply(tr, x))
  assert not any(r.kind == "Dropout" for r in summary("vgg", "A", dropout=0.0).layers)


def test_gap_head_is_independent_of_input_size():
  a = summary("vgg", "A", head="gap", input_shape=(64, 64, 3))
  b = summary("vgg", "A", head="gap", input_shape=(96, 96, 3))
  assert a.params == b.params
  assert layer(a, "fc6").params == 512 * 4096 + 4096


def test_conv_head_equals_fc_head_and_evaluates_densely():
  """Simonyan & Zisserman Sec. 3.2: FC layers converted to convolutions give the same net at
  the training size, and a class score map, averaged, at larger sizes."""
  kw = dict(input_shape=(64, 64, 3), width=0.125, num_classes=5, dropout=0.0)
  fc_cfg, conv_cfg = model_cfg("vgg", "A", **kw), model_cfg("vgg", "A", head="conv", **kw)
  assert summary("vgg", "A", **kw).params == summary("vgg", "A", head="conv", **kw).params
  fc, conv = models.build(fc_cfg), models.build(conv_cfg)
  for name in conv.layer_names:  # copy every weight, reshaping FC kernels into conv kernels
    src, dst = getattr(fc, name, None), getattr(conv, name)
    for kind in ("kernel", "bias"):
      if hasattr(src, kind):
        getattr(dst, kind)[...] = getattr(src, kind)[...].reshape(getattr(dst, kind).shape)
  x = jax.random.normal(jax.random.key(0), (2, 64, 64, 3))
  np.testing.assert_allclose(apply(models.view(conv, train=False), x),
                             apply(models.view(fc, train=False), x), rtol=1e-4, atol=1e-5)
  big = jax.random.normal(jax.random.key(1), (2, 128, 128, 3))
  assert apply(models.view(conv, train=False), big).shape == (2, 5)


def test_activation_output_and_init_knobs():
  s = summary("simple_cnn", "base", activation="tanh")
  assert layer(s, "conv1_tanh").kind == "Activation"
  dense_out = summary("lenet5", "paper", output="dense")
  assert layer(dense_out, "output").kind == "Dense" and layer(dense_out, "output").params == 850
  rbf_out = summary("lenet5", "modern", output="rbf")
  assert layer(rbf_out, "output").kind == "RBF"
  paper = models.build(model_cfg("alexnet", "paper", input_shape=(67, 67, 3), width=0.125))
  assert np.all(paper.conv2.bias[...] == 1.0) and np.all(paper.conv1.bias[...] == 0.0)
  assert 0.005 < float(jnp.std(paper.fc6.kernel[...])) < 0.015  # N(0, 0.01)
  he = models.build(model_cfg("alexnet", "paper", input_shape=(67, 67, 3), width=0.125,
                              init="he"))
  assert np.all(he.conv2.bias[...] == 0.0)


def test_bfloat16_compute_keeps_float32_parameters():
  kw = dict(input_shape=(32, 32, 3), width=0.125, num_classes=5, dropout=0.0)
  x = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
  f32, _ = build_and_apply(model_cfg("vgg", "A", **kw), x)
  b16, model = build_and_apply(model_cfg("vgg", "A", dtype="bfloat16", **kw), x)
  assert b16.dtype == jnp.float32  # logits
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(nnx.state(model, nnx.Param)))
  conv_out = nnx.eval_shape(lambda m, v: m(v), model.conv1_1, x)
  assert conv_out.dtype == jnp.bfloat16
  np.testing.assert_allclose(b16, f32, rtol=0.1, atol=0.05)


def test_width_needs_a_scalable_table():
  with pytest.raises(ConfigError, match="model.width"):
    summary("lenet5", "paper", width=2.0)
  two_tower = summary("alexnet", "paper", width=0.3)
  assert all(r.output_shape[-1] % 2 == 0 for r in two_tower.layers
             if r.name in ("conv2", "conv4", "conv5"))


def test_abstract_logits_for_every_head():
  for head in ("fc", "gap", "conv"):
    assert abstract_logits(model_cfg("alexnet", "paper", head=head)).shape == (2, 1000)
  model = models.abstract(model_cfg("vgg", "D"))
  assert all(isinstance(x, jax.ShapeDtypeStruct)
             for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
