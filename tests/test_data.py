"""Tests for jaxnorm.data: the digits builder, TFDS reading and resizing.

References are independent of the implementation: scikit-learn's own digits arrays and
split, numpy formulas written out here, and ``tfds.data_source`` read directly.
"""

import collections
import hashlib
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds
from sklearn import datasets as sklearn_datasets
from sklearn import model_selection

from jaxnorm import data
from jaxnorm.data import __main__ as data_cli

REPO_ROOT = Path(__file__).resolve().parents[1]
NUM_SKLEARN_DIGITS = 1797


@pytest.fixture(scope='session')
def digits_dir(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp('tfds_data'))


@pytest.fixture(scope='session')
def digits_train(digits_dir) -> data.ArrayDataset:
    return data.load('digits', 'train', data_dir=digits_dir)


@pytest.fixture(scope='session')
def digits_test(digits_dir) -> data.ArrayDataset:
    return data.load('digits', 'test', data_dir=digits_dir)


def _uint8_keys(images: np.ndarray, labels: np.ndarray) -> list[bytes]:
    """One hashable key per example: the 0..255 pixels and the label."""
    pixels = np.round(np.asarray(images) * 255).astype(np.uint8).reshape(len(labels), -1)
    return [row.tobytes() + bytes([label]) for row, label in zip(pixels, labels)]


def _sklearn_keys(indices=slice(None)) -> list[bytes]:
    digits = sklearn_datasets.load_digits()
    return _uint8_keys(digits.images[indices] / 16, digits.target[indices])


def _dataset_digest(dataset: data.ArrayDataset) -> str:
    return hashlib.sha256(dataset.images.tobytes() + dataset.labels.tobytes()).hexdigest()


# ----------------------------------------------------------------------------- digits


def test_digits_splits_partition_the_sklearn_images(digits_train, digits_test):
    assert len(digits_train) + len(digits_test) == NUM_SKLEARN_DIGITS
    train_keys = _uint8_keys(digits_train.images, digits_train.labels)
    test_keys = _uint8_keys(digits_test.images, digits_test.labels)
    assert not set(train_keys) & set(test_keys)
    # Same multiset as scikit-learn's images with their labels.
    assert collections.Counter(train_keys + test_keys) == collections.Counter(_sklearn_keys())

    # Loaded pixels, rescaled to 0..16, equal scikit-learn's within the uint8 rounding.
    digits = sklearn_datasets.load_digits()
    sklearn_order = np.argsort(_sklearn_keys())
    loaded_images = np.concatenate([digits_train.images, digits_test.images])
    loaded_order = np.argsort(train_keys + test_keys)
    np.testing.assert_allclose(
        loaded_images[loaded_order, :, :, 0] * 16,
        digits.images[sklearn_order],
        atol=0.5 * 16 / 255 + 1e-5,
    )


def test_digits_test_split_is_sklearn_stratified_80_20(digits_test):
    digits = sklearn_datasets.load_digits()
    _, expected_test = model_selection.train_test_split(
        np.arange(NUM_SKLEARN_DIGITS), test_size=0.2, random_state=0, stratify=digits.target
    )
    assert collections.Counter(_uint8_keys(digits_test.images, digits_test.labels)) == (
        collections.Counter(_sklearn_keys(expected_test))
    )
    class_totals = np.bincount(digits.target, minlength=10)
    class_in_test = np.bincount(digits_test.labels, minlength=10)
    assert np.all(np.abs(class_in_test - 0.2 * class_totals) <= 1)


def test_digits_arrays_have_the_documented_types(digits_train, digits_dir):
    assert digits_train.images.shape == (len(digits_train), 8, 8, 1)
    assert digits_train.images.dtype == np.float32
    assert digits_train.labels.dtype == np.int32
    assert 0 <= digits_train.images.min() and digits_train.images.max() == 1
    assert digits_train.num_classes == 10 and digits_train.name == 'digits'
    version_dir = Path(digits_dir, 'sklearn_digits', '1.0.0')
    assert sorted(path.name for path in version_dir.glob('*.array_record*'))


def test_digits_split_slicing_goes_through_tfds(digits_dir, digits_train):
    first_tenth = data.load('digits', 'train[:10%]', data_dir=digits_dir)
    assert len(first_tenth) == round(len(digits_train) / 10)
    np.testing.assert_array_equal(first_tenth.images, digits_train.images[:len(first_tenth)])


def test_interrupted_preparation_leaves_no_dataset(tmp_path, monkeypatch):
    original_generator = data.SklearnDigits._generate_examples

    def failing_generator(self, images, labels, indices):
        yield from original_generator(self, images, labels, indices[:5])
        raise RuntimeError('simulated crash during generation')

    monkeypatch.setattr(data.SklearnDigits, '_generate_examples', failing_generator)
    with pytest.raises(RuntimeError, match='simulated crash'):
        data.prepare_digits(str(tmp_path))
    assert not data.SklearnDigits(data_dir=str(tmp_path)).is_prepared()
    assert not list(tmp_path.rglob('*incomplete*'))
    assert not list(tmp_path.rglob('*.array_record*'))

    monkeypatch.undo()
    assert len(data.load('digits', 'test', data_dir=str(tmp_path))) == 360


@pytest.mark.slow
def test_concurrent_preparations_agree(tmp_path, digits_train, digits_test):
    data_dir, go_file = tmp_path / 'tfds', tmp_path / 'go'
    child = textwrap.dedent(f"""
        import hashlib, pathlib, sys, time
        from jaxnorm import data
        pathlib.Path(sys.argv[1]).touch()
        # Both processes start preparing at the same moment.
        while not pathlib.Path({str(go_file)!r}).exists():
            time.sleep(0.001)
        for split in ('train', 'test'):
            dataset = data.load('digits', split, data_dir={str(data_dir)!r})
            digest = hashlib.sha256(dataset.images.tobytes() + dataset.labels.tobytes())
            print('digest', digest.hexdigest())
    """)
    environment = {**os.environ, 'PYTHONPATH': str(REPO_ROOT), 'JAX_PLATFORMS': 'cpu'}
    ready_files = [tmp_path / f'ready{index}' for index in range(2)]
    processes = [
        subprocess.Popen(
            [sys.executable, '-c', child, str(ready_file)],
            env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for ready_file in ready_files
    ]
    deadline = time.monotonic() + 60
    while not all(path.exists() for path in ready_files) and time.monotonic() < deadline:
        time.sleep(0.01)
    go_file.touch()
    outputs = [process.communicate(timeout=120) for process in processes]
    for process, (_, stderr) in zip(processes, outputs):
        assert process.returncode == 0, stderr[-2000:]
    expected = [_dataset_digest(digits_train), _dataset_digest(digits_test)]
    for stdout, _ in outputs:
        # TFDS prints its own progress lines to stdout too.
        digests = [line.split()[1] for line in stdout.splitlines() if line.startswith('digest ')]
        assert digests == expected


# ----------------------------------------------------------------------------- ArrayDataset


def test_channel_stats_match_numpy(digits_train):
    rng = np.random.default_rng(0)
    colour = data.ArrayDataset(rng.random((7, 5, 4, 3)), np.zeros(7), num_classes=1, name='rgb')
    for dataset in (digits_train, colour):
        mean, std = dataset.channel_stats()
        pixels = dataset.images.astype(np.float64)
        expected_mean = pixels.sum(axis=(0, 1, 2)) / np.prod(pixels.shape[:3])
        expected_std = np.sqrt(((pixels - expected_mean) ** 2).mean(axis=(0, 1, 2)))
        assert mean.dtype == std.dtype == np.float32
        assert mean.shape == std.shape == (dataset.images.shape[-1],)
        np.testing.assert_allclose(mean, expected_mean, rtol=1e-6)
        np.testing.assert_allclose(std, expected_std, rtol=1e-6)


@pytest.mark.parametrize('bad_value', [np.nan, np.inf])
def test_non_finite_images_are_rejected_with_a_count(bad_value):
    images = np.zeros((4, 2, 2, 1))
    images[1, 0, 0, 0] = images[3, 1, 1, 0] = bad_value
    with pytest.raises(ValueError, match=r"'broken'.*2 image values are NaN or infinite"):
        data.ArrayDataset(images, np.zeros(4), num_classes=2, name='broken')


def test_labels_out_of_range_are_rejected():
    with pytest.raises(ValueError, match=r"1 labels are outside \[0, 3\)"):
        data.ArrayDataset(np.zeros((2, 2, 2, 1)), np.array([0, 3]), num_classes=3, name='x')


# ----------------------------------------------------------------------------- resizing


@pytest.mark.parametrize('image_size', [8, 11, 16, 32])
def test_pad_keeps_the_image_centred_on_zeros(digits_dir, digits_test, image_size):
    padded = data.load('digits', 'test', data_dir=digits_dir, image_size=image_size)
    assert padded.images.shape == (len(digits_test), image_size, image_size, 1)
    top = (image_size - 8) // 2
    np.testing.assert_array_equal(padded.images[:, top:top + 8, top:top + 8], digits_test.images)
    border = np.ones(padded.images.shape, dtype=bool)
    border[:, top:top + 8, top:top + 8] = False
    assert np.all(padded.images[border] == 0)


def _bilinear_upsample_reference(images: np.ndarray, size: int) -> np.ndarray:
    """Half-pixel-centred bilinear interpolation with edge clamping, one axis at a time."""
    for axis in (1, 2):
        source_size = images.shape[axis]
        coordinates = (np.arange(size) + 0.5) * source_size / size - 0.5
        coordinates = np.clip(coordinates, 0, source_size - 1)
        low = np.floor(coordinates).astype(int)
        high = np.minimum(low + 1, source_size - 1)
        weight_shape = [1, 1, 1, 1]
        weight_shape[axis] = size
        weight = (coordinates - low).reshape(weight_shape)
        images = (1 - weight) * np.take(images, low, axis) + weight * np.take(images, high, axis)
    return images


def test_bilinear_upsampling_matches_a_numpy_reference(digits_dir, digits_test):
    resized = data.load('digits', 'test', data_dir=digits_dir, image_size=16, resize='bilinear')
    assert resized.images.shape == (len(digits_test), 16, 16, 1)
    np.testing.assert_allclose(
        resized.images, _bilinear_upsample_reference(digits_test.images, 16), atol=1e-5
    )


def test_resize_errors(digits_dir):
    with pytest.raises(ValueError, match='resize="bilinear"'):
        data.load('digits', 'test', data_dir=digits_dir, image_size=4)
    with pytest.raises(ValueError, match="Unknown resize 'nearest'"):
        data.load('digits', 'test', data_dir=digits_dir, image_size=16, resize='nearest')


# ----------------------------------------------------------------------------- TFDS path


def _read_source(name: str, split: str, data_dir) -> tuple[np.ndarray, np.ndarray]:
    source = tfds.data_source(name, split=split, data_dir=data_dir)
    records = [source[index] for index in range(len(source))]
    return (
        np.stack([record['image'] for record in records]),
        np.array([record['label'] for record in records]),
    )


def test_cifar10_loads_through_the_same_path_as_tfds_data_source(tmp_path):
    with tfds.testing.mock_data(num_examples=24, policy=tfds.testing.MockPolicy.USE_CODE):
        dataset = data.load('cifar10', 'train', data_dir=str(tmp_path))
        raw_images, raw_labels = _read_source('cifar10', 'train', tmp_path)
    assert dataset.images.shape == (24, 32, 32, 3) and dataset.images.dtype == np.float32
    assert 0 <= dataset.images.min() and dataset.images.max() <= 1
    assert dataset.num_classes == 10 and np.all((0 <= dataset.labels) & (dataset.labels < 10))
    assert raw_images.dtype == np.uint8
    np.testing.assert_allclose(dataset.images, raw_images / 255, rtol=1e-6)
    np.testing.assert_array_equal(dataset.labels, raw_labels)


def test_grayscale_tfds_dataset_keeps_one_channel_when_padded(tmp_path):
    with tfds.testing.mock_data(num_examples=5, policy=tfds.testing.MockPolicy.USE_CODE):
        dataset = data.load('mnist', 'test', data_dir=str(tmp_path), image_size=32)
        raw_images, _ = _read_source('mnist', 'test', tmp_path)
    assert dataset.images.shape == (5, 32, 32, 1)
    np.testing.assert_allclose(dataset.images[:, 2:30, 2:30], raw_images / 255, rtol=1e-6)


def test_default_augment():
    assert data.default_augment('cifar10') == data.default_augment('cifar100') == 'crop_flip'
    assert data.default_augment('digits') == data.default_augment('mnist') == 'none'


def test_unprepared_dataset_names_the_prepare_command(tmp_path):
    with pytest.raises(data.DatasetNotPreparedError) as error:
        data.load('mnist', 'train', data_dir=str(tmp_path))
    assert isinstance(error.value, FileNotFoundError)
    message = str(error.value)
    assert 'mnist' in message and str(tmp_path) in message
    assert 'python -m jaxnorm.data prepare mnist' in message


def test_unknown_dataset_suggests_names(tmp_path):
    with pytest.raises(ValueError, match=r"Unknown dataset 'cifar_10'.*'cifar10'.*list_builders"):
        data.load('cifar_10', 'train', data_dir=str(tmp_path))


def test_data_dir_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv('TFDS_DATA_DIR', str(tmp_path / 'from_env'))
    assert data.resolve_data_dir(str(tmp_path / 'explicit')) == str(tmp_path / 'explicit')
    assert data.resolve_data_dir() == str(tmp_path / 'from_env')
    monkeypatch.delenv('TFDS_DATA_DIR')
    assert data.resolve_data_dir() == os.path.expanduser('~/tensorflow_datasets')


def test_prepare_command_line(tmp_path, capsys, digits_test):
    assert data_cli.main(['prepare', 'digits', '--data-dir', str(tmp_path)]) == 0
    assert str(tmp_path) in capsys.readouterr().out
    prepared = data.load('digits', 'test', data_dir=str(tmp_path))
    assert _dataset_digest(prepared) == _dataset_digest(digits_test)

    assert data_cli.main(['prepare', 'no_such_dataset', '--data-dir', str(tmp_path)]) == 1
    error_lines = capsys.readouterr().err.strip().splitlines()
    assert len(error_lines) == 1 and 'no_such_dataset' in error_lines[0]


@pytest.mark.parametrize('user_setting', [True, False])
def test_loading_restores_the_users_tfds_progress_bar_setting(digits_dir, user_setting):
    from tensorflow_datasets.core.utils import tqdm_utils
    tfds.display_progress_bar(user_setting)
    try:
        data.load('digits', 'test', data_dir=digits_dir)
        assert tqdm_utils._active is user_setting
    finally:
        tfds.display_progress_bar(True)


def test_load_standardized_uses_training_statistics_for_both_splits(tmp_path):
    splits = data.load_standardized('digits', data_dir=str(tmp_path))
    raw_train = splits.train.images.reshape(-1, splits.train.images.shape[-1]).astype(np.float64)
    mean, std = raw_train.mean(0), raw_train.std(0)
    np.testing.assert_allclose(splits.train_images, (splits.train.images - mean) / std, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(splits.test_images, (splits.test.images - mean) / std, rtol=1e-4, atol=1e-5)
    assert splits.test_images.dtype == np.float32
    np.testing.assert_array_equal(splits.test_labels, splits.test.labels)


def test_load_standardized_resizes_both_splits_as_load_does(tmp_path):
    splits = data.load_standardized('digits', data_dir=str(tmp_path), image_size=12,
                                    resize='bilinear')
    resized = data.load('digits', 'test', data_dir=str(tmp_path), image_size=12,
                        resize='bilinear')
    assert splits.train_images.shape[1:] == splits.test_images.shape[1:] == (12, 12, 1)
    np.testing.assert_array_equal(splits.test.images, resized.images)
