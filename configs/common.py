"""Recipes the config files share: the papers' optimisation, ImageNet, the CPU-sized variants."""

from cnn_jax import data


def paper_sgd(cfg, batch_size: int, epochs: float):
  """Krizhevsky et al. 2012 Sec. 5, Simonyan & Zisserman 2015 Sec. 3.1: SGD with momentum 0.9,
  weight decay 5e-4, learning rate 0.01 divided by 10 when validation accuracy stops improving
  (three times)."""
  o = cfg.optim
  o.name, o.lr, o.momentum, o.weight_decay = "sgd", 0.01, 0.9, 5e-4
  o.schedule, o.decay_factor, o.plateau_max_decays = "plateau", 0.1, 3
  cfg.train.batch_size, cfg.train.epochs = batch_size, epochs
  return cfg


def adam_cosine(cfg, lr: float, batch_size: int, epochs: float):
  o = cfg.optim
  o.name, o.lr, o.weight_decay, o.schedule = "adam", lr, 0.0, "cosine"
  cfg.train.batch_size, cfg.train.epochs = batch_size, epochs
  return cfg


def imagenet(cfg):
  """ILSVRC-2012 from TFDS (prepared from the manual download: set data.manual_dir), as the
  papers used it: the 50,000 ILSVRC validation images are both what training selects on (the
  plateau schedule, Krizhevsky et al. Sec. 5) and what is reported (their test set; Simonyan &
  Zisserman Sec. 4: "the validation set is used as the test set")."""
  cfg.data.name = "imagenet2012"
  cfg.data.validation_fraction = 0.0
  cfg.data.eval_split = "validation"
  cfg.data.test_split = "validation"
  cfg.data.shuffle_buffer = 16384
  cfg.data.cache = False
  return cfg


def small_on_fashion_mnist(cfg, input_shape, width: float):
  """A CPU-sized version of a paper network: narrowed by `width`, on the vendored
  Fashion-MNIST brought to `input_shape` (padded or resized), five epochs."""
  m, p = cfg.model, cfg.data.preprocess
  m.input_shape, m.num_classes, m.width = tuple(input_shape), 10, width
  cfg.data.name = "fashion_mnist"
  cfg.data.manual_dir = data.VENDORED_FASHION_MNIST
  p.flip, p.mean, p.std = True, "channel", "channel"
  o = cfg.optim
  o.name, o.lr, o.momentum, o.weight_decay, o.schedule = "sgd", 0.02, 0.9, 5e-4, "cosine"
  cfg.train.batch_size, cfg.train.epochs = 128, 5.0
  return cfg


def split_small(arg: str, default: str) -> tuple[bool, str]:
  """'small_D' -> (True, 'D'); 'small' -> (True, default); 'D' -> (False, 'D')."""
  if arg.startswith("small"):
    return True, arg.split("_", 1)[1] if "_" in arg else default
  return False, arg
