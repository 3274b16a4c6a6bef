""" Pictures of what a learned mixer does: rows of (x_i, x_j, mask, x_mix) under a legend, tiles large enough to
see. """
import math
from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torchvision.utils import make_grid, save_image

COLUMNS = ('image', 'partner', 'mask (white = partner)', 'mixed')


def _legend(width: int, tile: int, padding: int, text: str) -> torch.Tensor:
    """3xhxwidth strip: `text` on its first line, the column names centred over the columns below."""
    height = 30
    img = Image.new('RGB', (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    draw.text((padding, 1), text, fill=(0, 0, 0))
    for i, name in enumerate(COLUMNS):
        left = padding + i * (tile + padding)
        w = draw.textlength(name)
        draw.text((left + max(0, (tile - w) / 2), 15), name, fill=(0, 0, 0))
    return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float() / 255


def mix_grid(preview: Dict[str, torch.Tensor], mean: Sequence[float], std: Sequence[float], rows: int = 8,
             min_tile: int = 128, lam: Optional[float] = None) -> torch.Tensor:
    """3xHxW image grid, one row per sample: image, partner, mask (white = partner), mixed image; each tile
    upsampled (nearest, whole pixels) to at least `min_tile` px, under a legend naming the columns and λ."""
    mean_t = torch.tensor(mean, device=preview['x_i'].device).view(1, -1, 1, 1)
    std_t = torch.tensor(std, device=preview['x_i'].device).view(1, -1, 1, 1)

    def _show(x):
        return (x[:rows].float() * std_t + mean_t).clamp(0, 1)

    mask = preview['mask'][:rows].float().expand(-1, 3, -1, -1)
    tiles = torch.stack([_show(preview['x_i']), _show(preview['x_j']), mask, _show(preview['x_mix'])], dim=1)
    tiles = tiles.flatten(0, 1).cpu()
    scale = max(1, math.ceil(min_tile / max(tiles.shape[-2:])))
    if scale > 1:
        tiles = F.interpolate(tiles, scale_factor=scale, mode='nearest')
    padding = 4
    grid = make_grid(tiles, nrow=4, padding=padding, pad_value=1.0)
    keep = (1 - preview['mask'][:rows].float()).mean().item()
    text = (f'lam {lam:g}: ' if lam is not None else '') + f'the mixed images keep {keep:.2f} of the image on average'
    return torch.cat([_legend(grid.shape[-1], tiles.shape[-1], padding, text), grid], dim=1)


def write_mix_grid(samix, x: torch.Tensor, mean, std, epoch: int, output_dir: Path,
                   tb_writer: Optional[object] = None, lam: float = 0.5) -> Path:
    """Save the classifier-branch mixing of `x` at `lam` as PNG (and to tensorboard); returns the PNG path."""
    grid = mix_grid(samix.preview(x, lam), mean, std, lam=lam)
    path = output_dir / f'samix_mix_epoch{epoch:03d}.png'
    save_image(grid, path)
    if tb_writer is not None:
        tb_writer.add_image('samix/mix', grid, epoch)
    return path
