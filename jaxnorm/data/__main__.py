"""Command line: ``python -m jaxnorm.data prepare NAME [--data-dir DIR]``.

Downloads and prepares a TFDS dataset as array_record files so that
``jaxnorm.data.load(NAME, ...)`` can read it offline. Run it once on a machine with internet
access; most TFDS builders (``mnist``, ``cifar10``, ...) also need TensorFlow for this step
(``pip install tensorflow-cpu``). ``digits`` needs neither.
"""

import argparse
import sys

from jaxnorm.data import loading

_PIP_PACKAGE = {'tensorflow': 'tensorflow-cpu', 'importlib_resources': 'importlib_resources'}


def main(argv: list[str] | None = None) -> int:
    """Runs the command line; returns the process exit status."""
    parser = argparse.ArgumentParser(prog='python -m jaxnorm.data', description=__doc__)
    commands = parser.add_subparsers(dest='command', required=True)
    prepare_parser = commands.add_parser(
        'prepare', help='download and prepare a dataset for jaxnorm.data.load'
    )
    prepare_parser.add_argument('name', help="'digits' or a TFDS name, e.g. mnist, cifar10")
    prepare_parser.add_argument(
        '--data-dir', help='default: $TFDS_DATA_DIR, else ~/tensorflow_datasets'
    )
    args = parser.parse_args(argv)
    try:
        data_dir = loading.prepare(args.name, data_dir=args.data_dir)
    except ModuleNotFoundError as error:
        # TFDS imports these lazily during preparation without declaring them:
        # TensorFlow for most builders' generation code, importlib_resources on
        # Python >= 3.9 (tensorflow/datasets#11212).
        package = _PIP_PACKAGE.get(error.name, error.name)
        print(
            f'error: preparing {args.name!r} needs the module {error.name!r}: run '
            f'`pip install {package}` and try again (reading the prepared dataset does not).',
            file=sys.stderr,
        )
        return 1
    # A command line reports any failure as one line rather than a traceback.
    except Exception as error:  # noqa: BLE001
        print(f'error: could not prepare {args.name!r}: {error}', file=sys.stderr)
        return 1
    print(f'Prepared {args.name!r} in {data_dir}.')
    return 0


if __name__ == '__main__':
    sys.exit(main())
