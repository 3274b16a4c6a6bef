#!/usr/bin/env python3
""" Does a pre-trained Mixer follow lam? Mean partner share of its masks on validation images.

For each lam the ideal mean mask is 1 - lam (§0); the per-image standard deviation of the mask
tells a spatial, near-binary mask (about 0.5) from a constant one (0). Partner = the next image.

    python bench/mixer_lam.py --mixer samix_r18_cluttered_mnist --data-dir data/cluttered_mnist
    python bench/mixer_lam.py ... --picture docs/images/samix_r18_masks.png   # + its masks on 8 of them at lam 0.5
"""
import argparse
import json
import sys
from pathlib import Path

import torch
from timm.data import create_dataset, create_loader
from torchvision.utils import save_image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from samix_timm import SAMixPretrained  # noqa: E402
from samix_timm.engine.visualize import mix_grid  # noqa: E402
from samix_timm.hub import create_pretrained_mixer, load_pretrained_artifact  # noqa: E402


def mask_stats(mixer: SAMixPretrained, x: torch.Tensor, lams) -> dict:
    """lam -> (mean mask, mean per-image std) for partners index = roll(arange, 1)."""
    index = torch.roll(torch.arange(len(x)), 1)
    stats = {}
    for lam in lams:
        s = mixer.mask(x, lam, index)
        stats[lam] = dict(mean=float(s.mean()), ideal=1 - lam, image_std=float(s.flatten(1).std(1).mean()))
    return stats


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[1])
    p.add_argument('--mixer', required=True, help='hub name or artifact path')
    p.add_argument('--data-dir', required=True)
    p.add_argument('--images', type=int, default=100, help='first N validation images')
    p.add_argument('--lams', type=float, nargs='+', default=[0.3, 0.5, 0.7])
    p.add_argument('--picture', default=None, help='also write its masks at lam 0.5 as PNG: a batch of every 10th validation image '
                        '(all classes), shuffled with seed 0, first 4 rows shown')
    args = p.parse_args()
    artifact = load_pretrained_artifact(args.mixer)
    data = artifact['data']  # the loader below normalises like the artifact
    mixer = create_pretrained_mixer(args.mixer, num_classes=artifact['extractor']['num_classes'], data_config=data)
    ds = create_dataset('', root=args.data_dir, split='validation')
    loader = create_loader(ds, input_size=tuple(data['input_size']), batch_size=args.images, use_prefetcher=False,
                           mean=data['mean'], std=data['std'], crop_pct=1.0, num_workers=0)
    x, _ = next(iter(loader))
    stats = mask_stats(mixer, x, args.lams)
    print('| λ | mean mask | ideal 1 − λ | per-image std |\n|---|---|---|---|')
    for lam, s in stats.items():
        print(f"| {lam:g} | {s['mean']:.3f} | {s['ideal']:.3f} | {s['image_std']:.3f} |")
    print(json.dumps({str(k): v for k, v in stats.items()}))
    if args.picture:  # masks made on the whole batch (its BatchNorm statistics, as above)
        spread = torch.utils.data.Subset(ds, range(0, len(ds), 10))
        x = next(iter(create_loader(spread, input_size=tuple(data['input_size']), batch_size=len(spread),
                                    use_prefetcher=False, mean=data['mean'], std=data['std'], crop_pct=1.0,
                                    num_workers=0)))[0]
        x = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(0))]
        save_image(mix_grid(mixer.preview(x, 0.5), data['mean'], data['std'], rows=4, lam=0.5), args.picture)
        print(f'picture: {args.picture}')


if __name__ == '__main__':
    main()
