"""scikit-learn's bundled 8x8 digits packaged as a local TFDS builder.

The 1,797 images ship inside the scikit-learn wheel, so preparing this dataset needs no
network. Packaging them as a ``tfds.core.GeneratorBasedBuilder`` written to array_record
files lets ``digits`` be read by exactly the ``tfds.data_source`` path used for MNIST and
CIFAR. Preparation happens on first use (:func:`jaxnorm.data.local.prepare_builder`).
"""

from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds
from sklearn import datasets as sklearn_datasets

from jaxnorm.data import local

DIGITS_BUILDER_NAME = 'sklearn_digits'
"""TFDS name under which ``digits`` is stored: ``<data_dir>/sklearn_digits/<version>/``."""

DIGITS_TEST_FRACTION = 0.2
"""Fraction of the 1,797 images in the stratified test split (360 test, 1,437 train)."""

_SKLEARN_MAX_INTENSITY = 16


class SklearnDigits(tfds.core.GeneratorBasedBuilder):
    """The UCI optical-recognition digits bundled with scikit-learn, as a TFDS dataset.

    Features: ``image`` is ``Image(shape=(8, 8, 1))`` uint8, the 0..16 counts of
    scikit-learn scaled by ``round(v * 255 / 16)``; ``label`` is ``ClassLabel(num_classes=10)``.
    Splits: a stratified 80/20 ``train``/``test`` split from
    ``sklearn.model_selection.train_test_split(random_state=0, stratify=labels)``.
    Example keys are the indices into ``sklearn.datasets.load_digits()``.
    """

    VERSION = tfds.core.Version('1.0.0')
    RELEASE_NOTES = {'1.0.0': 'Stratified 80/20 split of sklearn.datasets.load_digits().'}
    # TFDS only uses code_path to find a download-checksums file, and computing it for a
    # builder outside tensorflow_datasets imports the importlib_resources backport, which
    # TFDS does not declare on Python >= 3.9 (tensorflow/datasets#11212). Nothing is
    # downloaded here, so there is no checksums file to find.
    code_path = None

    def _info(self) -> tfds.core.DatasetInfo:
        # DatasetInfo is built directly: dataset_info_from_configs() would look for
        # metadata files (README, CITATIONS.bib) that this builder does not ship.
        return tfds.core.DatasetInfo(
            builder=self,
            description=(
                '1,797 grayscale 8x8 handwritten digits (the test part of the UCI Optical '
                'Recognition of Handwritten Digits set) as bundled with scikit-learn.'
            ),
            features=tfds.features.FeaturesDict({
                'image': tfds.features.Image(shape=(8, 8, 1)),
                'label': tfds.features.ClassLabel(num_classes=10),
            }),
            supervised_keys=('image', 'label'),
            homepage='https://archive.ics.uci.edu/dataset/80',
            citation=(
                '@misc{alpaydin1998digits, author={Alpaydin, E. and Kaynak, C.}, '
                'title={Optical Recognition of Handwritten Digits}, year={1998}, '
                'howpublished={UCI Machine Learning Repository}}'
            ),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        del dl_manager  # The data ships with scikit-learn; nothing to download.
        digits = sklearn_datasets.load_digits()
        images = np.round(digits.images * 255 / _SKLEARN_MAX_INTENSITY).astype(np.uint8)
        train_indices, test_indices = local.stratified_split(digits.target, DIGITS_TEST_FRACTION)
        return {
            'train': self._generate_examples(images, digits.target, train_indices),
            'test': self._generate_examples(images, digits.target, test_indices),
        }

    def _generate_examples(
        self, images: np.ndarray, labels: np.ndarray, indices: np.ndarray
    ) -> Iterator[tuple[int, dict]]:
        for index in indices:
            image = images[index][..., None]
            yield int(index), {'image': local.png_bytes(image), 'label': int(labels[index])}


def prepare_digits(data_dir: str) -> None:
    """Writes the digits dataset to ``data_dir`` unless it is already there.

    Safe to call from several processes at once (see :func:`jaxnorm.data.local.prepare_builder`).

    Args:
        data_dir: TFDS data directory; created if missing.
    """
    local.prepare_builder(SklearnDigits(data_dir=data_dir, file_format='array_record'))
