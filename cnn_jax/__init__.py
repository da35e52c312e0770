"""cnn_jax: the classic image-classification CNNs in JAX/Flax NNX, exact to their papers."""

from cnn_jax import xla_options as _xla_options

_xla_options.apply()  # before JAX starts a backend: see xla_options

__version__ = "0.1.0"
