"""Data sets: the bundled ones, measured ones, and loaders of a user's own files.

The code lives in :mod:`physnn.data.datasets`; its public names are re-exported here.
"""

from physnn.data.datasets import (
    DATASETS,
    Dataset,
    default_shared_data,
    load_dataset,
    load_digits,
    load_mnist5k,
    load_mnist_idx,
    load_vowels,
    read_idx,
)

__all__ = [
    "Dataset",
    "DATASETS",
    "load_dataset",
    "load_digits",
    "load_vowels",
    "load_mnist_idx",
    "load_mnist5k",
    "read_idx",
    "default_shared_data",
]
