""" The mixing pictures runs write (issue 33): tiles large enough to see, under a legend. """
import torch

from samix_timm.engine.visualize import mix_grid


def test_mix_grid_upsamples_tiles_and_adds_a_legend():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(8, 3, 32, 32, generator=g)
    mask = (torch.rand(8, 1, 32, 32, generator=g) > 0.7).float()  # keeps 0.7 of each image
    preview = dict(x_i=x, x_j=x.flip(0), mask=mask, x_mix=x * (1 - mask) + x.flip(0) * mask)
    grid = mix_grid(preview, mean=[0.] * 3, std=[1.] * 3, lam=0.3)
    tile, pad, legend = 128, 4, 30  # 32-px tiles scaled 4x (whole pixels), 4-px gaps, a 30-px legend strip
    assert grid.shape == (3, legend + 8 * (tile + pad) + pad, 4 * (tile + pad) + pad)
    first_mask = grid[:, legend + pad:legend + pad + tile, 2 * (tile + pad) + pad:3 * (tile + pad)]
    # nearest upsampling: the mask tile is the 32x32 mask with every pixel a 4x4 block
    torch.testing.assert_close(first_mask, mask[0].expand(3, -1, -1).repeat_interleave(4, 1).repeat_interleave(4, 2))
    strip = grid[:, :legend]
    assert strip.min() < 0.5 < strip.max()  # text drawn on white
    assert mix_grid(preview, [0.] * 3, [1.] * 3, min_tile=16).shape[-1] == 4 * (32 + pad) + pad  # never shrunk
