"""Deterministic, resumable numpy batching with CIFAR-style augmentation."""

from collections.abc import Iterator, Sequence

import numpy as np

from jaxnorm.data.loading import ArrayDataset

AUGMENTATIONS = ('none', 'flip', 'crop_flip')

# Appended to the augmentation seed so that its stream never coincides with the
# permutation stream: numpy's SeedSequence ignores trailing zeros, so [seed, epoch, 0]
# would otherwise give the very same generator as [seed, epoch].
_AUGMENT_STREAM_TAG = 1


class BatchIterator:
    """Yields shuffled, augmented, normalized batches of an :class:`ArrayDataset`.

    Every batch is a pure function of ``(seed, epoch, batch index)``: the permutation of
    epoch ``e`` comes from ``np.random.default_rng([seed, e])`` and the augmentation of
    batch ``b`` from ``np.random.default_rng([seed, e, b, 1])``, so re-running an epoch
    after resuming from a checkpoint yields identical batches.

    ``batch_size`` is the global batch size. With ``process_count > 1`` each process yields
    its own contiguous slice of every global batch (``batch_size // process_count`` rows),
    so the concatenation over processes is exactly the single-process batch, augmentation
    included. The smaller last batch of ``drop_remainder=False`` is split as evenly as
    possible (slices may then differ by one row); multi-process training usually wants
    ``drop_remainder=True``.

    Augmentations: ``'flip'`` flips each image horizontally with probability 0.5;
    ``'crop_flip'`` first takes a random crop of the image zero-padded by
    ``crop_padding`` pixels per side (independent offset per image), then flips. Padding
    happens before normalization, so padded pixels are black.

    Example::

        train = load('digits', 'train')
        batches = BatchIterator(train, 128, seed=0, augment='crop_flip')
        for epoch in range(num_epochs):
            for batch in batches.epoch(epoch):  # {'image': (128, 8, 8, 1), 'label': (128,)}
                ...
    """

    def __init__(
        self,
        dataset: ArrayDataset,
        batch_size: int,
        *,
        seed: int,
        shuffle: bool = True,
        drop_remainder: bool = True,
        augment: str = 'none',
        mean: float | Sequence[float] | np.ndarray | None = None,
        std: float | Sequence[float] | np.ndarray | None = None,
        crop_padding: int = 4,
        process_index: int = 0,
        process_count: int = 1,
    ):
        """Validates the configuration.

        Args:
            dataset: the data, already in memory.
            batch_size: global number of examples per batch, over all processes.
            seed: non-negative integer seeding the permutations and augmentations.
            shuffle: permute the examples every epoch; if False, keep dataset order.
            drop_remainder: drop the last incomplete batch; if False, yield it smaller.
            augment: one of ``'none'``, ``'flip'``, ``'crop_flip'``.
            mean: per-channel mean subtracted after augmentation (scalar or ``(C,)``).
            std: per-channel standard deviation divided by; give both or neither.
            crop_padding: pixels of zero padding per side for ``'crop_flip'``.
            process_index: index of this process among ``process_count``.
            process_count: number of processes sharing each global batch.

        Raises:
            ValueError: for an invalid batch size, augmentation, normalization or process
                layout.
        """
        if batch_size < 1:
            raise ValueError(f'batch_size must be at least 1, got {batch_size}.')
        if drop_remainder and batch_size > len(dataset):
            raise ValueError(
                f'batch_size {batch_size} is larger than the {len(dataset)} examples of '
                f'dataset {dataset.name!r}, so drop_remainder=True would yield no batch. '
                'Use a smaller batch_size or drop_remainder=False.'
            )
        if augment not in AUGMENTATIONS:
            raise ValueError(f'Unknown augment {augment!r}; expected one of {AUGMENTATIONS}.')
        if augment != 'none' and dataset.images.ndim != 4:
            raise ValueError(
                f'augment {augment!r} flips and crops NHWC images, but dataset '
                f'{dataset.name!r} holds inputs of shape {dataset.images.shape[1:]}; use '
                "augment='none'."
            )
        if crop_padding < 0:
            raise ValueError(f'crop_padding must be non-negative, got {crop_padding}.')
        if seed < 0:
            raise ValueError(f'seed must be non-negative (numpy seeding), got {seed}.')
        if not 0 <= process_index < process_count:
            raise ValueError(
                f'process_index {process_index} must lie in [0, process_count={process_count}).'
            )
        if batch_size % process_count:
            raise ValueError(
                f'batch_size {batch_size} is not divisible by process_count {process_count}; '
                'every process must get the same number of rows.'
            )
        self._dataset = dataset
        self._batch_size = batch_size
        self._seed = seed
        self._shuffle = shuffle
        self._drop_remainder = drop_remainder
        self._augment = augment
        self._crop_padding = crop_padding
        self._process_index = process_index
        self._process_count = process_count
        self._mean, self._std = self._normalization(mean, std)

    def __len__(self) -> int:
        """Number of batches per epoch."""
        if self._drop_remainder:
            return len(self._dataset) // self._batch_size
        return -(-len(self._dataset) // self._batch_size)

    def epoch(self, epoch: int) -> Iterator[dict[str, np.ndarray]]:
        """Yields the batches of one epoch.

        Args:
            epoch: non-negative epoch number; the same number always gives the same batches.

        Yields:
            ``{'image': float32 (B, *spatial, C), 'label': int32 (B,)}`` where ``B`` is this
            process's share of the global batch (``'image'`` also for sequences).
        """
        if epoch < 0:
            raise ValueError(f'epoch must be non-negative, got {epoch}.')
        num_examples = len(self._dataset)
        if self._shuffle:
            order = np.random.default_rng([self._seed, epoch]).permutation(num_examples)
        else:
            order = np.arange(num_examples)
        for batch_index in range(len(self)):
            global_indices = order[batch_index * self._batch_size:][:self._batch_size]
            # Slices of positions, so that random draws made for the whole global batch
            # pick the same values on every process.
            local_positions = np.array_split(
                np.arange(len(global_indices)), self._process_count
            )[self._process_index]
            local_indices = global_indices[local_positions]
            images = self._dataset.images[local_indices]
            if self._augment != 'none':
                rng = np.random.default_rng(
                    [self._seed, epoch, batch_index, _AUGMENT_STREAM_TAG]
                )
                images = self._augment_images(images, rng, len(global_indices), local_positions)
            if self._mean is not None:
                images = (images - self._mean) / self._std
            yield {
                'image': images.astype(np.float32, copy=False),
                'label': self._dataset.labels[local_indices],
            }

    def _augment_images(
        self,
        images: np.ndarray,
        rng: np.random.Generator,
        global_batch_size: int,
        local_positions: np.ndarray,
    ) -> np.ndarray:
        """Applies the configured augmentation with draws made for the global batch."""
        if self._augment == 'crop_flip':
            offsets = rng.integers(0, 2 * self._crop_padding + 1, size=(global_batch_size, 2))
            images = random_crop(images, offsets[local_positions], self._crop_padding)
        flips = rng.random(global_batch_size) < 0.5
        return np.where(flips[local_positions, None, None, None], images[:, :, ::-1], images)

    def _normalization(self, mean, std) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Validates ``mean``/``std`` and broadcasts them to ``(C,)`` float32 arrays."""
        if (mean is None) != (std is None):
            raise ValueError('Give both mean and std for normalization, or neither.')
        if mean is None:
            return None, None
        num_channels = self._dataset.images.shape[-1]
        try:
            mean = np.broadcast_to(np.asarray(mean, dtype=np.float32), (num_channels,))
            std = np.broadcast_to(np.asarray(std, dtype=np.float32), (num_channels,))
        except ValueError as error:
            raise ValueError(
                f'mean and std must be scalars or have {num_channels} entries (one per '
                f'channel of {self._dataset.name!r}), got {np.shape(mean)} and {np.shape(std)}.'
            ) from error
        if not np.all(std > 0):
            raise ValueError(f'std must be positive in every channel, got {std}.')
        return mean, std


def random_crop(images: np.ndarray, offsets: np.ndarray, padding: int) -> np.ndarray:
    """Crops each zero-padded image back to its size at its own offset.

    Args:
        images: ``(B, H, W, C)``.
        offsets: int ``(B, 2)``, row and column offsets in ``[0, 2 * padding]`` into the
            padded image; ``(padding, padding)`` returns the image unchanged.
        padding: zero pixels added on each side before cropping.

    Returns:
        ``(B, H, W, C)`` crops, i.e. the images shifted by ``padding - offset`` pixels with
        zeros shifted in.
    """
    _, height, width, _ = images.shape
    padded = np.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    rows = offsets[:, 0, None] + np.arange(height)
    columns = offsets[:, 1, None] + np.arange(width)
    batch = np.arange(len(images))[:, None, None]
    return padded[batch, rows[:, :, None], columns[:, None, :]]
