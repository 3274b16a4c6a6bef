#!/usr/bin/env python3
""" Evaluate a checkpoint (timm's validate.py arguments).

    python validate.py --data-dir data/cluttered_mnist --checkpoint output/train/quickstart/last.pth.tar
"""
import sys

from samix_timm.cli import run_validate

if __name__ == '__main__':
    sys.exit(run_validate())
