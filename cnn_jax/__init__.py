"""cnn_jax: the classic image-classification CNNs in JAX/Flax NNX, exact to their papers."""

__version__ = "0.1.0"
