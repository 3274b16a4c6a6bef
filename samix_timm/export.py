""" `python -m samix_timm.export --checkpoint RUN/last.pth.tar --out mixers/my_mixer`: SAMix^P artifact (§7). """
import argparse
import sys
from typing import Optional, Sequence

from .cli import guarded
from .engine.checks import check_file_name, check_input_file
from .pretrained import export_mixer

RUN = 'the last.pth.tar of a `train.py --mixup samix` or `train_ssl.py --ssl-mix samix_i|samix_c` run'


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('--checkpoint', required=True, help='checkpoint of a `train.py --mixup samix` or `train_ssl.py --ssl-mix samix_i|samix_c` run')
    parser.add_argument('--out', required=True, help='output path without hash; written as <out>-<sha256[:8]>.pth')
    parser.add_argument('--description', default='', help='free text stored in the artifact')
    args = parser.parse_args(argv)

    def _run() -> int:
        check_input_file('checkpoint', args.checkpoint, RUN)
        check_file_name('out', args.out)  # the hashed name is refused at writing when it exists
        path, sha = export_mixer(args.checkpoint, args.out, args.description)
        print(f'{path}\nsha256 {sha}\nsize {path.stat().st_size / 1e6:.2f} MB')
        return 0

    return guarded(_run)


if __name__ == '__main__':
    sys.exit(main())
