"""gpunet.data: datasets, download/cache, preprocessing and the DataLoader.

    ds = gn.data.load("mnist", split="train")             # host uint8 images, int64 labels
    train, val = gn.data.random_split(ds, 0.1, seed=0)
    loader = gn.data.DataLoader(train, batch_size=128, device=dev, seed=0)

Modules: datasets.py (Dataset, load), idx.py (MNIST-family IDX), cifar.py (CIFAR-10
binary), digits.py (the packaged UCI digits), fetch.py (search order, download,
safe archive extraction), loader.py (DataLoader), transforms.py (scaling,
standardisation, one-hot, splits, on-device augmentation).
"""
from .datasets import NAMES, SPLITS, Dataset, load  # noqa: F401
from .fetch import cache_root, candidate_dirs, download, safe_extract  # noqa: F401
from .loader import DataLoader  # noqa: F401
from .transforms import (BatchRandom, CenterCrop, Compose, Normalize, RandomCrop,  # noqa: F401
                         RandomFlip, Transform, channel_stats, one_hot, random_split,
                         scale_to_unit)
from . import transforms  # noqa: F401
from . import custom  # noqa: F401
