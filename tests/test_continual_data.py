"""Tests for the continual benchmarks (jaxnorm.data.continual) and jaxnorm.continual's metrics
and training sequence. References: the digits labels themselves, hand-computed matrices."""
import numpy as np
import pytest
import tensorflow_datasets as tfds

from jaxnorm import continual as cl
from jaxnorm import data
from jaxnorm.data import continual as dc


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp('tfds_continual'))


@pytest.fixture(scope='module')
def split(data_dir):
    return dc.split_digits(data_dir=data_dir)


def test_split_digits_tasks_hold_exactly_their_classes(split, data_dir):
    train = data.load('digits', 'train', data_dir=data_dir)
    test = data.load('digits', 'test', data_dir=data_dir)
    assert split.num_tasks == 5 and split.classes_per_task == 2
    for k, task in enumerate(split.tasks):
        assert task.classes == (2 * k, 2 * k + 1)
        for full, part in ((train, task.train), (test, task.test)):
            chosen = np.isin(full.labels, task.classes)
            np.testing.assert_array_equal(part.images, full.images[chosen])
            np.testing.assert_array_equal(part.labels, full.labels[chosen] - 2 * k)
            assert part.num_classes == 2
    assert sum(len(t.train) for t in split.tasks) == len(train)


def test_permuted_digits_is_a_fixed_pixel_permutation_per_task(data_dir):
    bench = dc.permuted_digits(data_dir=data_dir, num_tasks=3, seed=1)
    base = bench.tasks[0]
    train = data.load('digits', 'train', data_dir=data_dir)
    np.testing.assert_array_equal(base.train.images, train.images)
    test = data.load('digits', 'test', data_dir=data_dir)

    def columns(images_train, images_test):
        # one column per pixel, holding that pixel in every train and test image
        joint = np.concatenate([images_train.reshape(len(images_train), -1),
                                images_test.reshape(len(images_test), -1)])
        return np.unique(joint.T, axis=0, return_counts=True)

    reference = columns(train.images, test.images)
    for task in bench.tasks[1:]:
        # one permutation of the pixels shared by train and test: same multiset of columns
        got = columns(task.train.images, task.test.images)
        np.testing.assert_array_equal(got[0], reference[0])
        np.testing.assert_array_equal(got[1], reference[1])
        assert not np.array_equal(task.train.images, train.images)
        np.testing.assert_array_equal(task.train.labels, train.labels)
        assert task.train.num_classes == 10
    assert not np.array_equal(bench.tasks[1].train.images, bench.tasks[2].train.images)


def test_split_leaving_a_task_without_samples_is_an_error(data_dir):
    train = data.load('digits', 'train', data_dir=data_dir)
    test = data.load('digits', 'test', data_dir=data_dir)
    with pytest.raises(ValueError, match='task 1 .* has no train examples'):
        dc.split_by_classes(train, test, [(0, 1), (10, 11)])
    with pytest.raises(ValueError, match='more than one task'):
        dc.split_by_classes(train, test, [(0, 1), (1, 2)])
    with pytest.raises(ValueError, match='unknown benchmark'):
        dc.load_benchmark('split_mnist')


def test_cifar100_superclass_groups_by_coarse_label(tmp_path):
    rng = np.random.default_rng(0)

    def source(self, split, **kwargs):
        n = 200 if split == 'train' else 100
        coarse = np.arange(n) % 20
        fine = coarse * 5 + (np.arange(n) // 20) % 5  # 5 fine classes per superclass
        return [{'image': rng.integers(0, 256, (32, 32, 3), dtype=np.uint8),
                 'label': int(f), 'coarse_label': int(c), 'id': str(i)}
                for i, (f, c) in enumerate(zip(fine, coarse))]

    with tfds.testing.mock_data(as_data_source_fn=source):
        bench = dc.cifar100_superclass(data_dir=str(tmp_path))
    assert bench.num_tasks == 20 and bench.classes_per_task == 5
    for k, task in enumerate(bench.tasks):
        assert task.classes == tuple(range(5 * k, 5 * k + 5))
        assert len(task.train) == 10 and len(task.test) == 5
        assert set(task.train.labels) == set(range(5))
        assert task.train.images.shape[1:] == (32, 32, 3)
        assert 0 <= task.train.images.min() and task.train.images.max() <= 1


def test_average_accuracy_and_forgetting_by_hand():
    matrix = [[0.9, 0.1, 0.2],
              [0.7, 0.8, 0.3],
              [0.6, 0.85, 0.95]]
    assert cl.average_accuracy(matrix) == pytest.approx((0.6 + 0.85 + 0.95) / 3)
    # task 0: best 0.9 -> final 0.6; task 1: best 0.85 (the final row) -> 0.85
    assert cl.average_forgetting(matrix) == pytest.approx((0.3 + 0.0) / 2)
    with pytest.raises(ValueError, match='square'):
        cl.average_accuracy([[1.0, 0.5]])


def test_sequence_learns_and_emr_protects_the_first_task(split):
    # 2 epochs at lr 0.1 momentum 0.9: fine-tuning forgets, EMR keeps task 0 (paired seed).
    results = {}
    for method in ('finetune', 'emr'):
        setup = cl.Setup(method=method, importance='ewc', epochs=1)
        results[method] = cl.run_grid(setup, split, [0.1], [0.0], [0])[0, 0, 0]
    for matrix in results.values():
        assert np.all(np.diag(matrix) > 0.85)  # every task is learned when it is trained
    assert cl.average_forgetting(results['emr']) < cl.average_forgetting(results['finetune'])


def test_setup_rejects_unknown_names():
    with pytest.raises(ValueError, match='unknown importance'):
        cl.Setup(importance='fisher')
    with pytest.raises(ValueError, match='unknown method'):
        cl.Setup(method='replay')


def test_split_mnist5k_and_permuted_mnist1d_hold_the_declared_tasks(data_dir):
    full_train = data.load('mnist5k', 'train', data_dir=data_dir)
    bench = dc.load_benchmark('split_mnist5k', data_dir=data_dir)
    pairs = [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9), (1, 2), (3, 4), (5, 6), (7, 8), (0, 9)]
    assert [t.classes for t in bench.tasks] == pairs
    for task in bench.tasks:
        chosen = np.isin(full_train.labels, task.classes)
        np.testing.assert_array_equal(task.train.images, full_train.images[chosen])
        np.testing.assert_array_equal(task.train.labels,
                                      full_train.labels[chosen] == max(task.classes))
    raw = data.load('mnist1d', 'train', data_dir=data_dir)
    perm = dc.permuted_mnist1d(data_dir=data_dir, num_tasks=3, train_per_task=50)
    assert perm.num_tasks == 3 and all(len(t.train) == 50 for t in perm.tasks)
    # every kept example is a raw example with its positions permuted (the same for all)
    flat = raw.images.reshape(len(raw), -1)
    for task in perm.tasks:
        x = task.train.images.reshape(50, -1)
        rows = [int(np.flatnonzero(np.all(np.sort(flat, 1) == np.sort(v), 1))[0]) for v in x]
        order = np.argsort(flat[rows[0]])[np.argsort(np.argsort(x[0]))]
        np.testing.assert_array_equal(x, flat[rows][:, order])
        np.testing.assert_array_equal(task.train.labels, raw.labels[rows])
    with pytest.raises(ValueError, match='num_tasks'):
        dc.split_mnist5k(data_dir=data_dir, num_tasks=11)
