#!/usr/bin/env python3
""" Does a Mixer keep the objects? Object retention of its masks on a photo-objects build (issue 45 item 4).

For each validation image a (partner b = the next image) mixed at λ, retention of a = (share of a's object left
visible in the mix) / (a's share of the mix), and the same for b: 1.0 is what a random cut keeps on average, above
1 the mask keeps the object rather than the background. Measured for each `--mixer` (hub name or artifact) and for
timm's CutMix box at the same λ (its `rand_bbox`, the box area as the share); object masks come from the build's
`masks/` (python -m samix_timm.data --photos).

    python bench/object_retention.py --data-dir data/photo_objects_1k --mixer samix_r18_cluttered_mnist \
        --out bench/results/object_retention_shipped
"""
import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from samix_timm.data.photos import object_mask_path  # noqa: E402
from samix_timm.hub import create_pretrained_mixer, load_pretrained_artifact  # noqa: E402


def load_split(root: Path, split: str, size: int, limit: int):
    """(images N×3×size×size in [0, 1], object masks N×1×size×size in {0, 1}) of a build, in file order."""
    files = sorted((root / split).glob('*/*.png'))[:limit]
    if not files:
        raise SystemExit(f'error: no images under {root / split}: pass --data-dir of a photo-objects build')
    images, objects = [], []
    for f in files:
        mask_file = object_mask_path(root, f)
        if not mask_file.exists():
            raise SystemExit(f'error: {f} has no object mask ({mask_file}): build the data with '
                             f'python -m samix_timm.data --photos')
        img = torch.from_numpy(np.asarray(Image.open(f).convert('RGB'), dtype=np.float32) / 255).permute(2, 0, 1)
        obj = torch.from_numpy((np.asarray(Image.open(mask_file)) == 255).astype(np.float32))[None]
        images.append(F.interpolate(img[None], size=(size, size), mode='bilinear', antialias=True,
                                    align_corners=False)[0])
        objects.append(F.interpolate(obj[None], size=(size, size), mode='nearest')[0])
    return torch.stack(images), torch.stack(objects)


def retention(s: torch.Tensor, obj: torch.Tensor, index: torch.Tensor) -> Dict[str, float]:
    """Mean retention of a (weight 1 − s) and of b = the partner x[index] (weight s), over the images whose
    object is visible and whose share is above 0."""
    keep_a, keep_b = 1 - s, s
    obj_b = obj[index]
    out = {}
    for name, keep, o in (('a', keep_a, obj), ('b', keep_b, obj_b)):
        visible = (keep * o).flatten(1).sum(1) / o.flatten(1).sum(1).clamp_min(1e-6)
        share = keep.flatten(1).mean(1)
        ok = (o.flatten(1).sum(1) > 0) & (share > 1e-3)
        out[name] = float((visible[ok] / share[ok]).mean())
        out[f'share_{name}'] = float(share.mean())
    return out


def cutmix_masks(n: int, size: int, lam: float, rng: np.random.Generator) -> torch.Tensor:
    """timm CutMix boxes at λ (each image's box of side sqrt(1 − λ), centre uniform, clipped at the border), as the
    partner's weight s."""
    cut = int(size * np.sqrt(1 - lam))
    s = torch.zeros(n, 1, size, size)
    for i in range(n):
        cy, cx = rng.integers(0, size, size=2)
        y0, y1 = np.clip(cy - cut // 2, 0, size), np.clip(cy + cut // 2, 0, size)
        x0, x1 = np.clip(cx - cut // 2, 0, size), np.clip(cx + cut // 2, 0, size)
        s[i, :, y0:y1, x0:x1] = 1
    return s


def measure(mixer_name: str, data_dir: Path, images: int, lams: Sequence[float], batch: int, seed: int) -> List[Dict]:
    """Rows (mixer, λ, retention of a and b, shares) of one Mixer and of CutMix on the same images."""
    artifact = load_pretrained_artifact(mixer_name)
    data = artifact['data']
    size = int(data['input_size'][-1])
    mixer = create_pretrained_mixer(mixer_name, num_classes=artifact['extractor']['num_classes'], data_config=data)
    mixer.lam_adjust_prob = 0.0  # the Mixer's own masks (its area as λ makes it)
    x, obj = load_split(data_dir, 'val', size, images)
    mean = torch.tensor(data['mean']).view(1, 3, 1, 1)
    std = torch.tensor(data['std']).view(1, 3, 1, 1)
    rows = []
    for lam in lams:
        rng = np.random.default_rng(seed)
        acc = {'mixer': [], 'cutmix': []}
        for start in range(0, len(x), batch):
            xb, ob = x[start:start + batch], obj[start:start + batch]
            index = torch.roll(torch.arange(len(xb)), 1)
            s = mixer.mask((xb - mean) / std, lam, index).float()
            s = F.interpolate(s, size=(size, size), mode='nearest') if s.shape[-1] != size else s
            acc['mixer'].append((len(xb), retention(s, ob, index)))
            acc['cutmix'].append((len(xb), retention(cutmix_masks(len(xb), size, lam, rng), ob, index)))
        for kind, parts in acc.items():
            total = sum(n for n, _ in parts)
            avg = {k: sum(n * r[k] for n, r in parts) / total for k in parts[0][1]}
            rows.append(dict(mixer=mixer_name if kind == 'mixer' else 'timm CutMix', lam=lam, images=total,
                             data=str(data_dir), **avg))
    return rows


def picture(mixer_name: str, data_dir: Path, path: Path, lam: float = 0.5, n: int = 8) -> None:
    """Partner, image, the Mixer's mask and the mix for n validation images of several classes, as a PNG."""
    from torchvision.utils import save_image
    artifact = load_pretrained_artifact(mixer_name)
    data = artifact['data']
    size = int(data['input_size'][-1])
    mixer = create_pretrained_mixer(mixer_name, num_classes=artifact['extractor']['num_classes'], data_config=data)
    mixer.lam_adjust_prob = 0.0
    x, obj = load_split(data_dir, 'val', size, 10 ** 9)
    x = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(0))][:100]
    mean, std = torch.tensor(data['mean']).view(1, 3, 1, 1), torch.tensor(data['std']).view(1, 3, 1, 1)
    index = torch.roll(torch.arange(len(x)), 1)
    s = mixer.mask((x - mean) / std, lam, index).float()[:n]
    mix = (1 - s) * x[:n] + s * x[index][:n]
    rows = torch.cat([x[:n], x[index][:n], s.expand(-1, 3, -1, -1), mix])  # image, partner, partner's weight, mix
    save_image(F.interpolate(rows, scale_factor=3, mode='nearest'), path, nrow=n, padding=2)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--data-dir', required=True, help='a photo-objects build (python -m samix_timm.data --photos)')
    p.add_argument('--mixer', nargs='+', required=True, help='hub names or artifact paths')
    p.add_argument('--images', type=int, default=1000, help='first N validation images')
    p.add_argument('--lams', type=float, nargs='+', default=[0.3, 0.5, 0.7])
    p.add_argument('--batch', type=int, default=100, help='images per Mixer call (its BatchNorm statistics)')
    p.add_argument('--seed', type=int, default=0, help='seed of the CutMix boxes')
    p.add_argument('--picture', default=None, help='also write the first Mixer\'s masks at λ 0.5 as this PNG')
    p.add_argument('--out', default=None, help='write OUT.jsonl and OUT.md (never over existing files)')
    args = p.parse_args(argv)
    bad = ([f'--lams {v:g} is not in (0, 1)' for v in args.lams if not 0 < v < 1]
           + ([f'--images {args.images} must be at least 1'] if args.images < 1 else [])
           + ([f'--batch {args.batch} must be at least 2 (the Mixer runs on batch statistics)'] if args.batch < 2 else []))
    if bad:
        print(f'error: {bad[0]}', file=sys.stderr)
        return 2
    if args.out:
        for suffix in ('.jsonl', '.md'):
            if Path(args.out + suffix).exists():
                print(f"error: '{args.out + suffix}' exists: pass another --out", file=sys.stderr)
                return 2
    rows = [r for m in args.mixer for r in measure(m, Path(args.data_dir), args.images, args.lams, args.batch,
                                                   args.seed)]
    lines = ['| mask | λ | retention of a (its object visible / its share) | retention of b | share of a | images |',
             '|---|---|---|---|---|---|']
    lines += [f"| {r['mixer']} | {r['lam']:g} | {r['a']:.2f} | {r['b']:.2f} | {r['share_a']:.2f} | {r['images']} |"
              for r in rows]
    text = '\n'.join(lines)
    print(text)
    if args.out:
        Path(args.out + '.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in rows))
        Path(args.out + '.md').write_text(f'{text}\n\n`python bench/object_retention.py --data-dir {args.data_dir} '
                                          f'--mixer {" ".join(args.mixer)}`\n')
    if args.picture:
        picture(args.mixer[0], Path(args.data_dir), Path(args.picture))
        print(f'picture: {args.picture}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
