""" MoCo v2 with cross-view mixing: the baselines and SAMix-I / SAMix-C (spec §6).

``MoCoOnline`` is the trained module (encoder + optional cluster head) that DDP wraps;
``MoCoSAMix`` holds everything else (momentum encoder, queue, Mixer branch, pseudo-labels) and
computes one step's loss, reading like the method:

    θ̄ ← m θ̄ + (1 − m) θ                                 momentum update
    k1, k2, z1, z2 = f_θ̄(x1), f_θ̄(x2)                     keys and stage-l maps (shuffled BN)
    Mixer branch:  s_k = M_φ(z1, z2[π_k], λ_k)  -> L_φ     (SAMix-I/-C only, gradient to φ only)
    encoder branch: s_q (Mixer / mixup / cutmix), x_mix = (1 − s_q) x1 + s_q x2[π_q]
    L_θ = infoNCE(q1, k2, Q) + l_-^I(q_mix, k2, k1[π_q], Q, λ_q)  (+ cluster head CE for SAMix-C)
    enqueue k2

The queue is first filled with real keys of f_θ̄ at initialisation (``warm_up_queue``): random
unit vectors as negatives let the encoder pull every embedding towards one point while they are
flushed (docs/method.md §6). Per-step metrics stay on the device (no host synchronisation);
``key_cosine`` (mean cosine between the batch's keys) and ``instance_top1`` (how often a query's
nearest in-batch key is its own) are the collapse signals.
"""
from contextlib import nullcontext
from typing import Callable, Dict, Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import ConfigError
from ..limits import check_keyword
from ..features import FeatureTap
from ..losses import eta_balanced_bce
from ..mixer import mixer_inference
from ..mixing import draw_lam, mix_images, mixer_mask, preview_dict, preview_index
from ..momentum import MomentumEncoder, MomentumSchedule
from .distributed import gather, shuffle_batch, unshuffle
from .encoder import SSLEncoder
from .losses import eta_instance_loss, info_nce, lam_info_nce
from .mixer_branch import SSLMixerBranch
from .mixing import get_ssl_mode, global_derangement
from .queue import KeyQueue

__all__ = ['MoCoOnline', 'MoCoSAMix', 'collapse_signals']

MetricType = Union[float, torch.Tensor]


@torch.no_grad()
def collapse_signals(q: torch.Tensor, k: torch.Tensor) -> Dict[str, torch.Tensor]:
    """Collapse signals of one batch (NxD normalised queries and their keys), as device scalars:
    ``key_cosine`` the mean cosine between different keys (→ 1 when every embedding is one point),
    ``instance_top1`` the % of queries whose most similar in-batch key is their own (chance 100/N)."""
    k = k.float()
    n = k.shape[0]
    sim = k @ k.t()
    key_cosine = (sim.sum() - sim.diagonal().sum()) / max(n * (n - 1), 1)
    own = (q.float() @ k.t()).argmax(dim=1) == torch.arange(n, device=k.device)
    return dict(key_cosine=key_cosine, instance_top1=100. * own.float().mean())


class MoCoOnline(nn.Module):
    """What the encoder optimizer trains: the encoder f_θ and, for SAMix-C, the cluster head.

    Args:
        encoder: Backbone + projector.
        num_clusters: Outputs of the cluster-classifier head (0 = no head).
    """

    def __init__(self, encoder: SSLEncoder, num_clusters: int = 0):
        super().__init__()
        self.encoder = encoder
        self.cluster_head = nn.Linear(encoder.backbone.num_features, num_clusters) if num_clusters else None

    def forward(self, x: torch.Tensor, x_mix: Optional[torch.Tensor] = None,
                head_input: Optional[torch.Tensor] = None):
        """(q NxD, q_mix NxD or None, cluster logits NxC or None) in one call, as DDP needs."""
        q = self.encoder(x)
        q_mix = self.encoder(x_mix) if x_mix is not None else None
        logits = self.cluster_head(head_input) if head_input is not None else None
        return q, q_mix, logits


class MoCoSAMix:
    """MoCo v2 + one ``--ssl-mix`` mode (none, mixup, cutmix, samix_i, samix_c).

    Args:
        online: The unwrapped ``MoCoOnline`` (before DDP).
        mode: ``--ssl-mix`` name.
        total_steps: Steps of the whole run (schedules are functions of the step).
        queue_size: Keys in the queue (65,536 ImageNet-1k, 16,384 small data, §6).
        temperature: T of every contrastive loss (0.2).
        moco_momentum: Key-encoder momentum m (0.999 in MoCo v2; constant).
        alpha: λ ~ Beta(α, α) (§0).
        mix_weight: Weight of the mixed-image loss in the encoder loss.
        eta: η of the Mixer losses (§4, 0.5).
        tap_index: Stage the Mixer reads (default: ``FeatureTap``'s rule for ``input_size``).
        input_size: Training image size for the small-input stage rule (§1).
        mixer_kwargs: kwargs of ``SSLMixerBranch`` (mixer, mixer_kwargs, lr, min_lr, beta, ...): train_ssl.py's are
            ``defaults.ssl_mixer_defaults(...)``.
        amp_autocast: Autocast context factory of every network forward (``--amp``).
        grad_scaler: ``torch.amp.GradScaler`` of the Mixer update under fp16, or None.
    """

    def __init__(
            self,
            online: MoCoOnline,
            mode: str,
            total_steps: int,
            queue_size: int = 16384,
            temperature: float = 0.2,
            moco_momentum: float = 0.999,
            alpha: float = 2.0,
            mix_weight: float = 1.0,
            eta: float = 0.5,
            tap_index: Optional[int] = None,
            input_size: Optional[int] = None,
            mixer_kwargs: Optional[Dict] = None,
            amp_autocast: Callable = nullcontext,
            grad_scaler: Optional[torch.amp.GradScaler] = None,
    ):
        self.mode = get_ssl_mode(mode)
        if self.mode.uses_clusters and online.cluster_head is None:
            raise ConfigError(f'mode={mode!r} needs a cluster head: build MoCoOnline with num_clusters >= 2')
        check_keyword('moco_momentum', moco_momentum)
        check_keyword('alpha', alpha)
        check_keyword('eta', eta)
        device = next(online.parameters()).device
        self.online = online
        self.temperature, self.alpha, self.mix_weight, self.eta = temperature, alpha, mix_weight, eta
        self.amp_autocast = amp_autocast
        self.momentum = MomentumEncoder(online.encoder, MomentumSchedule(moco_momentum, moco_momentum, total_steps))
        tap = FeatureTap(self.momentum.module.backbone, index=tap_index, input_size=input_size)
        self.tap_index = tap.index
        self.queue = KeyQueue(queue_size, online.encoder.projector[-1].out_features).to(device)
        self.mixer: Optional[SSLMixerBranch] = None
        if self.mode.mixer_loss is not None:
            self.mixer = SSLMixerBranch(tap.channels, total_steps, device=device, amp_autocast=amp_autocast,
                                        grad_scaler=grad_scaler, **(mixer_kwargs or {}))
        self.pseudo_labels: Optional[torch.Tensor] = None  # (num_train,) for SAMix-C
        self.step = 0

    # -- keys -------------------------------------------------------------------------------------

    @torch.no_grad()
    def keys(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(key NxD, pooled features NxC, stage-l map) of f_θ̄ on ``x``, with shuffled BN under DDP."""
        xs, order = shuffle_batch(x)
        with self.amp_autocast():
            k, pooled, z = self.momentum.module.forward_with_map(xs, self.tap_index)
        return unshuffle(k, order), unshuffle(pooled, order), unshuffle(z, order)

    # -- one step ---------------------------------------------------------------------------------

    def __call__(self, model: nn.Module, x1: torch.Tensor, x2: torch.Tensor, index: torch.Tensor
                 ) -> Tuple[torch.Tensor, Dict[str, float]]:
        """Loss of the encoder (and cluster head) for views ``x1``, ``x2`` of the samples ``index``.

        Trains the Mixer on the way (SAMix modes), then enqueues this batch's keys and counts the step, as MoCo's
        forward does (the loss reads a copy of the queue). ``model`` is ``online`` or its DDP wrapper.
        """
        metrics: Dict[str, MetricType] = {}
        metrics['moco_momentum'] = self.momentum.step(self.online.encoder, self.step)  # θ̄ before the keys, as MoCo
        negatives = self.queue.keys.clone()  # KxD, the queue before this batch's keys
        k2, pooled2, z2 = self.keys(x2)
        x_mix = head_input = None
        lam = 1.
        if self.mode.mixes:
            k1, pooled1, z1 = self.keys(x1)
            x2_all, z2_all, k1_all = gather(x2), gather(z2), gather(k1)  # partners come from the global batch
            if self.mixer is not None:
                metrics.update(self._train_mixer(x1, x2_all, z1, z2_all, k2, k1_all, negatives, index))
            lam = draw_lam(self.alpha)  # λ_q
            index_q = global_derangement(x1.shape[0], x1.device)  # π_q, used for images and keys alike
            if self.mixer is not None:
                s = self.mixer.mask(z1, z2_all, lam, index_q, x1.shape[-2:])
            else:
                s, lam = self.mode.mask(lam, x1.shape[0], x1.shape[-2:], x1.device)
            x_mix = mix_images(x1, s, index_q, partner=x2_all)  # view 1 with the partners' view 2 (§6)
            k_partner = k1_all[index_q]  # key of the partner's other view (§6)
            if self.mode.uses_clusters:
                head_input = pooled1
        with self.amp_autocast():
            q, q_mix, logits = model(x1, x_mix, head_input)
            loss_moco = info_nce(q, k2, negatives, self.temperature)
            loss = loss_moco
            metrics['loss_moco'] = loss_moco.detach()
            if q_mix is not None:
                loss_mix = lam_info_nce(q_mix, k2, k_partner, negatives, lam, self.temperature)  # §6 encoder loss
                loss = loss + self.mix_weight * loss_mix
                metrics.update(loss_mix=loss_mix.detach(), lam=lam)
            if logits is not None:
                loss_head = F.cross_entropy(logits, self.pseudo_labels[index.cpu()].to(logits.device))
                loss = loss + loss_head
                metrics['loss_cluster_head'] = loss_head.detach()
        metrics.update(collapse_signals(q.detach(), k2))
        self.queue.enqueue(gather(k2))  # the keys of every rank become negatives of the next steps
        self.step += 1
        return loss, metrics

    @torch.no_grad()
    def warm_up_queue(self, loader, device: torch.device, channels_last: bool = False) -> int:
        """Fill the queue with keys of f_θ̄ on second views from ``loader`` before the first step; returns
        the batches used. A queue that already holds real keys (a resumed run) is left as it is."""
        batches = 0
        while not self.queue.full:
            for (_, x2), _ in loader:
                x2 = x2.to(device, non_blocking=True)
                if channels_last:
                    x2 = x2.contiguous(memory_format=torch.channels_last)
                self.queue.enqueue(gather(self.keys(x2)[0]))
                batches += 1
                if self.queue.full:
                    break
        return batches

    @torch.no_grad()
    def preview(self, x: torch.Tensor, lam: float = 0.5) -> Dict[str, torch.Tensor]:
        """(x_i, x_j, s, x_mix) of the learned Mixer on one batch of images, partners from the same batch: f_θ̄'s
        stage-l map in its training mode, the Mixer as ``mixer_inference`` (dropout off). For the per-epoch Mixer
        health (§2.6); runs on one rank (no collectives) and leaves every BatchNorm statistic as it was."""
        if self.mixer is None:
            raise ValueError(f'the {self.mode.name} mode has no learned Mixer to preview')
        index = preview_index(x.shape[0], x.device)
        encoder = self.momentum.module
        saved = {k: v.clone() for k, v in encoder.state_dict().items() if not v.is_floating_point() or 'running' in k}
        try:
            with self.amp_autocast(), mixer_inference(self.mixer.mixer) as mixer:
                _, _, z = encoder.forward_with_map(x, self.tap_index)
                s = mixer_mask(mixer, z, lam, index, x.shape[-2:], self.mixer.lam_margin)
        finally:
            encoder.load_state_dict(saved, strict=False)
        return preview_dict(x, s, index)

    def _train_mixer(self, x1, x2_all, z1, z2_all, k2, k1_all, negatives, index) -> Dict[str, MetricType]:
        """Mixer branch with its own λ_k and π_k (§5.4, §6), loss through frozen θ̄ (and head)."""
        lam = draw_lam(self.alpha)  # λ_k
        index_k = global_derangement(x1.shape[0], x1.device)  # π_k: images, Mixer features and keys
        encoder = self.momentum.module
        if self.mode.mixer_loss == 'instance':
            k_partner = k1_all[index_k]

            def score(x_mix):  # l_eta^I = l_+^I + η l_-^I through f_θ̄ (§4)
                return eta_instance_loss(encoder(x_mix), k2, k_partner, negatives, lam, self.eta, self.temperature)
        else:
            labels = self.pseudo_labels[index.cpu()].to(x1.device)
            labels_partner = gather(labels)[index_k]
            head = self.online.cluster_head

            def score(x_mix):  # class-level l_eta on the (frozen) cluster head (§4, §6)
                logits = F.linear(encoder.backbone(x_mix), head.weight.detach(), head.bias.detach())
                return eta_balanced_bce(logits, labels, labels_partner, lam, self.eta)
        metrics = self.mixer.train_step(x1, x2_all, z1, z2_all, lam, index_k, score, self.step)
        metrics['lam_k'] = lam
        return metrics

    # -- pseudo-labels (SAMix-C) ------------------------------------------------------------------

    def set_pseudo_labels(self, labels: torch.Tensor) -> None:
        """k-means cluster of every training sample (§6), indexed like the training dataset."""
        self.pseudo_labels = labels.long().cpu()

    # -- state ------------------------------------------------------------------------------------

    def state_dict(self) -> Dict:
        return dict(step=self.step, momentum_encoder=self.momentum.module.state_dict(),
                    queue=self.queue.state_dict(), tap_index=self.tap_index,
                    mixer=self.mixer.state_dict() if self.mixer is not None else None,
                    pseudo_labels=self.pseudo_labels)

    def load_state_dict(self, state: Dict) -> None:
        self.step = state['step']
        self.momentum.module.load_state_dict(state['momentum_encoder'])
        self.queue.load_state_dict(state['queue'])
        if self.mixer is not None:
            self.mixer.load_state_dict(state['mixer'], self.step)
        if state.get('pseudo_labels') is not None:
            self.set_pseudo_labels(state['pseudo_labels'])
