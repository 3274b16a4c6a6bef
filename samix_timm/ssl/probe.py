""" Probes of a self-supervised backbone (spec §6): kNN and linear classification on frozen features.

    python -m samix_timm.ssl.probe --checkpoint output/ssl/<run>/last.pth.tar --data-dir DIR

kNN: cosine similarity to the training features, the k = 20 nearest vote with weight exp(sim / 0.07)
(InstDisc / DINO). Linear: one ``nn.Linear`` trained by SGD (momentum 0.9, no weight decay) on
features extracted once without augmentation, learning rate ×0.1 at 60% and 80% of the epochs
(lr 0.1 small data, 30 ImageNet, 100 epochs, §6).
"""
import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Dict, Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.data import create_dataset
from timm.models import create_model
from torch.utils.data import DataLoader

from ..cli import guarded
from ..engine.checks import check_input_file, check_new_file, check_numbers
from ..engine.setup import local_device, shared_class_index
from .data import eval_transform, extract_features
from .encoder import backbone_state_dict

__all__ = ['knn_probe', 'linear_probe', 'eval_features', 'backbone_features', 'probe_backbone', 'probe_checkpoint']

_logger = logging.getLogger(__name__)


@torch.no_grad()
def knn_probe(
        train_feats: torch.Tensor,
        train_labels: torch.Tensor,
        val_feats: torch.Tensor,
        val_labels: torch.Tensor,
        k: int = 20,
        temperature: float = 0.07,
        chunk: int = 1024,
) -> float:
    """Top-1 (%) of the weighted kNN vote: weight exp(cos / T) of each of the k nearest training samples."""
    num_classes = int(max(train_labels.max(), val_labels.max())) + 1
    if k > train_feats.shape[0]:  # said, not silent: every training sample then votes
        _logger.warning(f'kNN probe: k={k} is more than the {train_feats.shape[0]} training samples; '
                        f'k={train_feats.shape[0]} is used (every sample votes)')
        k = train_feats.shape[0]
    train = F.normalize(train_feats.float(), dim=1)
    correct = 0
    for start in range(0, val_feats.shape[0], chunk):
        val = F.normalize(val_feats[start:start + chunk].float(), dim=1)
        sim, idx = (val @ train.t()).topk(k, dim=1)  # Bxk
        votes = torch.zeros(val.shape[0], num_classes)
        votes.scatter_add_(1, train_labels[idx], (sim / temperature).exp())
        correct += int((votes.argmax(1) == val_labels[start:start + chunk]).sum())
    return 100. * correct / val_feats.shape[0]


def linear_probe(
        train_feats: torch.Tensor,
        train_labels: torch.Tensor,
        val_feats: torch.Tensor,
        val_labels: torch.Tensor,
        epochs: int = 100,
        lr: float = 0.1,
        batch_size: int = 256,
        seed: int = 0,
) -> float:
    """Top-1 (%) of a linear classifier trained on frozen features (SGD, ×0.1 at 60% and 80%, §6)."""
    gen = torch.Generator().manual_seed(seed)
    num_classes = int(max(train_labels.max(), val_labels.max())) + 1
    head = nn.Linear(train_feats.shape[1], num_classes)
    with torch.no_grad():
        head.weight.normal_(0., 0.01, generator=gen)
        head.bias.zero_()
    opt = torch.optim.SGD(head.parameters(), lr=lr, momentum=0.9, weight_decay=0.)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [int(0.6 * epochs), int(0.8 * epochs)], gamma=0.1)
    n = train_feats.shape[0]
    for _ in range(epochs):
        order = torch.randperm(n, generator=gen)
        for start in range(0, n, batch_size):
            i = order[start:start + batch_size]
            loss = F.cross_entropy(head(train_feats[i]), train_labels[i])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sched.step()
    with torch.no_grad():
        return 100. * float((head(val_feats).argmax(1) == val_labels).float().mean())


def backbone_features(backbone: nn.Module, data_dir: str, split: str, img_size: int, mean, std,
                      crop_pct: float = 0.875, batch_size: int = 256, workers: int = 0,
                      device: Optional[torch.device] = None, class_map: Union[str, Dict[str, int]] = ''):
    """(features, labels) of a headless backbone (eval mode) on an ImageFolder split, eval transform; labels from
    `class_map` (a class-name -> index dict) when given, else the split's own sorted folders."""
    dataset = create_dataset('', root=data_dir, split=split, is_training=False, class_map=class_map,
                             transform=eval_transform(img_size, mean, std, crop_pct))
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers)
    return eval_features(backbone, loader, device or torch.device('cpu'))


def eval_features(backbone: nn.Module, loader, device: torch.device):
    """``extract_features`` of ``backbone`` in eval mode (its mode is restored afterwards)."""
    was_training = backbone.training
    backbone.eval()
    try:
        return extract_features(backbone, loader, device)
    finally:
        backbone.train(was_training)


def probe_backbone(backbone: nn.Module, data_dir: str, img_size: int, mean, std, crop_pct: float = 0.875,
                   train_split: str = 'train', val_split: str = 'validation', knn_k: int = 20,
                   linear_epochs: int = 100, linear_lr: float = 0.1, batch_size: int = 256, workers: int = 0,
                   device: Optional[torch.device] = None, seed: int = 0) -> Dict[str, float]:
    """kNN (and, if ``linear_epochs`` > 0, linear) top-1 of a headless backbone on train -> val."""
    common = dict(img_size=img_size, mean=mean, std=std, crop_pct=crop_pct, batch_size=batch_size,
                  workers=workers, device=device,
                  class_map=shared_class_index(Path(data_dir), train_split, val_split))  # train/'s labels on val/
    train = backbone_features(backbone, data_dir, train_split, **common)
    val = backbone_features(backbone, data_dir, val_split, **common)
    results = dict(knn_top1=round(knn_probe(*train, *val, k=knn_k), 2))
    if linear_epochs > 0:
        results['linear_top1'] = round(linear_probe(*train, *val, epochs=linear_epochs, lr=linear_lr, seed=seed), 2)
    return results


def probe_checkpoint(checkpoint: str, data_dir: str, **kwargs) -> Dict[str, float]:
    """``probe_backbone`` on the backbone of a train_ssl.py checkpoint, with the run's image config."""
    state, config = backbone_state_dict(checkpoint)
    backbone = create_model(config['model'], num_classes=0, **config.get('model_kwargs', {}))
    backbone.load_state_dict(state)
    device = kwargs.get('device') or torch.device('cpu')
    kwargs = dict(dict(img_size=config['img_size'], mean=config['mean'], std=config['std'],
                       crop_pct=config['crop_pct']), **{k: v for k, v in kwargs.items() if v is not None})
    return probe_backbone(backbone.to(device), data_dir, **kwargs)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description='kNN and linear probes of a train_ssl.py checkpoint')
    p.add_argument('--checkpoint', required=True, help='train_ssl.py checkpoint (.pth.tar)')
    p.add_argument('--data-dir', required=True, help='ImageFolder root with train/ and val/')
    p.add_argument('--train-split', default='train')
    p.add_argument('--val-split', default='validation', help='validation split (also finds val/)')
    p.add_argument('--knn-k', type=int, default=20, help='neighbours of the kNN vote')
    p.add_argument('--linear-epochs', type=int, default=100, help='linear-probe epochs (0 = kNN only)')
    p.add_argument('--linear-lr', type=float, default=0.1, help='0.1 small data, 30 ImageNet (§6)')
    p.add_argument('--img-size', type=int, default=None, help='default: the training image size')
    p.add_argument('-b', '--batch-size', type=int, default=256)
    p.add_argument('-j', '--workers', type=int, default=0)
    p.add_argument('--device', default=None, help='default cuda if available, else cpu')
    p.add_argument('--seed', type=int, default=0, help='linear-probe seed')
    p.add_argument('--results-file', default='', help='also write the results as JSON here')
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)

    def _run() -> int:
        check_numbers(args)
        device = local_device(args.device)
        check_input_file('checkpoint', args.checkpoint, 'a train_ssl.py checkpoint (output/ssl/<run>/last.pth.tar)')
        if args.results_file:
            check_new_file('results_file', args.results_file)  # before the probes run, not after
        results = probe_checkpoint(
            args.checkpoint, args.data_dir, img_size=args.img_size, train_split=args.train_split,
            val_split=args.val_split, knn_k=args.knn_k, linear_epochs=args.linear_epochs,
            linear_lr=args.linear_lr, batch_size=args.batch_size, workers=args.workers, device=device,
            seed=args.seed)
        text = json.dumps(dict(checkpoint=args.checkpoint, **results), indent=2)
        print(text)
        if args.results_file:
            Path(args.results_file).parent.mkdir(parents=True, exist_ok=True)
            with open(args.results_file, 'x') as f:
                f.write(text)
        return 0

    return guarded(_run)


if __name__ == '__main__':
    sys.exit(main())
