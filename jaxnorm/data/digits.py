"""scikit-learn's bundled 8x8 digits packaged as a local TFDS builder.

The 1,797 images ship inside the scikit-learn wheel, so preparing this dataset needs no
network. Packaging them as a ``tfds.core.GeneratorBasedBuilder`` written to array_record
files lets ``digits`` be read by exactly the ``tfds.data_source`` path used for MNIST and
CIFAR. Preparation happens on first use, under an exclusive file lock in the data dir so
that two processes starting together do not race.
"""

import contextlib
import fcntl
import io
import os
from collections.abc import Iterator

import numpy as np
import PIL.Image
import tensorflow_datasets as tfds
from sklearn import datasets as sklearn_datasets
from sklearn import model_selection

DIGITS_BUILDER_NAME = 'sklearn_digits'
"""TFDS name under which ``digits`` is stored: ``<data_dir>/sklearn_digits/<version>/``."""

DIGITS_TEST_FRACTION = 0.2
"""Fraction of the 1,797 images in the stratified test split (360 test, 1,437 train)."""

DIGITS_SPLIT_SEED = 0
"""``random_state`` of the stratified ``train_test_split``; fixed so every user gets one split."""

_SKLEARN_MAX_INTENSITY = 16
_LOCK_FILE_NAME = f'{DIGITS_BUILDER_NAME}.lock'


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
        train_indices, test_indices = model_selection.train_test_split(
            np.arange(len(digits.target)),
            test_size=DIGITS_TEST_FRACTION,
            random_state=DIGITS_SPLIT_SEED,
            stratify=digits.target,
        )
        return {
            'train': self._generate_examples(images, digits.target, train_indices),
            'test': self._generate_examples(images, digits.target, test_indices),
        }

    def _generate_examples(
        self, images: np.ndarray, labels: np.ndarray, indices: np.ndarray
    ) -> Iterator[tuple[int, dict]]:
        for index in indices:
            # Encoded PNG bytes are handed to the Image feature because its own numpy
            # encoder runs tf.image.encode_png, i.e. it needs TensorFlow.
            png = io.BytesIO()
            PIL.Image.fromarray(images[index]).save(png, format='png')
            yield int(index), {'image': png.getvalue(), 'label': int(labels[index])}


@contextlib.contextmanager
def _exclusive_lock(lock_path: str) -> Iterator[None]:
    """Holds an exclusive ``flock`` on ``lock_path``; blocks while another holder has it."""
    with open(lock_path, 'a') as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def prepare_digits(data_dir: str) -> None:
    """Writes the digits dataset to ``data_dir`` unless it is already there.

    Safe to call from several processes at once: one prepares while the others wait on a
    lock file in ``data_dir`` and then find the dataset ready. TFDS itself generates into
    a temporary ``incomplete.*`` directory and renames it on success, so an interrupted
    preparation never leaves a dataset that looks prepared.

    Args:
        data_dir: TFDS data directory; created if missing.
    """
    builder = SklearnDigits(data_dir=data_dir, file_format='array_record')
    # Checked before locking so that reading from a read-only data dir works.
    if builder.is_prepared():
        return
    os.makedirs(data_dir, exist_ok=True)
    with _exclusive_lock(os.path.join(data_dir, _LOCK_FILE_NAME)):
        # Another process may have finished the preparation while this one waited.
        if not builder.is_prepared():
            builder.download_and_prepare(
                download_config=tfds.download.DownloadConfig(try_download_gcs=False)
            )
