"""The small Fashion-MNIST CNN: Conv32-Pool-Conv64-Pool-Dense100-Dense10.

3x3 'same' convolutions with ReLU, 2x2 max-pooling, then flatten and two dense layers; at
28x28x1 it has 333,526 parameters.
"""

from cnn_jax.models import spec as S

VARIANTS = ("base",)


def family(variant: str = "base") -> S.Family:
  features = (
      S.ConvSpec("conv1", 32, 3, padding="SAME"),
      S.PoolSpec("pool1", 2, 2),
      S.ConvSpec("conv2", 64, 3, padding="SAME"),
      S.PoolSpec("pool2", 2, 2),
  )
  head = S.HeadSpec(hidden=(("fc1", 100),), output_name="fc2", kernel_init="he",
                    output_kernel_init="lecun")
  return S.Family("simple_cnn", variant, features, head, activation="relu",
                  input_shape=(28, 28, 1), num_classes=10)
