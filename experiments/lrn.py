"""Study 1: Local Response Normalisation against none.

AlexNet (Krizhevsky et al. 2012, Sec. 3.3: LRN lowers top-1 error by 1.4 points) with and
without its LRN; VGG A against A-LRN (Simonyan & Zisserman 2015, Sec. 4.1: LRN brings no gain).

  python run.py study --study=experiments/lrn.py:small    # Fashion-MNIST, ~15 min on 2 cores
  python run.py study --study=experiments/lrn.py:paper --slurm   # ImageNet
"""

from cnn_jax.study import SMALL, Study


def get_study(scale="small"):
  small = scale == "small"
  alexnet = "configs/alexnet.py:small" if small else "configs/alexnet.py:paper"
  arms = (("alexnet/lrn", {"config": alexnet, "model.norm": "paper"}),
          ("alexnet/none", {"config": alexnet, "model.norm": "none"}),
          ("vgg_A", {"config": "configs/vgg.py:small_A" if small else "configs/vgg.py:A"}),
          ("vgg_A-LRN", {"config": "configs/vgg.py:small_A-LRN" if small
                         else "configs/vgg.py:A-LRN"}))
  return {"small": Study("lrn_small", arms, base=SMALL, seeds=(0, 1),
                         title="LRN against none (Fashion-MNIST, small)"),
          "paper": Study("lrn_paper", arms, seeds=(0,),
                         title="LRN against none (ImageNet)")}[scale]
