"""LeNet-5, LeCun, Bottou, Bengio and Haffner 1998, "Gradient-based learning applied to
document recognition", Sec. II.B (Fig. 2), Table I and Appendix A.

'paper': 32x32 input; C1 6@5x5; S2 trainable subsampling; C3 16@5x5 with Table I's partial
connections; S4; C5 120@5x5; F6 84; squashing f(a) = 1.7159 tanh(2a/3) after every layer up to
F6; Euclidean RBF output units. 60,000 trainable parameters (C1 156, S2 12, C3 1,516, S4 32,
C5 48,120, F6 10,164). 'modern': ReLU, 2x2 max-pooling, a dense C3 and a dense output.
"""

from cnn_jax.models import spec as S

VARIANTS = ("paper", "modern")

# Table I: the S2 maps (0-5) that each of the 16 C3 maps sees. The first six see three
# contiguous maps, the next six four contiguous, the next three four discontinuous, the last
# all six.
C3_TABLE = (
    (0, 1, 2), (1, 2, 3), (2, 3, 4), (3, 4, 5), (0, 4, 5), (0, 1, 5),
    (0, 1, 2, 3), (1, 2, 3, 4), (2, 3, 4, 5), (0, 3, 4, 5), (0, 1, 4, 5), (0, 1, 2, 5),
    (0, 1, 3, 4), (1, 2, 4, 5), (0, 2, 3, 5),
    (0, 1, 2, 3, 4, 5),
)


def family(variant: str = "paper") -> S.Family:
  if variant == "paper":
    init = "lecun98"  # Appendix A: U(-2.4/F, 2.4/F)
    features = (
        S.ConvSpec("c1", 6, 5, padding="VALID", kernel_init=init, bias_init=init),
        S.SubsamplingSpec("s2"),
        S.PartialConvSpec("c3", C3_TABLE, 5),
        S.SubsamplingSpec("s4"),
        S.ConvSpec("c5", 120, 5, padding="VALID", kernel_init=init, bias_init=init),
    )
    head = S.HeadSpec(hidden=(("f6", 84),), output_name="output", output="rbf",
                      kernel_init=init, hidden_bias_init=init)
    return S.Family("lenet5", variant, features, head, activation="scaled_tanh",
                    input_shape=(32, 32, 1), num_classes=10)
  features = (
      S.ConvSpec("c1", 6, 5, padding="VALID"),
      S.PoolSpec("s2", 2, 2),
      S.ConvSpec("c3", 16, 5, padding="VALID"),
      S.PoolSpec("s4", 2, 2),
      S.ConvSpec("c5", 120, 5, padding="VALID"),
  )
  head = S.HeadSpec(hidden=(("f6", 84),), output_name="output", output="dense",
                    output_kernel_init="lecun")
  return S.Family("lenet5", variant, features, head, activation="relu",
                  input_shape=(32, 32, 1), num_classes=10)
