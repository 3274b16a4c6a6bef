""" The MoCo v2 encoder: a headless timm backbone plus the 2-layer MLP projector (§6), and backbone export. """
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.models import create_model, is_model

from ..errors import ConfigError
from ..files import read_torch_file, write_new_torch_file

__all__ = ['Projector', 'SSLEncoder', 'create_ssl_encoder', 'backbone_state_dict', 'export_backbone']


class Projector(nn.Sequential):
    """MoCo v2 MLP head: Linear(C, hidden) -> ReLU -> Linear(hidden, dim).

    Args:
        in_features: Pooled backbone features C.
        hidden: Hidden width (2048 in MoCo v2).
        dim: Embedding dimension (128).
    """

    def __init__(self, in_features: int, hidden: int = 2048, dim: int = 128):
        super().__init__(nn.Linear(in_features, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, dim))


class SSLEncoder(nn.Module):
    """Backbone (timm model built with ``num_classes=0``) followed by the projector.

    Args:
        backbone: Headless timm model; ``forward`` returns pooled features of ``num_features``.
        proj_hidden: Projector hidden width.
        proj_dim: Embedding dimension.
    """

    def __init__(self, backbone: nn.Module, proj_hidden: int = 2048, proj_dim: int = 128):
        super().__init__()
        self.backbone = backbone
        self.projector = Projector(backbone.num_features, proj_hidden, proj_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Nx3xHxW -> L2-normalised NxD embedding."""
        return F.normalize(self.projector(self.backbone(x)), dim=1)

    def forward_with_map(self, x: torch.Tensor, index: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One backbone pass giving (embedding NxD, pooled features NxC, stage-``index`` map, §1)."""
        final, maps = self.backbone.forward_intermediates(x, indices=[index])
        pooled = self.backbone.forward_head(final)  # NxC (headless: pre-logits)
        return F.normalize(self.projector(pooled), dim=1), pooled, maps[0]


def create_ssl_encoder(model: str, proj_hidden: int = 2048, proj_dim: int = 128, **model_kwargs) -> SSLEncoder:
    """Build an SSLEncoder around the timm model ``model`` (any family with ``forward_intermediates``)."""
    if not is_model(model):
        raise ConfigError(f"unknown timm model '{model}': pick a name from timm.list_models()")
    backbone = create_model(model, num_classes=0, **model_kwargs)
    return SSLEncoder(backbone, proj_hidden, proj_dim)


def backbone_state_dict(checkpoint: Union[str, Path, Dict]) -> Tuple[Dict[str, torch.Tensor], Dict]:
    """(backbone state_dict, saved run config) of a train_ssl.py checkpoint."""
    if not isinstance(checkpoint, dict):
        path = Path(checkpoint)
        if not path.is_file():
            raise ConfigError(f"checkpoint '{path}' is not a file: pass a train_ssl.py checkpoint "
                              f"(output/ssl/<run>/last.pth.tar)")
        checkpoint = read_torch_file(path, 'train_ssl.py checkpoint', 'pass output/ssl/<run>/last.pth.tar')
        if not isinstance(checkpoint, dict):
            raise ConfigError(f"checkpoint '{path}' holds a {type(checkpoint).__name__}, not a train_ssl.py checkpoint")
    if 'encoder' not in checkpoint:
        raise ConfigError('the checkpoint holds no SSL encoder: pass one written by train_ssl.py')
    prefix = 'backbone.'
    state = {k[len(prefix):]: v for k, v in checkpoint['encoder'].items() if k.startswith(prefix)}
    return state, checkpoint.get('config', {})


def export_backbone(checkpoint: Union[str, Path], out: Union[str, Path], num_classes: Optional[int] = None) -> Path:
    """Write the backbone of an SSL checkpoint as a timm ``state_dict`` file.

    Without ``num_classes`` the file is headless: load it with ``train.py --pretrained
    --pretrained-path FILE`` (timm drops/initialises the classifier). With ``num_classes`` a freshly
    initialised classifier of that size is included, so ``train.py --initial-checkpoint FILE``
    (a strict load) accepts it. An existing ``out`` is never replaced.
    """
    state, config = backbone_state_dict(checkpoint)
    if num_classes is not None:
        model = create_model(config['model'], num_classes=num_classes, **config.get('model_kwargs', {}))
        missing, unexpected = model.load_state_dict(state, strict=False)
        if unexpected:
            raise ConfigError(f'backbone keys {unexpected[:3]} do not fit {config["model"]}: the checkpoint is damaged')
        state = model.state_dict()
    return write_new_torch_file(state, Path(out), 'write it to a folder you can write to, with free space')
