""" `python -m samix_timm.data --out DIR`: build the embedded cluttered-MNIST ImageFolder. """
import argparse
import logging
import sys
import time
from dataclasses import fields

from .embedded import ClutteredMnistConfig, EmbeddedDataError, build_cluttered_mnist


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--out', default='data/cluttered_mnist', help='output folder (default: %(default)s)')
    for f in fields(ClutteredMnistConfig):
        parser.add_argument(f'--{f.name.replace("_", "-")}', type=f.type if callable(f.type) else int,
                            default=f.default, help=f'(default: %(default)s)')
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(message)s')
    cfg = ClutteredMnistConfig(**{f.name: getattr(args, f.name) for f in fields(ClutteredMnistConfig)})
    start = time.time()
    try:
        root = build_cluttered_mnist(args.out, cfg)
    except EmbeddedDataError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    print(f'embedded dataset ready at {root} ({time.time() - start:.1f}s)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
