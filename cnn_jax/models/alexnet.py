"""AlexNet, Krizhevsky, Sutskever and Hinton 2012, "ImageNet classification with deep
convolutional neural networks", Sec. 3 (Fig. 2) and Sec. 5.

'paper': 227x227x3 input (the paper's "224" does not give its 55x55 maps); conv1 96@11x11
stride 4; ReLU; LRN; overlapping max-pool 3/2; conv2 256@5x5 in two towers (each half of its
maps sees only its own tower's 48 maps of conv1); LRN; pool; conv3 384@3x3 over both towers;
conv4 384@3x3 and conv5 256@3x3 in two towers; pool; FC 4096, 4096 with dropout 0.5; 1000.
60,965,224 parameters. Initialisation (Sec. 5): weights N(0, 0.01), biases 1 in conv2, conv4,
conv5 and the hidden FC layers, 0 elsewhere.
'one_tower': the same with no grouping (62,378,344). 'torchvision': torchvision's single-tower
variant (64-192-384-256-256, no LRN, 224x224 input; 61,100,840).
"""

from cnn_jax.models import spec as S

VARIANTS = ("paper", "one_tower", "torchvision")


def family(variant: str = "paper") -> S.Family:
  if variant == "torchvision":
    features = (
        S.ConvSpec("conv1", 64, 11, stride=4, padding=2),
        S.PoolSpec("pool1", 3, 2),
        S.ConvSpec("conv2", 192, 5, padding=2),
        S.PoolSpec("pool2", 3, 2),
        S.ConvSpec("conv3", 384, 3, padding=1),
        S.ConvSpec("conv4", 256, 3, padding=1),
        S.ConvSpec("conv5", 256, 3, padding=1),
        S.PoolSpec("pool5", 3, 2),
    )
    head = S.HeadSpec(hidden=(("fc6", 4096), ("fc7", 4096)), output_name="fc8")
    return S.Family("alexnet", variant, features, head, input_shape=(224, 224, 3))
  towers = 2 if variant == "paper" else 1
  w, one = "normal:0.01", "constant:1"
  features = (
      S.ConvSpec("conv1", 96, 11, stride=4, padding="VALID", kernel_init=w, bias_init="zeros"),
      S.LRNSpec("lrn1", groups=towers),
      S.PoolSpec("pool1", 3, 2),
      S.ConvSpec("conv2", 256, 5, padding=2, groups=towers, kernel_init=w, bias_init=one),
      S.LRNSpec("lrn2", groups=towers),
      S.PoolSpec("pool2", 3, 2),
      S.ConvSpec("conv3", 384, 3, padding=1, kernel_init=w, bias_init="zeros"),
      S.ConvSpec("conv4", 384, 3, padding=1, groups=towers, kernel_init=w, bias_init=one),
      S.ConvSpec("conv5", 256, 3, padding=1, groups=towers, kernel_init=w, bias_init=one),
      S.PoolSpec("pool5", 3, 2),
  )
  head = S.HeadSpec(hidden=(("fc6", 4096), ("fc7", 4096)), output_name="fc8", kernel_init=w,
                    hidden_bias_init=one)
  return S.Family("alexnet", variant, features, head, input_shape=(227, 227, 3))
