#!/usr/bin/env python3
""" Train a timm model with timm's command line and recipes, plus `--mixup samix`.

    python train.py --config configs/embedded_quickstart.yaml --data-dir data/cluttered_mnist
"""
import sys

from samix_timm.cli import run_train

if __name__ == '__main__':
    sys.exit(run_train())
