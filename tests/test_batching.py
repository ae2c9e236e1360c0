"""Tests for jaxnorm.data.BatchIterator: epochs, process slicing, normalization, augmentation.

References are numpy formulas written out here (shifts, flips, mean/std) on indexed random
images whose label is their index, so every example can be traced through an epoch.
"""

import collections

import numpy as np
import pytest

from jaxnorm import data


def _indexed_dataset(num_examples=103, shape=(6, 5, 3)) -> data.ArrayDataset:
    """Random images bounded away from 0 (so shifts are identifiable); label = index."""
    images = np.random.default_rng(1).uniform(0.1, 1.0, (num_examples, *shape))
    return data.ArrayDataset(images, np.arange(num_examples), num_examples, 'indexed')


def _shift_reference(image: np.ndarray, down: int, right: int) -> np.ndarray:
    """``image`` moved ``down``/``right`` pixels (negative: up/left), zeros shifted in."""
    height, width, _ = image.shape
    shifted = np.zeros_like(image)
    rows_to = slice(max(down, 0), height + min(down, 0))
    rows_from = slice(max(-down, 0), height + min(-down, 0))
    columns_to = slice(max(right, 0), width + min(right, 0))
    columns_from = slice(max(-right, 0), width + min(-right, 0))
    shifted[rows_to, columns_to] = image[rows_from, columns_from]
    return shifted


def test_epoch_covers_every_example_once():
    dataset = _indexed_dataset()
    iterator = data.BatchIterator(dataset, 10, seed=0, drop_remainder=False)
    batches = list(iterator.epoch(0))
    assert len(iterator) == len(batches) == 11
    assert [len(batch['label']) for batch in batches] == [10] * 10 + [3]
    labels = np.concatenate([batch['label'] for batch in batches])
    np.testing.assert_array_equal(np.sort(labels), np.arange(len(dataset)))
    np.testing.assert_array_equal(labels, np.random.default_rng([0, 0]).permutation(103))
    for batch in batches:
        assert batch['image'].dtype == np.float32 and batch['label'].dtype == np.int32
        np.testing.assert_array_equal(batch['image'], dataset.images[batch['label']])

    dropping = data.BatchIterator(dataset, 10, seed=0)
    assert len(dropping) == len(list(dropping.epoch(0))) == 10
    in_order = data.BatchIterator(dataset, 10, seed=0, shuffle=False, drop_remainder=False)
    labels = np.concatenate([batch['label'] for batch in in_order.epoch(5)])
    np.testing.assert_array_equal(labels, np.arange(len(dataset)))


def test_epochs_are_reproducible_and_distinct():
    def make_iterator():
        return data.BatchIterator(_indexed_dataset(), 16, seed=7, augment='crop_flip')

    first, again = list(make_iterator().epoch(3)), list(make_iterator().epoch(3))
    for batch, repeated in zip(first, again, strict=True):
        np.testing.assert_array_equal(batch['image'], repeated['image'])
        np.testing.assert_array_equal(batch['label'], repeated['label'])
    next_epoch = list(make_iterator().epoch(4))
    assert not np.array_equal(first[0]['label'], next_epoch[0]['label'])
    other_seed = data.BatchIterator(_indexed_dataset(), 16, seed=8, augment='crop_flip')
    assert not np.array_equal(first[0]['label'], list(other_seed.epoch(3))[0]['label'])


@pytest.mark.parametrize('process_count', [2, 4])
@pytest.mark.parametrize('drop_remainder', [True, False])
def test_process_slices_concatenate_to_the_global_batch(process_count, drop_remainder):
    settings = dict(
        seed=3, augment='crop_flip', mean=[0.5, 0.4, 0.3], std=[0.2, 0.3, 0.4],
        drop_remainder=drop_remainder,
    )
    dataset = _indexed_dataset()
    single = list(data.BatchIterator(dataset, 12, **settings).epoch(2))
    per_process = [
        list(
            data.BatchIterator(
                dataset, 12, process_index=index, process_count=process_count, **settings
            ).epoch(2)
        )
        for index in range(process_count)
    ]
    for batch_index, global_batch in enumerate(single):
        local_batches = [batches[batch_index] for batches in per_process]
        if len(global_batch['label']) == 12:
            assert all(len(local['label']) == 12 // process_count for local in local_batches)
        for key in ('image', 'label'):
            np.testing.assert_array_equal(
                np.concatenate([local[key] for local in local_batches]), global_batch[key]
            )


def test_normalization_is_mean_subtracted_and_std_divided():
    dataset = _indexed_dataset()
    mean, std = np.array([0.1, 0.5, 0.9]), np.array([0.5, 2.0, 0.25])
    iterator = data.BatchIterator(dataset, 20, seed=0, mean=mean, std=std)
    for batch in iterator.epoch(1):
        expected = (dataset.images[batch['label']] - mean) / std
        np.testing.assert_allclose(batch['image'], expected, rtol=1e-6, atol=1e-6)


def test_flip_returns_the_image_or_its_mirror():
    dataset = _indexed_dataset()
    flips = []
    for batch in data.BatchIterator(dataset, 20, seed=0, augment='flip').epoch(0):
        for image, label in zip(batch['image'], batch['label']):
            source = dataset.images[label]
            mirrored = np.array_equal(image, source[:, ::-1])
            assert mirrored or np.array_equal(image, source)
            flips.append(mirrored)
    assert 0.3 < np.mean(flips) < 0.7
    # The documented stream of batch 0 of epoch 0 (seed 0), tagged apart from the permutation.
    np.testing.assert_array_equal(flips[:20], np.random.default_rng([0, 0, 0, 1]).random(20) < 0.5)


def test_crop_flip_returns_a_shifted_possibly_mirrored_image():
    dataset, padding = _indexed_dataset(), 2
    iterator = data.BatchIterator(dataset, 20, seed=0, augment='crop_flip', crop_padding=padding)
    seen = collections.Counter()
    for batch in iterator.epoch(0):
        for image, label in zip(batch['image'], batch['label']):
            source = dataset.images[label]
            matches = [
                (down, right, mirrored)
                for down in range(-padding, padding + 1)
                for right in range(-padding, padding + 1)
                for mirrored in (False, True)
                if np.array_equal(
                    image, _shift_reference(source[:, ::-1] if mirrored else source, down, right)
                )
            ]
            assert len(matches) == 1, f'example {label} is no single shift/flip of its source'
            seen[matches[0]] += 1
    assert len(seen) > 10  # offsets and flips vary per image


def test_random_crop_matches_shift_reference():
    images = np.random.default_rng(2).random((3, 6, 5, 2))
    offsets = np.array([[0, 4], [2, 2], [4, 1]])
    cropped = data.random_crop(images, offsets, padding=2)
    for image, crop, (row, column) in zip(images, cropped, offsets):
        np.testing.assert_array_equal(crop, _shift_reference(image, 2 - row, 2 - column))


def test_batch_iterator_errors_explain_the_fix():
    dataset = _indexed_dataset()
    with pytest.raises(ValueError, match=r"batch_size 500 .* 103 examples .*'indexed'") as error:
        data.BatchIterator(dataset, 500, seed=0)
    assert 'drop_remainder=False' in str(error.value)
    assert len(data.BatchIterator(dataset, 500, seed=0, drop_remainder=False)) == 1
    with pytest.raises(ValueError, match=r"Unknown augment 'mixup'.*crop_flip"):
        data.BatchIterator(dataset, 10, seed=0, augment='mixup')
    with pytest.raises(ValueError, match='at least 1'):
        data.BatchIterator(dataset, 0, seed=0)
    with pytest.raises(ValueError, match='not divisible by process_count 4'):
        data.BatchIterator(dataset, 10, seed=0, process_count=4)
    with pytest.raises(ValueError, match='both mean and std'):
        data.BatchIterator(dataset, 10, seed=0, mean=0.5)
    with pytest.raises(ValueError, match='3 entries'):
        data.BatchIterator(dataset, 10, seed=0, mean=[0.5, 0.5], std=[1.0, 1.0])
