#!/usr/bin/env python3
""" Self-supervised MoCo v2 on a timm backbone, optionally with Mixup/CutMix/SAMix-I/SAMix-C mixing.

    python train_ssl.py --config configs/ssl/embedded_quickstart.yaml --data-dir data/cluttered_mnist
"""
import sys

from samix_timm.cli import run_train_ssl

if __name__ == '__main__':
    sys.exit(run_train_ssl())
