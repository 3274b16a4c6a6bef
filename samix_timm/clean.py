""" The clean-batch term of the reference SAMix step (method §5.6), for any batch mixer.

The reference trains the classifier on W·CE(f_θ(x), y) + the mixup loss on the mixed batch. The training step
(`samix_timm.task.MixTask`, `SAMixTask`) takes the clean rows with `CleanTerm.batch` and weighs the two losses with
`CleanTerm.term_weight`; the clean half's targets go through the recipe's own loss, so they follow it: one-hot with
the recipe's smoothing for soft-target CE, BCE with its target threshold for RSB recipes. `CleanHeadClassifier` is
the reference's second, training-only head for the clean batch.
"""
import copy
from typing import Optional, Tuple

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
    """The clean-batch term's settings: which clean rows it sees, with which targets and weight.

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

    def batch(self, x: torch.Tensor, target: torch.Tensor) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
        """(x_clean, y_clean): the rows the term sees (all, or the first `frac` of them) and their one-hot targets
        with the recipe's smoothing; None when the term is off."""
        if self.weight == 0:
            return None
        n = clean_rows(self.frac, x.shape[0])
        return x[:n], soft_target(target[:n], None, 1., self.num_classes, self.smoothing)  # nxK, one-hot (smoothed)

    def term_weight(self, clean_rows: int, batch_rows: int) -> float:
        """The factor of the recipe's (row-mean) loss on `clean_rows` of a batch of `batch_rows`: W·n/N, each clean
        image weighed as in the reference term (§5.6). W alone on a quarter of the rows put 4x the weight on each and
        cost 7 points beside timm Mixup (docs/benchmarks.md)."""
        return self.weight * clean_rows / batch_rows


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
