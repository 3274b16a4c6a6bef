""" Allowed values of samix-timm's numbers: one table that the library (naming keyword arguments) and the scripts
(naming flags, `engine.checks`) both check against, so a range and its wording exist once. """
import math
import numbers
from typing import Any, Callable, Dict, NamedTuple, Optional

from .errors import ConfigError

__all__ = ['Limit', 'at_least', 'above', 'closed', 'half_open', 'PROB', 'RATE', 'FRACTION', 'KEYWORD_LIMITS',
           'check_keyword']


class Limit(NamedTuple):
    """A range: `text` completes "it must be ...", `ok` tests a value, `integer` asks for a whole number."""
    text: str
    ok: Callable[[float], bool]
    integer: bool = False


def at_least(lo: float, integer: bool = False) -> Limit:
    return Limit(f'>= {lo:g}', lambda v: v >= lo, integer)


def above(lo: float) -> Limit:
    return Limit(f'> {lo:g}', lambda v: v > lo)


def closed(lo: float, hi: float) -> Limit:
    return Limit(f'in [{lo:g}, {hi:g}]', lambda v: lo <= v <= hi)


def half_open(lo: float, hi: float) -> Limit:
    return Limit(f'in [{lo:g}, {hi:g})', lambda v: lo <= v < hi)


PROB = closed(0, 1)
RATE = half_open(0, 1)
FRACTION = Limit('in (0, 1]', lambda v: 0 < v <= 1)

# keyword argument -> its range: the SAMix settings (`settings.py`), the clean term, `SAMixPretrained`, MoCo;
# train.py's `--samix-*` flags check the same entries (`engine.checks.LIMITS`)
KEYWORD_LIMITS: Dict[str, Limit] = dict(
    num_classes=at_least(1, integer=True),
    alpha=above(0),  # λ ~ Beta(α, α)
    lam_margin=half_open(0, 0.5),
    lam_adjust_prob=PROB,
    label_smoothing=RATE,
    prob=PROB,
    mixer_every=at_least(1, integer=True),
    mixer_until=FRACTION,
    mixer_batch_frac=FRACTION,
    mixer_scale=FRACTION,
    clean_frac=FRACTION,
    clean_weight=at_least(0),
    eta=closed(0, 1),
    mask_beta=at_least(0),  # β of the mask losses (§3)
    mask_margin=at_least(0),
    min_lr=at_least(0),
    weight_decay=at_least(0),  # the classifier's, which the Mixer inherits (§5.7)
    mixer_lr=above(0),  # the Mixer's optimizer (§5.4)
    mixer_momentum=closed(0, 1),
    mixer_weight_decay=at_least(0),
    mixer_dropout=RATE,
    momentum_start=closed(0, 1),  # θ̄'s momentum schedule (§5.5)
    momentum_end=closed(0, 1),
    warmup_frac=closed(0, 1),
    moco_momentum=half_open(0, 1),  # m = 1 would never update the key encoder
)


def check_keyword(name: str, value: Any, limit: Optional[Limit] = None) -> None:
    """`ConfigError` (a `ValueError`) naming the keyword argument when `value` is not a finite number in range."""
    limit = limit or KEYWORD_LIMITS[name]
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise ConfigError(f'{name}={value!r} is a {type(value).__name__}, not a number: it must be {limit.text}')
    if not math.isfinite(value):
        raise ConfigError(f'{name}={value!r} is not a finite number: it must be {limit.text}')
    if limit.integer and not isinstance(value, numbers.Integral):
        raise ConfigError(f'{name}={value!r} is not a whole number: it must be an int {limit.text}')
    if not limit.ok(value):
        raise ConfigError(f'{name}={value!r} is out of range: it must be {limit.text}')
