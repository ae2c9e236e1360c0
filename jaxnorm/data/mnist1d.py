"""MNIST-1D (Greydanus, "Scaling Down Deep Learning", arXiv:2011.14439) as a local TFDS builder.

The examples are generated on this machine by the ``mnist1d`` package's own generator,
``mnist1d.data.make_dataset``, from its ten hand-made 12-point templates (padding, scaling,
translation, correlated and i.i.d. noise, shear, then resampling to length 40). The package's
download URL for a pickled copy is never used, so preparing needs no network.

Two configurations, both with the generator's default arguments except the sample count:

==================  =========  ==========  =============================================
user name           config     examples    split
==================  =========  ==========  =============================================
``mnist1d``         default    5,000       4,000 train / 1,000 test (the benchmark)
``mnist1d_large``   large      50,000      40,000 train / 10,000 test (same generator)
==================  =========  ==========  =============================================

Each example is a float32 ``sequence`` of shape ``(40, 1)`` (length, one channel: the layout
``(N, L, C)`` of every 1-D model in :mod:`jaxnorm.models`) and a ``label`` in 0..9. The split is
the generator's own (its ``train_split`` of a shuffled set), so ``train[:5]`` equals
``make_dataset()['x'][:5]``. The generator's arguments are stored in the dataset's metadata
(``dataset_info.metadata['generator_args']``).

Published test accuracy on the default set (the authors' README): logistic regression 32 %,
MLP 68 %, CNN 94 %, GRU 91 %, human 96 %.
"""

from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds

MNIST1D_BUILDER_NAME = 'local_mnist1d'
"""TFDS name of the builder: ``<data_dir>/local_mnist1d/<config>/<version>/``."""

SAMPLES_PER_CONFIG = {'default': 5_000, 'large': 50_000}
"""``num_samples`` passed to the generator per configuration (80 % train, 20 % test)."""

# The generator's arguments that are not data (its pickle URL) are left out of the metadata.
_NOT_GENERATOR_ARGS = ('url',)


def generator_args(config: str) -> dict:
    """The ``mnist1d`` generator's default arguments with the configuration's sample count.

    Raises:
        ValueError: an unknown configuration.
    """
    if config not in SAMPLES_PER_CONFIG:
        raise ValueError(
            f'Unknown MNIST-1D configuration {config!r}; expected one of '
            f'{tuple(SAMPLES_PER_CONFIG)}.'
        )
    # Imported here: the package imports requests and matplotlib, which only preparation needs.
    from mnist1d import data as mnist1d_data  # pylint: disable=import-outside-toplevel

    args = mnist1d_data.get_dataset_args(as_dict=True)
    args['num_samples'] = SAMPLES_PER_CONFIG[config]
    return {key: value for key, value in args.items() if key not in _NOT_GENERATOR_ARGS}


def generate(config: str = 'default') -> dict:
    """Runs the ``mnist1d`` generator for ``config``; returns its dict (``x``, ``y``, ...)."""
    from mnist1d import data as mnist1d_data  # pylint: disable=import-outside-toplevel
    from mnist1d import utils as mnist1d_utils  # pylint: disable=import-outside-toplevel

    return mnist1d_data.make_dataset(mnist1d_utils.ObjectView(generator_args(config)))


class LocalMnist1d(tfds.core.GeneratorBasedBuilder):
    """MNIST-1D generated locally by the ``mnist1d`` package; see the module docstring."""

    VERSION = tfds.core.Version('1.0.0')
    RELEASE_NOTES = {'1.0.0': 'mnist1d.data.make_dataset with its default arguments.'}
    BUILDER_CONFIGS = [
        tfds.core.BuilderConfig(name=name, description=f'{count:,} generated examples')
        for name, count in SAMPLES_PER_CONFIG.items()
    ]
    # As for digits: nothing is downloaded, so there is no checksums file for TFDS to find.
    code_path = None

    def _info(self) -> tfds.core.DatasetInfo:
        args = generator_args(self.builder_config.name)
        length = args['final_seq_length']
        return tfds.core.DatasetInfo(
            builder=self,
            description=(
                'MNIST-1D: ten 1-D digit templates, randomly padded, scaled, translated, '
                'sheared and corrupted by correlated and i.i.d. noise, resampled to length '
                f'{length}; generated locally by the mnist1d package.'
            ),
            features=tfds.features.FeaturesDict({
                'sequence': tfds.features.Tensor(shape=(length, 1), dtype=np.float32),
                'label': tfds.features.ClassLabel(num_classes=10),
            }),
            supervised_keys=('sequence', 'label'),
            homepage='https://github.com/greydanus/mnist1d',
            citation=(
                '@article{greydanus2020scaling, author={Greydanus, Sam}, title={Scaling Down '
                'Deep Learning}, journal={arXiv preprint arXiv:2011.14439}, year={2020}}'
            ),
            metadata=tfds.core.MetadataDict(generator_args=args),
            # Keep the generator's order (TFDS otherwise shuffles records by key hash).
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        del dl_manager  # Generated locally; nothing to download.
        generated = generate(self.builder_config.name)
        return {
            'train': self._generate_examples(generated['x'], generated['y']),
            'test': self._generate_examples(generated['x_test'], generated['y_test']),
        }

    def _generate_examples(
        self, sequences: np.ndarray, labels: np.ndarray
    ) -> Iterator[tuple[int, dict]]:
        # Keys are the positions in the generator's output, so data_source keeps its order.
        for index, (sequence, label) in enumerate(zip(sequences, labels)):
            yield index, {
                'sequence': np.asarray(sequence, np.float32)[:, None],
                'label': int(label),
            }
