"""Study 1: Local Response Normalisation against none.

AlexNet (Krizhevsky et al. 2012, Sec. 3.3: LRN lowers top-1 error by 1.4 points and top-5 by
1.2) with and without its LRN; VGG A against A-LRN (Simonyan & Zisserman 2015, Sec. 4.1: "local
response normalisation (A-LRN network) does not improve on the model A"; Table 3: 29.7% against
29.6% top-1).

The VGG claim is one of no difference, so it is checked as an equivalence within a margin of
SAME_MARGIN = 1.0 point of top-1 error: smaller than the 1.4-point gain AlexNet's LRN is claimed
to bring (so "the same" would exclude an AlexNet-sized effect), ten times the difference of
Table 3.

  python run.py study --study=experiments/lrn.py:small    # Fashion-MNIST, 3 seeds
  python run.py study --study=experiments/lrn.py:paper --slurm   # ImageNet

Small scale: the shared SMALL budget (2 epochs on 30% of the training split, 16,200 images
trained on, 252 updates), optim.lr tuned per arm on SMALL_LR_GRID (0.007, 0.02, 0.06) on
validation, 3 seeds: 4 arms x (3 tuning + 3 seeds) = 24 runs. Planned: 7m13s of training, 19m13s
with 30 s of start-up a run, one run after another (`--plan --images_per_sec=` a JSON of the
committed lrn table's rates: AlexNet 3,227 and 3,055, VGG A 1,750 (its two tables' mean), A-LRN
974 images/s). The VGG arms, 10.8M MACs, are not converged at this budget.
"""

from cnn_jax.study import SMALL, SMALL_LR_GRID, SMALL_SEEDS, Comparison, Study

SAME_MARGIN = 1.0  # points of top-1 error within which VGG A-LRN and A count as the same
KRIZHEVSKY = "Krizhevsky et al. 2012, Sec. 3.3: response normalization reduces top-1 and top-5 " \
             "error rates by 1.4% and 1.2%"
COMPARISONS = (
    Comparison(a="alexnet/lrn", b="alexnet/none", metric="top1_error", claim="lower", size=1.4,
               source=KRIZHEVSKY),
    Comparison(a="alexnet/lrn", b="alexnet/none", metric="top5_error", claim="lower", size=1.2,
               source=KRIZHEVSKY),
    Comparison(a="vgg_A-LRN", b="vgg_A", metric="top1_error", claim="same", size=SAME_MARGIN,
               source="Simonyan & Zisserman 2015, Sec. 4.1: LRN does not improve on model A "
                      f"(equivalence margin {SAME_MARGIN:g} point, chosen here)"),
)


def get_study(scale="small"):
  small = scale == "small"
  alexnet = "configs/alexnet.py:small" if small else "configs/alexnet.py:paper"
  arms = (("alexnet/lrn", {"config": alexnet, "model.norm": "paper"}),
          ("alexnet/none", {"config": alexnet, "model.norm": "none"}),
          ("vgg_A", {"config": "configs/vgg.py:small_A" if small else "configs/vgg.py:A"}),
          ("vgg_A-LRN", {"config": "configs/vgg.py:small_A-LRN" if small
                         else "configs/vgg.py:A-LRN"}))
  return {"small": Study("lrn_small", arms, base=SMALL, seeds=SMALL_SEEDS,
                         tune=SMALL_LR_GRID, comparisons=COMPARISONS,
                         title="LRN against none (Fashion-MNIST, small)"),
          "paper": Study("lrn_paper", arms, seeds=(0,), comparisons=COMPARISONS,
                         title="LRN against none (ImageNet)")}[scale]
