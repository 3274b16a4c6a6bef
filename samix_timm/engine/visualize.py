""" Pictures of what a learned mixer does: rows of (x_i, x_j, mask, x_mix). """
from pathlib import Path
from typing import Dict, Optional, Sequence

import torch
from torchvision.utils import make_grid, save_image


def mix_grid(preview: Dict[str, torch.Tensor], mean: Sequence[float], std: Sequence[float], rows: int = 8) -> torch.Tensor:
    """3xHxW image grid, one row per sample: image, partner, mask (white = partner), mixed image."""
    mean_t = torch.tensor(mean, device=preview['x_i'].device).view(1, -1, 1, 1)
    std_t = torch.tensor(std, device=preview['x_i'].device).view(1, -1, 1, 1)

    def _show(x):
        return (x[:rows].float() * std_t + mean_t).clamp(0, 1)

    mask = preview['mask'][:rows].float().expand(-1, 3, -1, -1)
    tiles = torch.stack([_show(preview['x_i']), _show(preview['x_j']), mask, _show(preview['x_mix'])], dim=1)
    return make_grid(tiles.flatten(0, 1).cpu(), nrow=4, padding=2, pad_value=0.5)


def write_mix_grid(samix, x: torch.Tensor, mean, std, epoch: int, output_dir: Path,
                   tb_writer: Optional[object] = None) -> Path:
    """Save the classifier-branch mixing of `x` as PNG (and to tensorboard); returns the PNG path."""
    grid = mix_grid(samix.preview(x), mean, std)
    path = output_dir / f'samix_mix_epoch{epoch:03d}.png'
    save_image(grid, path)
    if tb_writer is not None:
        tb_writer.add_image('samix/mix', grid, epoch)
    return path
