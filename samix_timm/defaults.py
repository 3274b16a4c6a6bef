""" Run-aware defaults of online SAMix (method §3–§5) and of the SSL Mixer (§6): decided here, once.

`samix_defaults(model_name, total_steps, train_size=...)` returns the keyword arguments of `SAMix`
that depend on the run — recipe family (CNN or transformer), run length T and data size — with
any explicit value winning over the choice: the `MixerSettings`, the `StepPreset` and the momentum
schedule. `samix.create_samix` is the one path that builds a `SAMix` with them; train.py's factory calls it with
its flags through `SAMIX_FLAGS`, and one's own loop calls it directly:

    samix = create_samix(model, num_classes, T, train_size=len(dataset), lr=lr, weight_decay=1e-4)

`ssl_mixer_defaults` does the same for train_ssl.py's Mixer (`SSLMixerBranch`). The authors' fixed values that
the library objects fall back on live beside them (`momentum.PAPER_MASK_BETA`, `mixer_trainer.MIXER_LR`, ...) and
are used here, never written again.
"""
from dataclasses import replace
from functools import partial
from typing import Any, Dict, List, Optional

from timm.optim import create_optimizer_v2

from .errors import ConfigError
from .limits import check_keyword
from .mixer import list_mixers
from .mixer_trainer import MASK_MARGIN, MIXER_LR, MIXER_LR_DECAY, MIXER_MIN_LR, MIXER_MOMENTUM
from .momentum import PAPER_MASK_BETA, PAPER_MOMENTUM_END, BetaSchedule, MomentumSchedule, scaled_momentum
from .settings import MixerSettings, MixSettings, StepPreset

# below this many training images a run counts as "small data" (CIFAR, Tiny-ImageNet, CUB, ...)
SMALL_DATA_IMAGES = 200_000
_TRANSFORMER_PREFIXES = ('vit', 'deit', 'swin', 'eva', 'beit', 'cait', 'xcit', 'test_vit')

# --samix-preset NAME -> how the step is run. 'paper' is the reference step (§5.4–§5.6): Mixer trained
# on the whole batch at every step, clean-batch term W = 1 through a separate forward. The others are
# economies (ours) that bench/accuracy.py weighs against it; an explicit flag overrides a preset value.
# DEFAULT_PRESET is that rule's verdict (bench/accuracy.py `preset_verdict`: the cheapest preset healthy in every
# seed and within a seed-std of the best) on the default Mixer's sweep, bench/results/mixer_grey_runs.jsonl with
# the step times of speed_bench_1k_stable.json (tests/test_bench.py checks it). Measured on the embedded benchmark.
_PAPER_STEP = StepPreset(mixer_every=1, mixer_batch_frac=1.0, mixer_scale=1.0, clean_weight=1.0,
                         clean_forward='separate', clean_frac=1.0)
SAMIX_PRESETS: Dict[str, StepPreset] = {
    'paper': _PAPER_STEP,
    'every2': replace(_PAPER_STEP, mixer_every=2),
    'half': replace(_PAPER_STEP, mixer_batch_frac=0.5),
    'fast': replace(_PAPER_STEP, mixer_every=2, mixer_batch_frac=0.5),
    'lowres': replace(_PAPER_STEP, mixer_every=2, mixer_scale=0.5),
    'lean': replace(_PAPER_STEP, mixer_every=2, mixer_scale=0.5, clean_frac=0.25),
    'quarter': replace(_PAPER_STEP, mixer_every=2, clean_frac=0.25, clean_forward='joint'),
    'reference': _PAPER_STEP,  # with the authors' Mixer and Mixer loss: REFERENCE_MIXER
}
DEFAULT_PRESET = 'lowres'
# The Mixer: the stable Mixer of method §2.6 by default (bench/results/mixer_grey.md: no grey Mixer where the authors'
# went grey in 11 of 40 runs); the authors' is one set of flags away and every reproduction config pins it:
# --samix-mixer-init reference --samix-mixer-norm none --samix-mask-loss batch --samix-mask-area free
DEFAULT_MIXER_INIT = 'fan_in_all'  # every conv N(0, 1/fan_in); 'reference': N(0, 0.01^2) (§2.5)
DEFAULT_MIXER_NORM = 'qk'  # Q and K at unit RMS per position, logits bounded by sqrt(d); 'none' the authors'
DEFAULT_MASK_AREA = 'lam'  # each mask keeps exactly lam of its image (a per-image logit offset); 'free' the authors'
# 0: mask logits as P·v makes them; g: std of each image's logits >= g (§2.6: healthy by the rule in every run, but it
# hides a Mixer that learned nothing and amplifies fp16 rounding of SAMix^P, so not the default)
DEFAULT_MASK_SHARPNESS = 0.
DEFAULT_MASK_LOSS = 'image'  # ℓ_μ, ℓ_σ per image, so masks constant per image do not meet them; 'batch' the authors'
# β of the mask losses (§3) for the stable Mixer: with the area fixed to λ it weighs ℓ_σ alone, the one pull towards
# sharp masks against a Mixer loss that prefers blends (§2.6, cause 6); the authors' 0.1 left half the runs soft
DEFAULT_MASK_BETA = 1.0  # (the authors' β, 0.1, is `PAPER_MASK_BETA`, momentum.py)
# --samix-preset reference: the authors' step exactly (tests/test_step_parity.py), i.e. the `paper` step with the
# authors' Mixer (§2.5), their mask losses and β, and the soft-target CE Mixer loss of the released configs; each
# value here is a default an explicit flag still overrides
REFERENCE_PRESET = 'reference'
REFERENCE_MIXER: Dict[str, Any] = dict(mixer_init='reference', mixer_norm='none', mask_area='free', mask_loss='batch',
                                       mask_sharpness=0., mixer_loss='mce', mask_beta=PAPER_MASK_BETA)
DEFAULT_MIXER_LOSS = 'eta'  # §4


# samix_defaults / create_samix keyword -> the train.py argument (parser dest) that sets it: train.py's factory
# passes each of these and nothing else (tests/test_args.py: every --samix-* flag of online SAMix is here or in
# factory.OTHER_SAMIX_FLAGS, and every entry is a parser dest and a keyword)
SAMIX_FLAGS: Dict[str, str] = dict(
    # the run and the classifier branch's draw (`MixSettings`)
    model_name='model', lr='lr', weight_decay='weight_decay', label_smoothing='smoothing', prob='mixup_prob',
    alpha='samix_alpha', lam_margin='samix_lam_margin', lam_adjust_prob='samix_lam_adjust_prob',
    # the Mixer and its training (`MixerSettings`)
    preset='samix_preset', mixer='samix_mixer', mixer_loss='samix_mixer_loss', tap_index='samix_feature_index',
    mixer_opt='samix_mixer_opt', mixer_lr='samix_mixer_lr', mixer_min_lr='samix_mixer_min_lr',
    mixer_momentum='samix_mixer_momentum', mixer_weight_decay='samix_mixer_weight_decay',
    mixer_dropout='samix_mixer_dropout', mixer_init='samix_mixer_init', mixer_norm='samix_mixer_norm',
    mask_area='samix_mask_area', mask_sharpness='samix_mask_sharpness', mixer_upsample='samix_mixer_upsample',
    mask_loss='samix_mask_loss', lam_rescale_k='samix_lam_rescale_k', eta='samix_eta',
    mask_beta='samix_mask_beta', mask_margin='samix_mask_margin', beta_schedule='samix_beta_schedule',
    # θ̄'s momentum schedule
    momentum_start='samix_momentum_start', momentum_end='samix_momentum_end',
    # how the step runs (`StepPreset`)
    mixer_every='samix_mixer_every', mixer_until='samix_mixer_until', mixer_batch_frac='samix_mixer_batch_frac',
    clean_weight='samix_clean_weight', clean_forward='samix_clean_forward', mixer_scale='samix_mixer_scale',
    clean_frac='samix_clean_frac',
)
# keyword of a library object -> the `create_samix` keyword it holds, where the two names differ (so a library
# error names the flag that set the value: `keyword_flags`)
OBJECT_KEYWORDS: Dict[str, str] = dict(loss='mixer_loss', min_lr='mixer_min_lr', index='tap_index',
                                       dropout='mixer_dropout', start='momentum_start', end='momentum_end')


def keyword_flags(flags: Dict[str, str] = SAMIX_FLAGS) -> Dict[str, str]:
    """Keyword argument -> the script flag that sets it (`--samix-mask-beta`), for `errors.keyword_as_flag`: the
    table's keywords and the library objects' own names for them (`OBJECT_KEYWORDS`)."""
    as_flag = {k: '--' + dest.replace('_', '-') for k, dest in flags.items()}
    as_flag.update({k: as_flag[v] for k, v in OBJECT_KEYWORDS.items() if v in as_flag})
    return as_flag


def beta_mode(beta_schedule: str, train_size: Optional[int]) -> str:
    """The β schedule's mode: 'auto' is constant on small data, linear to 0 at ImageNet scale (§3)."""
    if beta_schedule != 'auto':
        return beta_schedule
    return 'constant' if train_size is not None and train_size < SMALL_DATA_IMAGES else 'linear'


def is_transformer(model_name: str) -> bool:
    """ViT-family names get the transformer settings of §5 (AdamW Mixer, 25% momentum hold)."""
    return model_name.lower().startswith(_TRANSFORMER_PREFIXES)


def preset_values(preset: str, **explicit) -> StepPreset:
    """The `StepPreset` named `preset`, with every explicit (not None) value taking precedence."""
    if preset not in SAMIX_PRESETS:
        raise ConfigError(f"preset '{preset}' is not known: use one of {', '.join(SAMIX_PRESETS)}")
    return replace(SAMIX_PRESETS[preset], **{k: v for k, v in explicit.items() if v is not None})


def samix_defaults(
        model_name: str,
        total_steps: int,
        train_size: Optional[int] = None,
        lr: Optional[float] = None,
        weight_decay: float = 0.0,
        preset: str = DEFAULT_PRESET,
        *,
        mixer: str = 'samix',
        mixer_loss: Optional[str] = None,
        tap_index: Optional[int] = None,
        mixer_opt: Optional[str] = None,
        mixer_lr: Optional[float] = None,
        mixer_min_lr: Optional[float] = None,
        mixer_momentum: float = MIXER_MOMENTUM,
        mixer_weight_decay: Optional[float] = None,
        mixer_dropout: Optional[float] = None,
        mixer_init: Optional[str] = None,
        mixer_norm: Optional[str] = None,
        mask_area: Optional[str] = None,
        mask_sharpness: Optional[float] = None,
        mixer_upsample: Optional[str] = None,
        mask_loss: Optional[str] = None,
        lam_rescale_k: float = -1,
        eta: Optional[float] = None,
        momentum_start: Optional[float] = None,
        momentum_end: Optional[float] = None,
        mask_beta: Optional[float] = None,
        mask_margin: float = MASK_MARGIN,
        beta_schedule: str = 'auto',
        mixer_every: Optional[int] = None,
        mixer_until: Optional[float] = None,
        mixer_batch_frac: Optional[float] = None,
        clean_weight: Optional[float] = None,
        clean_forward: Optional[str] = None,
        mixer_scale: Optional[float] = None,
        clean_frac: Optional[float] = None,
) -> Dict[str, Any]:
    """`SAMix` keyword arguments for a run of `total_steps` SAMix calls; None = choose (§3–§5).

    Args:
        model_name: timm name of the classifier (picks the CNN or transformer settings).
        total_steps: SAMix calls in the whole run, T.
        train_size: training images; below 200k the small-data settings apply (None = ImageNet-scale).
        lr: the classifier's lr (the AdamW Mixer of transformer recipes uses it).
        weight_decay: the classifier's weight decay, which the Mixer inherits (§5.7).
        preset: Mixer-branch economies and clean term (`SAMIX_PRESETS`); 'reference' is the authors' step and Mixer.
        Other arguments: explicit values of what would otherwise be chosen here (train.py's `--samix-*`).
    """
    if mixer not in list_mixers():
        raise ConfigError(f"mixer '{mixer}' is not known: use one of {', '.join(list_mixers())}")
    if preset == REFERENCE_PRESET:  # the authors' Mixer and losses wherever no value is given
        given = dict(mixer_init=mixer_init, mixer_norm=mixer_norm, mask_area=mask_area, mask_loss=mask_loss,
                     mask_sharpness=mask_sharpness, mixer_loss=mixer_loss, mask_beta=mask_beta)
        chosen = {k: REFERENCE_MIXER[k] if v is None else v for k, v in given.items()}
        mixer_init, mixer_norm, mask_area, mask_loss = (chosen[k] for k in ('mixer_init', 'mixer_norm', 'mask_area',
                                                                            'mask_loss'))
        mask_sharpness, mixer_loss, mask_beta = chosen['mask_sharpness'], chosen['mixer_loss'], chosen['mask_beta']
    mixer_loss = mixer_loss or DEFAULT_MIXER_LOSS
    total = max(1, total_steps)
    small = train_size is not None and train_size < SMALL_DATA_IMAGES
    vit = is_transformer(model_name)

    dropout = mixer_dropout if mixer_dropout is not None else (0.0 if small else 0.1)  # §2.3
    mixer_kwargs = dict(dropout=dropout, lam_rescale_k=lam_rescale_k) if mixer == 'samix' else {}
    stable = mixer == 'samix'  # §2.6: the stable Mixer is the SAMix Mixer's default; AutoMix keeps the authors'
    mixer_kwargs['init'] = mixer_init or (DEFAULT_MIXER_INIT if stable else 'reference')
    if mixer == 'samix':
        mixer_kwargs['norm'] = mixer_norm or DEFAULT_MIXER_NORM  # §2.6
        mixer_kwargs['area'] = mask_area or DEFAULT_MASK_AREA  # §2.6
        sharpness = DEFAULT_MASK_SHARPNESS if mask_sharpness is None else mask_sharpness  # §2.6; 0: the authors'
        if sharpness:
            mixer_kwargs['sharpness'] = sharpness
        # §5.7: the released SAMix configs upsample bilinearly for CNNs, nearest for DeiT/Swin (AutoMix: nearest)
        mixer_kwargs['upsample'] = mixer_upsample or ('nearest' if vit else 'bilinear')
    elif mixer_upsample:
        mixer_kwargs['upsample'] = mixer_upsample
    opt = mixer_opt or ('adamw' if vit else 'momentum')  # §5.4; plain momentum SGD as the reference (§5.7)
    if mixer_lr is None:
        mixer_lr = lr if opt.lower() in ('adamw', 'adam', 'lamb') and lr else MIXER_LR
    wd = weight_decay if mixer_weight_decay is None else mixer_weight_decay
    for name, value in (('mixer_lr', mixer_lr), ('mixer_momentum', mixer_momentum), ('weight_decay', weight_decay),
                        ('mixer_weight_decay', wd)):
        check_keyword(name, value)  # what no settings object sees: it goes into the optimizer factory
    # the reference decays every Mixer parameter, 1-D ones included (§5.7)
    mixer_optimizer = partial(create_optimizer_v2, opt=opt, lr=mixer_lr, weight_decay=wd, momentum=mixer_momentum,
                              filter_bias_and_bn=False)

    start, end = scaled_momentum(total, PAPER_MOMENTUM_END['small' if small else 'imagenet'])  # §5.5
    momentum = MomentumSchedule(
        start=start if momentum_start is None else momentum_start,
        end=end if momentum_end is None else momentum_end,
        total_steps=total, warmup_frac=0.25 if vit else 0.1)
    mask_loss = mask_loss or (DEFAULT_MASK_LOSS if stable else 'batch')
    # §2.6: the stable β goes with the stable mask (area fixed to λ, per-image losses); the authors' mask keeps theirs
    stable_mask = stable and mixer_kwargs['area'] == 'lam' and mask_loss == 'image'
    step = preset_values(preset, mixer_every=mixer_every, mixer_until=mixer_until, mixer_batch_frac=mixer_batch_frac,
                         clean_weight=clean_weight, clean_forward=clean_forward, mixer_scale=mixer_scale,
                         clean_frac=clean_frac)
    settings = MixerSettings(
        mixer=mixer, kwargs=mixer_kwargs, optimizer=mixer_optimizer,
        min_lr=mixer_lr / MIXER_LR_DECAY if mixer_min_lr is None else mixer_min_lr, loss=mixer_loss,
        eta=eta if eta is not None else (0.5 if small else 0.1),  # §4
        beta=BetaSchedule(mask_beta if mask_beta is not None else DEFAULT_MASK_BETA if stable_mask else PAPER_MASK_BETA,
                          beta_mode(beta_schedule, train_size), total), mask_margin=mask_margin,
        mask_loss=mask_loss, tap_index=tap_index)
    return dict(mixer=settings, preset=step, momentum=momentum)


# train_ssl.py's Mixer (SAMix-I/-C, §6): the SSL recipes' fixed values where train.py chooses per run (its flags'
# defaults, `ssl.args`, are these)
SSL_MIXER_DROPOUT = 0.0
SSL_BETA_SCHEDULE = 'constant'
SSL_FLAG_DEFAULTS: Dict[str, Any] = dict(samix_mixer_lr=MIXER_LR, samix_mixer_min_lr=MIXER_MIN_LR,
                                         samix_mixer_dropout=SSL_MIXER_DROPOUT, samix_beta_schedule=SSL_BETA_SCHEDULE)


def ssl_mixer_defaults(
        total_steps: int,
        train_size: Optional[int] = None,
        *,
        mixer: str = 'samix',
        mixer_lr: Optional[float] = None,
        mixer_min_lr: Optional[float] = None,
        mixer_dropout: Optional[float] = None,
        mask_beta: Optional[float] = None,
        beta_schedule: Optional[str] = None,
        lam_margin: Optional[float] = None,
) -> Dict[str, Any]:
    """`SSLMixerBranch` keyword arguments (`MoCoSAMix(mixer_kwargs=...)`) of a train_ssl.py run; None = the SSL
    recipes' value: the authors' SGD (lr 0.1 to 1e-3), dropout 0, β 0.1 constant ('auto': by data size, §3).

    Args:
        total_steps: Mixer updates in the whole run.
        train_size: training images ('auto' β schedule: constant below 200k).
        Other arguments: explicit values (train_ssl.py's `--samix-*`).
    """
    if mixer not in list_mixers():
        raise ConfigError(f"mixer '{mixer}' is not known: use one of {', '.join(list_mixers())}")
    return dict(
        mixer=mixer, mixer_kwargs=dict(dropout=SSL_MIXER_DROPOUT if mixer_dropout is None else mixer_dropout),
        lr=MIXER_LR if mixer_lr is None else mixer_lr, min_lr=MIXER_MIN_LR if mixer_min_lr is None else mixer_min_lr,
        lam_margin=MixSettings.lam_margin if lam_margin is None else lam_margin,
        beta=BetaSchedule(PAPER_MASK_BETA if mask_beta is None else mask_beta,
                          beta_mode(beta_schedule or SSL_BETA_SCHEDULE, train_size), total_steps))


def describe_defaults(kwargs: Dict[str, Any]) -> str:
    """One log line of what `samix_defaults` chose."""
    m, p = kwargs['mixer'], kwargs['preset']
    opt, mk = m.optimizer.keywords, m.kwargs
    return (f"{m.mixer} Mixer, {opt['opt']} lr {opt['lr']:g} -> {m.min_lr:g} wd {opt['weight_decay']:g}, "
            f"{m.loss} loss, eta {m.eta:g}, dropout {mk.get('dropout', 0):g}, {mk.get('init', 'reference')} init, "
            f"norm {mk.get('norm', 'none')}, mask area {mk.get('area', 'free')}, mask sharpness {mk.get('sharpness', 'free')}, {mk.get('upsample', 'nearest')} mask "
            f"upsampling, mask losses per {m.mask_loss}, Mixer trained every {p.mixer_every} step(s) for {p.mixer_until:g} of the run on {p.mixer_batch_frac:g} of the batch at "
            f"{p.mixer_scale:g}x resolution, clean term W {p.clean_weight:g} on {p.clean_frac:g} of the batch "
            f"({p.clean_forward} forward)")


def departures(kwargs: Dict[str, Any]) -> List[str]:
    """In words, where the settings `samix_defaults` chose depart from the authors' step (the `reference` preset):
    empty for an exact reproduction. The Mixer's optimizer and the run-length schedules are the authors' rules in
    every preset and are not compared."""
    m, p = kwargs['mixer'], kwargs['preset']
    mk = m.kwargs
    ref_mixer = m.mixer != 'samix' or (mk.get('init') == 'reference' and mk.get('norm', 'none') == 'none'
                                       and mk.get('area', 'free') == 'free' and not mk.get('sharpness'))
    out = []
    if not ref_mixer:
        out.append(f"the stable Mixer (init {mk.get('init')}, norm {mk.get('norm')}, mask area {mk.get('area')}"
                   + (f", sharpness {mk['sharpness']:g}" if mk.get('sharpness') else '') + "; method §2.6)")
    if m.mask_loss != 'batch':
        out.append(f'mask losses per {m.mask_loss} (the authors\': per batch)')
    if m.beta.beta != PAPER_MASK_BETA:
        out.append(f'β {m.beta.beta:g} (the authors\': {PAPER_MASK_BETA:g})')
    if m.loss != REFERENCE_MIXER['mixer_loss']:
        out.append(f"the {m.loss} Mixer loss (the authors' configs: mce)")
    if p != _PAPER_STEP:
        diff = [f'{f} {getattr(p, f)!r}' for f in p.__dataclass_fields__ if getattr(p, f) != getattr(_PAPER_STEP, f)]
        out.append(f"the step ({', '.join(diff)}; the authors': the paper step)")
    return out
