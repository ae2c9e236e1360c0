#!/usr/bin/env python
"""Reproduce the published MNIST-1D baselines and measure MNIST-5k ones (jaxnorm.baselines).

Trains every row of ``jaxnorm.baselines.BASELINES`` over five seeds with the one engine,
resuming unfinished runs, then writes ``baselines.{md,json,png}`` into ``--out``.

    python scripts/baselines.py                  # all rows (about 45 min on 2 CPU cores)
    python scripts/baselines.py --only mnist1d   # the MNIST-1D rows (about 12 min)
"""
import argparse

from jaxnorm import baselines


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--only', choices=sorted({b.dataset for b in baselines.BASELINES}),
                        help='only the rows of this dataset')
    parser.add_argument('--root', default='runs/baselines', help='folder of the runs')
    parser.add_argument('--out', default='docs', help='folder of the table and the plot')
    parser.add_argument('--data-dir', help='TFDS data dir (default $TFDS_DATA_DIR or '
                                           '~/tensorflow_datasets)')
    args = parser.parse_args(argv)
    rows = []
    for baseline in baselines.BASELINES:
        if args.only and baseline.dataset != args.only:
            continue
        accuracies = baselines.run(baseline, args.root, data_dir=args.data_dir)
        rows.append(baselines.summarize(baseline, accuracies))
        print(f'{baseline.name}: {rows[-1]["mean"]:.1f} ± {rows[-1]["std"]:.1f} %', flush=True)
    baselines.write(rows, args.out)
    print(baselines.markdown_table(rows))


if __name__ == '__main__':
    main()
