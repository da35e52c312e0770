"""cnn_jax: the classic image-classification CNNs in JAX/Flax NNX, exact to their papers.

Importing it has no side effects; a program sets the process up with one explicit call,
`cnn_jax.startup.configure()`, as run.py does.
"""

__version__ = "0.1.0"
