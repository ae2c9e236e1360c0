"""Datasets through tensorflow-datasets, offline and without TensorFlow.

Every dataset is read one way: ``tfds.data_source(name, split=..., data_dir=...)`` on
array_record files, which needs neither TensorFlow nor network, then held in memory as an
:class:`ArrayDataset` and batched in numpy by :class:`BatchIterator`.

* ``digits``, the embedded default, is scikit-learn's bundled 8x8 digits (1,797 real
  images) packaged as a local TFDS builder. It is written to
  ``<data_dir>/sklearn_digits/1.0.0/`` on first use, in well under a second, with no network.
* Any TFDS image-classification dataset (``mnist``, ``fashion_mnist``, ``cifar10``,
  ``cifar100``, ...) is read the same way once prepared. Preparing downloads the data, so it
  needs internet and, for most TFDS builders, TensorFlow for that one step::

      python -m jaxnorm.data prepare cifar10 [--data-dir DIR]

  :func:`load` never downloads: a dataset that is not prepared raises
  :class:`DatasetNotPreparedError` naming this command.

The data dir is the ``data_dir`` argument, else ``$TFDS_DATA_DIR``, else
``~/tensorflow_datasets``. Preparation of ``digits`` takes an ``fcntl`` lock in the data dir
(POSIX only), so several processes may start at once.
"""

from jaxnorm.data.batching import AUGMENTATIONS, BatchIterator, random_crop
from jaxnorm.data.digits import SklearnDigits, prepare_digits
from jaxnorm.data.loading import (
    DEFAULT_AUGMENT,
    DIGITS,
    PREPARE_COMMAND,
    RESIZE_METHODS,
    ArrayDataset,
    StandardizedSplits,
    DatasetNotPreparedError,
    default_augment,
    load,
    load_standardized,
    prepare,
    resolve_data_dir,
)

__all__ = [
    'AUGMENTATIONS',
    'DEFAULT_AUGMENT',
    'DIGITS',
    'PREPARE_COMMAND',
    'RESIZE_METHODS',
    'ArrayDataset',
    'BatchIterator',
    'DatasetNotPreparedError',
    'SklearnDigits',
    'StandardizedSplits',
    'default_augment',
    'load',
    'load_standardized',
    'prepare',
    'prepare_digits',
    'random_crop',
    'resolve_data_dir',
]
