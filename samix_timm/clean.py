""" The clean-batch term of the reference SAMix step (method §5.6), for any batch mixer.

The reference trains the classifier on W·CE(f_θ(x), y) + the mixup loss on the mixed batch. train.py's step
(`samix_timm.task.MixTask`) takes the clean rows with `CleanTerm.batch` and weighs the two losses itself. For a
training loop of one's own that keeps the `(x, target) -> (x_out, target_out)` call of `timm.data.Mixup`, a mixer
with a clean term returns the clean batch followed by the mixed one (2N rows, targets alike), and `CleanMixLoss`
weighs the two halves:

    x, y = mixer(x, y)                       # 2N: [clean; mixed]
    loss = loss_fn(forward_batch(model, x, mixer), y)   # loss_fn = mixer.loss(SoftTargetCrossEntropy())

The clean half's targets go through the recipe's own loss, so they follow it: one-hot with the
recipe's smoothing for soft-target CE, BCE with its target threshold for RSB recipes.
"""
import copy
from typing import Callable, Optional, Tuple

import torch
import torch.nn as nn

from .errors import ConfigError
from .limits import KEYWORD_LIMITS, check_keyword
from .mixing import soft_target

CLEAN_FORWARDS = ('joint', 'separate')
CLEAN_HEADS = ('shared', 'own')  # the clean batch through the classifier's head, or a training-only head of its own


def clean_rows(frac: float, batch_size: int) -> int:
    """Images of a batch of `batch_size` the clean-batch term sees with fraction `frac`: round(frac·N), at least 1."""
    return max(1, round(frac * batch_size))


class CleanTerm:
    """Joins the clean and the mixed batch and remembers where the clean rows end.

    Args:
        weight: W of W·CE(f_θ(x), y) (0 = off; the reference uses 1).
        num_classes: classes of the clean one-hot targets.
        smoothing: label smoothing of the clean targets (the recipe's, as for the mixed ones).
        forward: 'joint' (one forward of the 2N batch: BatchNorm sees both halves together) or
            'separate' (two forwards, as the reference: each half has its own BN statistics).
        frac: fraction of the clean batch the term sees (1 = the reference; < 1: its first rows, which the
            loader's shuffle makes a random subset; an economy of ours). Each clean row keeps the weight W/N it has
            in the reference term (`term_weight`): the loss on n rows counts W·n/N, not W (method §5.6).
    """

    def __init__(self, weight: float, num_classes: int, smoothing: float = 0.0, forward: str = 'joint',
                 frac: float = 1.0):
        check_keyword('weight', weight, KEYWORD_LIMITS['clean_weight'])  # 0 = off, the reference uses 1
        if forward not in CLEAN_FORWARDS:
            raise ValueError(f"forward={forward!r} is not known: use one of {', '.join(CLEAN_FORWARDS)}")
        check_keyword('frac', frac, KEYWORD_LIMITS['clean_frac'])
        self.weight, self.num_classes, self.smoothing, self.forward = weight, num_classes, smoothing, forward
        self.frac = frac
        self.split: Optional[int] = None  # clean rows at the head of the last returned batch, None = not joined
        self.rows: Optional[int] = None  # rows of the last joined batch (clean + mixed)
        self.batch_rows: Optional[int] = None  # rows of the clean batch the clean rows were taken from

    def batch(self, x: torch.Tensor, target: torch.Tensor) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
        """(x_clean, y_clean): the rows the term sees (all, or the first `frac` of them) and their one-hot targets
        with the recipe's smoothing; None when the term is off. Keeps no state (what `MixTask` uses)."""
        if self.weight == 0:
            return None
        n = clean_rows(self.frac, x.shape[0])
        return x[:n], soft_target(target[:n], None, 1., self.num_classes, self.smoothing)  # nxK, one-hot (smoothed)

    def term_weight(self, clean_rows: int, batch_rows: int) -> float:
        """The factor of the recipe's (row-mean) loss on `clean_rows` of a batch of `batch_rows`: W·n/N, each clean
        image weighed as in the reference term (§5.6). W alone on a quarter of the rows put 4x the weight on each and
        cost 7 points beside timm Mixup (docs/benchmarks.md)."""
        return self.weight * clean_rows / batch_rows

    def join(self, x: torch.Tensor, target: torch.Tensor, x_mix: torch.Tensor, y_mix: torch.Tensor
             ) -> Tuple[torch.Tensor, torch.Tensor]:
        """[x; x_mix] and [onehot(y); ỹ] (2N rows, fewer clean ones when `frac` < 1), or the mixed batch
        alone when the term is off; remembers the split for `CleanMixLoss` (the Mixup-shaped call for own loops)."""
        clean = self.batch(x, target)
        if clean is None:
            self.split = None
            return x_mix, y_mix
        self.split, self.rows, self.batch_rows = clean[0].shape[0], clean[0].shape[0] + x_mix.shape[0], x.shape[0]
        return torch.cat([clean[0], x_mix]), torch.cat([clean[1], y_mix])

    def skip(self) -> None:
        """The mixer handed back an unmixed batch (mixing off): no clean half to weigh."""
        self.split = None


class CleanMixLoss(nn.Module):
    """W·loss(clean half) + loss(mixed half) for batches a `CleanTerm` joined; the plain loss otherwise.

    Args:
        loss_fn: the recipe's training loss (soft-target CE, BCE, ...).
        clean: the `CleanTerm` of the mixer that produced the batch.
    """

    def __init__(self, loss_fn: nn.Module, clean: CleanTerm):
        super().__init__()
        self.loss_fn, self.clean = loss_fn, clean

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        n = self.clean.split
        if n is None:
            return self.loss_fn(output, target)
        if output.shape[0] != self.clean.rows:
            raise ConfigError(f'the loss got {output.shape[0]} rows but the mixer returned {self.clean.rows} '
                              f'({n} clean + {self.clean.rows - n} mixed): '
                              f'compute the loss on the whole batch the mixer returned')
        w = self.clean.term_weight(n, self.clean.batch_rows)
        return w * self.loss_fn(output[:n], target[:n]) + self.loss_fn(output[n:], target[n:])


class CleanBatch:
    """Adds the clean-batch term to a mixer that has none (timm's `Mixup`): the fair control of §5.6.

    Args:
        mixer: a `(x, target) -> (x_mix, soft_target)` mixer.
        clean: the `CleanTerm` to apply.
    """

    def __init__(self, mixer: Callable, clean: CleanTerm):
        self.mixer, self.clean = mixer, clean

    @property
    def mixup_enabled(self) -> bool:
        return self.mixer.mixup_enabled

    @mixup_enabled.setter
    def mixup_enabled(self, value: bool) -> None:
        self.mixer.mixup_enabled = value

    def __call__(self, x: torch.Tensor, target: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        if not self.mixer.mixup_enabled:
            self.clean.skip()
            return self.mixer(x, target)
        clean = x.clone()  # timm's Mixup mixes in place: the clean half must be taken before
        x_mix, y_mix = self.mixer(x, target)
        return self.clean.join(clean, target, x_mix, y_mix)

    def loss(self, loss_fn: nn.Module) -> CleanMixLoss:
        return CleanMixLoss(loss_fn, self.clean)


class CleanHeadClassifier(nn.Module):
    """The classifier with the reference's second head (§5.6, `clean_head='own'`): the clean batch is classified by
    a training-only copy of the classifier's last layer (`head`; OpenMixup's head_one) on the shared features, the
    mixed batch by the classifier itself (head_mix). One module, so one DDP wrap syncs both; a checkpoint's
    `state_dict` holds `model` alone, the model users load.

    Args:
        model: a timm classifier (`forward_features`, `forward_head(pre_logits=True)`, a linear `get_classifier()`).
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        classifier = model.get_classifier() if hasattr(model, 'get_classifier') else None
        if not isinstance(classifier, nn.Linear) or not hasattr(model, 'forward_head'):
            raise ConfigError(f"clean_head='own' needs a timm classifier whose get_classifier() is one nn.Linear "
                              f"over forward_head(pre_logits=True); {type(model).__name__} has "
                              f"{type(classifier).__name__}: use clean_head='shared'")
        self.model = model
        self.head = copy.deepcopy(classifier)  # starts where the classifier's head starts

    def forward(self, x_clean: Optional[torch.Tensor], x_mix: torch.Tensor, separate: bool = True
                ) -> Tuple[Optional[torch.Tensor], torch.Tensor]:
        """(clean-head logits of x_clean, classifier logits of x_mix); `separate`: one backbone pass per half (BN
        statistics per half, as the reference), else one pass of both."""
        if x_clean is None:
            return None, self.model(x_mix)
        if separate:
            pooled = self.model.forward_head(self.model.forward_features(x_clean), pre_logits=True)
            return self.head(pooled), self.model(x_mix)
        n = x_clean.shape[0]
        features = self.model.forward_features(torch.cat([x_clean, x_mix]))
        return (self.head(self.model.forward_head(features[:n], pre_logits=True)),
                self.model.forward_head(features[n:]))


def forward_batch(model: nn.Module, x: torch.Tensor, mixer: Optional[object] = None) -> torch.Tensor:
    """model(x), or one forward per half when the mixer's clean term asks for separate BN statistics."""
    clean = getattr(mixer, 'clean', None)
    if clean is None or clean.split is None or clean.forward == 'joint':
        return model(x)
    n = clean.split
    return torch.cat([model(x[:n]), model(x[n:])])
