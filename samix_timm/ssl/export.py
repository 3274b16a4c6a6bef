""" Export the backbone of a train_ssl.py checkpoint as a timm state_dict:

    python -m samix_timm.ssl.export --checkpoint output/ssl/<run>/last.pth.tar --out backbone.pth --num-classes 10
    python train.py --model resnet18 --num-classes 10 --initial-checkpoint backbone.pth ...
"""
import argparse
import sys
from typing import Optional, Sequence

from ..cli import guarded
from ..engine.checks import check_input_file, check_new_file, check_numbers
from .encoder import export_backbone


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description='Write the backbone of an SSL checkpoint as a timm state_dict')
    p.add_argument('--checkpoint', required=True, help='train_ssl.py checkpoint')
    p.add_argument('--out', required=True, help='output .pth file')
    p.add_argument('--num-classes', type=int, default=None,
                   help='add a fresh classifier of this size (for train.py --initial-checkpoint); '
                        'omit for a headless file (train.py --pretrained --pretrained-path)')
    args = p.parse_args(argv)

    def _run() -> int:
        check_numbers(args)
        check_input_file('checkpoint', args.checkpoint, 'a train_ssl.py checkpoint (output/ssl/<run>/last.pth.tar)')
        check_new_file('out', args.out)
        print(export_backbone(args.checkpoint, args.out, args.num_classes))
        return 0

    return guarded(_run)


if __name__ == '__main__':
    sys.exit(main())
