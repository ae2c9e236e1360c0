"""Task-incremental continual-learning benchmarks built from the datasets of :mod:`jaxnorm.data`.

* ``split_digits``: the embedded digits, 5 tasks of 2 classes ({0,1}, {2,3}, ..., {8,9}).
* ``permuted_digits``: the 10-class digits, task 0 unchanged and every further task with its
  own fixed random pixel permutation (default 5 tasks).
* ``permuted_mnist1d``: MNIST-1D (40-point signals, 10 classes), task 0 unchanged and every
  further task with its own fixed permutation of the 40 positions (default 10 tasks; an
  optional ``train_per_task`` keeps a seeded subset of each task's training examples).
* ``split_mnist5k``: the 5,000 real MNIST digits of ``mnist5k`` as binary tasks, default 10:
  the pairs {0,1}, {2,3}, ..., {8,9}, then {1,2}, {3,4}, ..., {9,0}. A class recurs in two
  tasks (with a different partner and its own head), which MNIST's ten classes need for more
  than five binary tasks [infer: our construction, not from the paper].
* ``cifar100_superclass``: CIFAR-100 split by its 20 coarse labels, 20 tasks of 5 fine
  classes (TFDS ``cifar100``, feature ``coarse_label``; prepare it once with
  ``python -m jaxnorm.data prepare cifar100``).

Within a task, labels are renumbered ``0 .. classes_per_task - 1`` (sorted original labels),
so a model has one small head per task.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from jaxnorm.data import loading

BENCHMARKS = ('split_digits', 'permuted_digits', 'permuted_mnist1d', 'split_mnist5k',
              'cifar100_superclass')


@dataclasses.dataclass(frozen=True)
class Task:
    """One task: its train and test splits (labels renumbered) and its original classes."""

    train: loading.ArrayDataset
    test: loading.ArrayDataset
    classes: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class Benchmark:
    """A sequence of tasks with the same number of classes each."""

    name: str
    tasks: tuple[Task, ...]

    @property
    def num_tasks(self) -> int:
        return len(self.tasks)

    @property
    def classes_per_task(self) -> int:
        return self.tasks[0].train.num_classes


def _subset(dataset: loading.ArrayDataset, select: np.ndarray, labels: np.ndarray,
            num_classes: int, name: str) -> loading.ArrayDataset:
    return loading.ArrayDataset(images=dataset.images[select], labels=labels,
                                num_classes=num_classes, name=name)


def split_by_classes(train: loading.ArrayDataset, test: loading.ArrayDataset,
                     groups, *, name: str = 'split', train_groups=None, test_groups=None
                     ) -> Benchmark:
    """Tasks that each hold the examples of one group of classes.

    Args:
      train, test: the full datasets.
      groups: a sequence of class-id sequences, one per task (disjoint, equal sizes).
      name: benchmark name.
      train_groups, test_groups: optional label arrays to group by instead of the datasets'
        labels (e.g. CIFAR-100's coarse labels); the task labels are then the datasets' own
        labels renumbered within the task.

    Returns:
      A :class:`Benchmark`.

    Raises:
      ValueError: empty or unequal groups, a class in two tasks, or a task left without
        train or test examples.
    """
    groups = [tuple(int(c) for c in g) for g in groups]
    if not groups or any(len(g) == 0 for g in groups):
        raise ValueError(f'{name}: every task needs at least one class, got {groups}')
    flat = [c for g in groups for c in g]
    if len(set(flat)) != len(flat):
        raise ValueError(f'{name}: a class appears in more than one task: {groups}')
    tasks = []
    for index, group in enumerate(groups):
        selected = []
        for split, data, keys in (('train', train, train_groups), ('test', test, test_groups)):
            keys = data.labels if keys is None else np.asarray(keys)
            select = np.flatnonzero(np.isin(keys, group))
            if select.size == 0:
                raise ValueError(f'{name}: task {index} (classes {group}) has no {split} '
                                 'examples; check the class split and the dataset')
            selected.append(select)
        if train_groups is None:
            classes = np.asarray(sorted(group))
        else:
            classes = np.unique(train.labels[selected[0]])
            extra = np.setdiff1d(test.labels[selected[1]], classes)
            if extra.size:
                raise ValueError(f'{name}: task {index} has test classes {extra} that its '
                                 'train split lacks')
        made = [_subset(data, select, np.searchsorted(classes, data.labels[select]),
                        len(classes), f'{name}[{index}]')
                for data, select in zip((train, test), selected)]
        tasks.append(Task(train=made[0], test=made[1], classes=tuple(int(c) for c in classes)))
    sizes = {t.train.num_classes for t in tasks}
    if len(sizes) != 1:
        raise ValueError(f'{name}: tasks have different numbers of classes {sorted(sizes)}')
    return Benchmark(name=name, tasks=tuple(tasks))


def permuted(train: loading.ArrayDataset, test: loading.ArrayDataset, num_tasks: int, *,
             seed: int = 0, name: str = 'permuted') -> Benchmark:
    """``num_tasks`` copies of the dataset; task 0 as is, task k > 0 with a fixed random
    permutation of the pixels (the same for train and test)."""
    if num_tasks < 1:
        raise ValueError(f'{name}: num_tasks must be >= 1, got {num_tasks}')
    if len(train) == 0 or len(test) == 0:
        raise ValueError(f'{name}: the dataset has no train or no test examples')
    size = int(np.prod(train.images.shape[1:]))
    rng = np.random.default_rng(seed)
    tasks = []
    for index in range(num_tasks):
        order = np.arange(size) if index == 0 else rng.permutation(size)

        def shuffle(data):
            flat = data.images.reshape(len(data), size)[:, order]
            return loading.ArrayDataset(images=flat.reshape(data.images.shape),
                                        labels=data.labels, num_classes=data.num_classes,
                                        name=f'{name}[{index}]')
        tasks.append(Task(train=shuffle(train), test=shuffle(test),
                          classes=tuple(range(train.num_classes))))
    return Benchmark(name=name, tasks=tuple(tasks))


def split_digits(*, data_dir: str | None = None, num_tasks: int = 5) -> Benchmark:
    """Digits split into ``num_tasks`` tasks of ``10 // num_tasks`` consecutive classes."""
    if num_tasks < 1 or 10 % num_tasks:
        raise ValueError(f'split_digits: num_tasks must divide 10, got {num_tasks}')
    train = loading.load('digits', 'train', data_dir=data_dir)
    test = loading.load('digits', 'test', data_dir=data_dir)
    per = 10 // num_tasks
    groups = [tuple(range(k * per, (k + 1) * per)) for k in range(num_tasks)]
    return split_by_classes(train, test, groups, name='split_digits')


def permuted_digits(*, data_dir: str | None = None, num_tasks: int = 5,
                    seed: int = 0) -> Benchmark:
    """Permuted digits (10 classes per task)."""
    train = loading.load('digits', 'train', data_dir=data_dir)
    test = loading.load('digits', 'test', data_dir=data_dir)
    return permuted(train, test, num_tasks, seed=seed, name='permuted_digits')


def permuted_mnist1d(*, data_dir: str | None = None, num_tasks: int = 10, seed: int = 0,
                     train_per_task: int | None = None) -> Benchmark:
    """Permuted MNIST-1D (10 classes per task); ``train_per_task`` keeps that many training
    examples of each task (a seeded subset, its own per task; test sets whole)."""
    train = loading.load('mnist1d', 'train', data_dir=data_dir)
    test = loading.load('mnist1d', 'test', data_dir=data_dir)
    bench = permuted(train, test, num_tasks, seed=seed, name='permuted_mnist1d')
    if train_per_task is None:
        return bench
    if not 0 < train_per_task <= len(train):
        raise ValueError(f'permuted_mnist1d: train_per_task must be in [1, {len(train)}], got '
                         f'{train_per_task}')
    rng = np.random.default_rng(seed + 1)
    tasks = []
    for task in bench.tasks:
        keep = np.sort(rng.permutation(len(task.train))[:train_per_task])
        tasks.append(dataclasses.replace(task, train=_subset(
            task.train, keep, task.train.labels[keep], task.train.num_classes,
            task.train.name)))
    return dataclasses.replace(bench, tasks=tuple(tasks))


def mnist5k_pairs(num_tasks: int = 10) -> list[tuple[int, int]]:
    """The class pairs of :func:`split_mnist5k`: (0,1) .. (8,9), then (1,2) .. (9,0)."""
    if not 1 <= num_tasks <= 10:
        raise ValueError(f'split_mnist5k: num_tasks must be in [1, 10], got {num_tasks}')
    pairs = [(2 * k, 2 * k + 1) for k in range(5)] + [(2 * k + 1, (2 * k + 2) % 10)
                                                       for k in range(5)]
    return pairs[:num_tasks]


def split_mnist5k(*, data_dir: str | None = None, num_tasks: int = 10) -> Benchmark:
    """MNIST-5k as ``num_tasks`` binary tasks over :func:`mnist5k_pairs` (labels 0/1 in the
    order of the sorted pair)."""
    train = loading.load('mnist5k', 'train', data_dir=data_dir)
    test = loading.load('mnist5k', 'test', data_dir=data_dir)
    tasks = []
    for index, pair in enumerate(mnist5k_pairs(num_tasks)):
        # each pair is disjoint on its own: a one-task split
        tasks += split_by_classes(train, test, [pair], name=f'split_mnist5k[{index}]').tasks
    return Benchmark(name='split_mnist5k', tasks=tuple(tasks))


def _read_with_coarse(split: str, data_dir: str):
    with loading._quiet_tfds():  # noqa: SLF001 (same package)
        source = loading._open_data_source('cifar100', 'cifar100', split, data_dir)
        indices = list(range(len(source)))
        try:
            records = loading._read_records(source, indices)
        except AttributeError:  # a plain sequence without __getitems__ (mocked sources)
            records = [source[i] for i in indices]
    if not records:
        raise ValueError(f'cifar100 split {split!r} has no examples')
    images = np.stack([np.asarray(r['image']) for r in records])
    fine = np.asarray([r['label'] for r in records], np.int64)
    coarse = np.asarray([r['coarse_label'] for r in records], np.int64)
    dataset = loading.ArrayDataset(images=loading._to_unit_interval(images), labels=fine,
                                   num_classes=100, name='cifar100')
    return dataset, coarse


def cifar100_superclass(*, data_dir: str | None = None, superclasses=None) -> Benchmark:
    """CIFAR-100 as 20 tasks (one per coarse label, in ``superclasses`` order, default 0..19),
    each with the 5 fine classes of that superclass."""
    data_dir = loading.resolve_data_dir(data_dir)
    train, train_coarse = _read_with_coarse('train', data_dir)
    test, test_coarse = _read_with_coarse('test', data_dir)
    order = list(range(20)) if superclasses is None else list(superclasses)
    return split_by_classes(train, test, [(c,) for c in order], name='cifar100_superclass',
                            train_groups=train_coarse, test_groups=test_coarse)


def load_benchmark(name: str, *, data_dir: str | None = None, **kwargs) -> Benchmark:
    """One of :data:`BENCHMARKS` by name."""
    builders = {'split_digits': split_digits, 'permuted_digits': permuted_digits,
                'permuted_mnist1d': permuted_mnist1d, 'split_mnist5k': split_mnist5k,
                'cifar100_superclass': cifar100_superclass}
    if name not in builders:
        raise ValueError(f'unknown benchmark {name!r}; choose one of {BENCHMARKS}')
    return builders[name](data_dir=data_dir, **kwargs)
