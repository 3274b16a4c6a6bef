""" SAMix^P: a frozen, pre-trained Mixer used as a plain augmentation (spec §7).

An *artifact* is one torch file that rebuilds everything the mixing needs: the feature extractor
(the momentum encoder θ̄ of an online SAMix run, truncated at the Mixer's stage), the Mixer, the
input normalisation and resolution it was trained with, and a format version. Its sha256 is
printed at export, kept in the hub registry and carried (first 8 hex digits) in the file name,
as torch.hub does. `SAMixPretrained` has the call shape of `timm.data.Mixup`.
"""
import hashlib
import logging
import re
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.data import resolve_data_config

from .errors import ConfigError
from .files import read_torch_file, write_new_torch_file
from .limits import check_keyword
from .mixer import MIXER_AREAS, create_mixer, set_inference_mode
from .mixing import (adjust_lam, draw_mixing, in_lam_margin, margin_mask, mix_images, mixer_mask, preview_dict,
                     preview_index, soft_target)
from .settings import MixSettings
from .task import task_state_of

_logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
_HASH_IN_NAME = re.compile(r'-([0-9a-f]{8,64})\.pth$')
_ARTIFACT_KEYS = ('extractor', 'mixer', 'data', 'info')


def file_sha256(path: Union[str, Path]) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()


def read_checkpoint(path: Union[str, Path]) -> Dict[str, Any]:
    """A training checkpoint to export, read with weights_only=True."""
    path = Path(path)
    fix = 'pass the last.pth.tar of a `train.py --mixup samix` or `train_ssl.py --ssl-mix samix_i|samix_c` run'
    if not path.is_file():
        raise ConfigError(f"checkpoint '{path}' not found: {fix}")
    checkpoint = read_torch_file(path, 'training checkpoint', fix)
    if isinstance(checkpoint, dict) and 'format_version' in checkpoint:
        raise ConfigError(f"'{path}' is already a Mixer artifact: use it as it is (--samix-pretrained {path})")
    if not isinstance(checkpoint, dict):
        raise ConfigError(f"'{path}' holds a {type(checkpoint).__name__}, not a training checkpoint: {fix}")
    return checkpoint


def _supervised_parts(checkpoint: Dict[str, Any], args: Dict[str, Any]) -> Dict[str, Any]:
    """Extractor and Mixer of a `train.py --mixup samix` checkpoint (θ̄ = the SAMix momentum encoder)."""
    state = task_state_of(checkpoint)['samix']
    return dict(encoder=state['encoder'], num_classes=args['num_classes'],
                feature_index=state['feature_index'], mixer_name=state['mixer_name'],
                mixer_config=state['mixer_config'], mixer=state['mixer'], step=state['step'])


def _ssl_parts(checkpoint: Dict[str, Any], args: Dict[str, Any]) -> Dict[str, Any]:
    """Extractor and Mixer of a `train_ssl.py --ssl-mix samix_i|samix_c` checkpoint (θ̄ = the MoCo key encoder)."""
    moco = task_state_of(checkpoint)['moco']
    if moco.get('mixer') is None:
        raise ConfigError('this train_ssl.py checkpoint has no Mixer: export a run with --ssl-mix samix_i or samix_c')
    prefix = 'backbone.'
    encoder = {k[len(prefix):]: v for k, v in moco['momentum_encoder'].items() if k.startswith(prefix)}
    branch = moco['mixer']
    return dict(encoder=encoder, num_classes=0, feature_index=moco['tap_index'], mixer_name=branch['name'],
                mixer_config=branch['config'], mixer=branch['mixer'], step=moco['step'])


# task-state key that identifies the kind of run -> reader of its extractor and Mixer
_CHECKPOINT_KINDS: Dict[str, Callable[[Dict[str, Any], Dict[str, Any]], Dict[str, Any]]] = {
    'samix': _supervised_parts,
    'moco': _ssl_parts,
}


def build_artifact(checkpoint: Dict[str, Any], description: str = '', half: bool = True) -> Dict[str, Any]:
    """The artifact dict of a finished online SAMix run (loaded with `torch.load`).

    Reads `train.py --mixup samix` checkpoints and `train_ssl.py` SAMix-I/-C checkpoints.
    `half` stores the extractor weights in float16 (they are computed in float32 after loading).
    """
    kind = next((k for k in _CHECKPOINT_KINDS if k in task_state_of(checkpoint)), None)
    if kind is None or 'args' not in checkpoint:
        raise ConfigError('checkpoint holds no SAMix state (a run without a learned Mixer, e.g. plain mixup): export '
                          'a checkpoint of a `train.py --mixup samix` or `train_ssl.py --ssl-mix samix_i|samix_c` run')
    args = vars(checkpoint['args']) if not isinstance(checkpoint['args'], dict) else checkpoint['args']
    parts = _CHECKPOINT_KINDS[kind](checkpoint, args)
    extractor = timm.create_model(args['model'], num_classes=parts['num_classes'])
    extractor.load_state_dict(parts['encoder'])
    index = parts['feature_index']
    extractor.prune_intermediate_layers(indices=[index], prune_norm=True, prune_head=True)
    weights = {k: (v.half() if half and v.is_floating_point() else v) for k, v in extractor.state_dict().items()}
    data = resolve_data_config(args, model=timm.create_model(args['model'], num_classes=parts['num_classes']))
    return dict(
        format_version=FORMAT_VERSION,
        extractor=dict(model=args['model'], num_classes=parts['num_classes'], feature_index=index, state_dict=weights),
        mixer=dict(name=parts['mixer_name'], config=parts['mixer_config'], state_dict=parts['mixer']),
        data=dict(mean=list(data['mean']), std=list(data['std']), input_size=list(data['input_size'])),
        info=dict(description=description, epochs=checkpoint.get('epoch', -1) + 1, step=parts['step'],
                  timm_version=timm.__version__, source=kind),
    )


def export_mixer(checkpoint_path: Union[str, Path], out: Union[str, Path], description: str = '') -> Tuple[Path, str]:
    """Write the artifact of a SAMix checkpoint as `<out stem>-<sha256[:8]>.pth`; returns (path, sha256).
    An existing file of that name is never overwritten."""
    checkpoint = read_checkpoint(checkpoint_path)
    try:
        artifact = build_artifact(checkpoint, description)
    except ConfigError as e:
        raise ConfigError(f"'{checkpoint_path}': {e}") from None
    out = Path(out)
    hashes = {}

    def hashed(tmp: Path) -> Path:  # <out stem>-<sha256[:8]>.pth, torch.hub style
        hashes['sha'] = file_sha256(tmp)
        return out.with_name(f"{out.stem}-{hashes['sha'][:8]}.pth")

    final = write_new_torch_file(artifact, out, 'write it to a folder you can write to', name=hashed,
                                 what=f"the artifact into '{out.parent}'")
    return final, hashes['sha']


def load_artifact(path: Union[str, Path], sha256: Optional[str] = None) -> Dict[str, Any]:
    """Read and check an artifact: sha256 (given, or the prefix in the file name), format, structure."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Mixer artifact '{path}' not found: pass a file written by "
                          f"`python -m samix_timm.export` or a hub name")
    expected = sha256 or (m.group(1) if (m := _HASH_IN_NAME.search(path.name)) else None)
    if expected is not None:
        actual = file_sha256(path)
        if not actual.startswith(expected):
            raise ConfigError(f"Mixer artifact '{path}' has sha256 {actual[:16]}..., expected {expected[:16]}...: "
                              f"the file is corrupt or truncated (or renamed): download or export it again")
    artifact = read_torch_file(path, 'Mixer artifact', 'download it again or pass a file written by '
                                                       '`python -m samix_timm.export`')
    version = artifact.get('format_version') if isinstance(artifact, dict) else None
    if version is None and isinstance(artifact, dict) and {'state_dict', 'task_state', *_CHECKPOINT_KINDS} & set(artifact):
        if not any(k in task_state_of(artifact) for k in _CHECKPOINT_KINDS):  # exporting it would fail too
            raise ConfigError(f"'{path}' is a training checkpoint of a run without a learned Mixer (e.g. plain mixup), "
                              f"not a Mixer artifact: pass a hub name or a file python -m samix_timm.export wrote "
                              f"from a `train.py --mixup samix` run")
        raise ConfigError(f"'{path}' is a training checkpoint, not a Mixer artifact: export it first with `python -m "
                          f"samix_timm.export --checkpoint {path} --out mixers/NAME` and pass the "
                          f"mixers/NAME-<sha256[:8]>.pth it writes")
    if not isinstance(version, int):
        raise ConfigError(f"'{path}' is not a samix-timm Mixer artifact (no format_version): pass a file written by "
                          f"`python -m samix_timm.export` or a hub name")
    if version > FORMAT_VERSION:
        raise ConfigError(f"Mixer artifact '{path}' has format {version}, newer than this samix-timm reads "
                          f"({FORMAT_VERSION}): upgrade samix-timm")
    missing = [k for k in _ARTIFACT_KEYS if not isinstance(artifact.get(k), dict)]
    if missing:
        raise ConfigError(f"Mixer artifact '{path}' is incomplete (no {', '.join(missing)}): download or export it "
                          f"again")
    return artifact


def build_extractor(spec: Dict[str, Any]) -> nn.Module:
    """The truncated feature extractor of an artifact, float32, frozen, its BatchNorm on batch statistics (§7).

    θ̄ made the Mixer's features in training mode, each batch normalised with its own statistics; its running
    statistics (eval mode) give other features, and the exported Mixer then makes masks its run never made.
    """
    try:
        model = timm.create_model(spec['model'], num_classes=spec['num_classes'])
    except RuntimeError as e:
        raise ConfigError(f"the artifact's extractor '{spec['model']}' cannot be built by timm {timm.__version__} "
                          f"({e}): install the timm version the artifact was made with") from None
    model.prune_intermediate_layers(indices=[spec['feature_index']], prune_norm=True, prune_head=True)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in spec['state_dict'].items()})
    set_inference_mode(model)  # BN on batch statistics (running ones untouched), dropout off: as θ̄ in training
    return model.requires_grad_(False)


def _batch_normalization(
        data: Dict[str, Any],
        data_config: Optional[Mapping[str, Any]],
        input_mean: Optional[Sequence[float]],
        input_std: Optional[Sequence[float]],
) -> Tuple[List[float], List[float]]:
    """(mean, std) the batches to mix are normalised with, from `data_config` or `input_mean`/`input_std`.

    Required: the Mixer only follows λ on batches renormalised to the artifact's `data` mean/std,
    and a wrong guess gives all-or-nothing masks without any error.
    """
    trained = f"mean {', '.join(f'{v:g}' for v in data['mean'])} / std {', '.join(f'{v:g}' for v in data['std'])}"
    if data_config is not None:
        if input_mean is not None or input_std is not None:
            raise ConfigError('pass the batch normalisation once: data_config or input_mean/input_std, not both')
        if not isinstance(data_config, Mapping) or 'mean' not in data_config or 'std' not in data_config:
            raise ConfigError('data_config has no mean/std: pass the timm data config your loader normalises with, '
                              'e.g. timm.data.resolve_data_config(model=model)')
        input_mean, input_std = data_config['mean'], data_config['std']
    if input_mean is None or input_std is None:
        raise ConfigError(f'the pre-trained Mixer needs the normalisation of the batches it mixes: pass '
                          f'data_config=<the timm data config of your loader> or input_mean= and input_std= (the '
                          f'Mixer renormalises them to its own {trained})')
    channels = data['input_size'][0]
    try:
        mean, std = [float(v) for v in input_mean], [float(v) for v in input_std]
    except (TypeError, ValueError):
        mean = std = []
    if len(mean) != channels or len(std) != channels or min(std) <= 0:
        raise ConfigError(f'batch normalisation mean {input_mean!r} / std {input_std!r} does not fit the artifact: '
                          f'pass {channels} means and {channels} stds > 0 (it was trained on {trained})')
    return mean, std


class SAMixPretrained:
    """Drop-in for `timm.data.Mixup` with a frozen pre-trained Mixer (SAMix^P, §7).

    The extractor sees the batch resized to the artifact's resolution and renormalised from the
    batch normalisation (`data_config`, or `input_mean`/`input_std`: required) to the artifact's
    mean/std; the mask is upsampled to the batch's H×W. No gradients; extractor and Mixer with dropout
    off and BatchNorm on batch statistics, as the run made its masks (`set_inference_mode`, §7), so a
    batch's masks depend on the batch, as they did online.

    Args:
        artifact: artifact dict (see `load_artifact`).
        num_classes: classes of the soft targets (the classifier being trained; unrelated to the extractor).
        alpha: λ ~ Beta(alpha, alpha).
        lam_margin: λ this close to 0/1 gives the plain-mixup mask 1 − λ (§3).
        lam_adjust_prob: probability of λ adjusting (§3).
        label_smoothing: timm label smoothing of the soft targets.
        prob: probability of mixing a batch (timm `mixup_prob`).
        data_config: timm data config the batches are normalised with (its `mean`/`std`).
        input_mean: or the batch normalisation's mean ...
        input_std: ... and std.
        amp_autocast: autocast context factory for the extractor forward.
        mask_area: None = the Mixer's own (its artifact's); 'lam' = every mask keeps exactly 1 − λ of the
            partner by a per-image logit offset (§2.6), whatever area the Mixer learnt on its own data, so the soft
            labels are right on any data; 'free' = the Mixer's logits as they are.
    """

    def __init__(
            self,
            artifact: Dict[str, Any],
            num_classes: int = 1000,
            alpha: float = MixSettings.alpha,  # the classifier branch's draw: online SAMix's defaults (`MixSettings`)
            lam_margin: float = MixSettings.lam_margin,
            lam_adjust_prob: float = MixSettings.lam_adjust_prob,
            label_smoothing: float = MixSettings.label_smoothing,
            prob: float = MixSettings.prob,
            data_config: Optional[Mapping[str, Any]] = None,
            input_mean: Optional[Sequence[float]] = None,
            input_std: Optional[Sequence[float]] = None,
            amp_autocast: Callable = nullcontext,
            mask_area: Optional[str] = None,
    ):
        check_keyword('num_classes', num_classes)  # the same ranges as online SAMix (limits.py)
        MixSettings(alpha=alpha, lam_margin=lam_margin, lam_adjust_prob=lam_adjust_prob,
                    label_smoothing=label_smoothing, prob=prob)
        data = artifact['data']
        mean_in, std_in = _batch_normalization(data, data_config, input_mean, input_std)
        self.artifact_info = dict(artifact['info'], **artifact['data'], extractor=artifact['extractor']['model'])
        self.extractor = build_extractor(artifact['extractor'])
        self.feature_index = artifact['extractor']['feature_index']
        config = dict(artifact['mixer']['config'])
        if mask_area is not None:
            if mask_area not in MIXER_AREAS:
                raise ConfigError(f"mask_area={mask_area!r}: pass one of {', '.join(map(repr, MIXER_AREAS))} (or None, "
                                  f"the Mixer's own)")
            if artifact['mixer']['name'] != 'samix':
                raise ConfigError(f"mask_area={mask_area!r} sets the area of a SAMix Mixer; this artifact holds an "
                                  f"{artifact['mixer']['name']!r} Mixer: leave it out")
            config['area'] = mask_area
        self.mixer = create_mixer(artifact['mixer']['name'], **config)
        self.mixer.load_state_dict(artifact['mixer']['state_dict'])
        self.mixer.requires_grad_(False)
        set_inference_mode(self.mixer)  # dropout off, BN on batch statistics, as in training
        self.input_size = tuple(data['input_size'][-2:])
        # x_ext = (x·std_in + mean_in − mean_ext) / std_ext = x·scale + shift
        self._scale = torch.tensor([si / se for si, se in zip(std_in, data['std'])]).view(1, -1, 1, 1)
        self._shift = torch.tensor([(mi - me) / se for mi, me, se in zip(mean_in, data['mean'], data['std'])]
                                   ).view(1, -1, 1, 1)
        self.num_classes, self.alpha, self.lam_margin = num_classes, alpha, lam_margin
        self.lam_adjust_prob, self.label_smoothing, self.mix_prob = lam_adjust_prob, label_smoothing, prob
        self.amp_autocast = amp_autocast
        self.mixup_enabled = True

    def _check_batch(self, x: torch.Tensor) -> None:
        """Refuse a batch that is not a float tensor (uint8 pixels would be mixed as if normalised, and returned as
        uint8) or has another number of channels than the extractor reads (a 1-channel batch was broadcast against
        the 3-channel mean/std, silently)."""
        if not torch.is_tensor(x) or not x.is_floating_point():
            kind = f'a {x.dtype} tensor' if torch.is_tensor(x) else f'a {type(x).__name__}'
            raise ConfigError(f'x is {kind}: the pre-trained Mixer mixes float batches normalised with the mean/std '
                              f'you gave it (data_config, or input_mean/input_std), as its hub entry says; convert the '
                              f'images to float in [0, 1] and normalise them (e.g. (x.float() / 255 - mean) / std, '
                              f'or timm.data.create_loader with that data_config)')
        channels = self._scale.shape[1]
        if x.dim() == 4 and x.shape[1] != channels:
            raise ConfigError(f'x has {x.shape[1]} channel(s): this Mixer\'s extractor reads {channels} (e.g. '
                              f'x.expand(-1, {channels}, -1, -1) for grey images, normalised with its mean/std)')

    def _check_target(self, x: torch.Tensor, target: torch.Tensor) -> None:
        """Refuse labels `soft_target` would fail on deep inside (out of range: an index error) or read wrongly
        without a word (one-hot or soft targets: one row per class entry), and a batch that is not NxCxHxW."""
        if x.dim() != 4:
            raise ConfigError(f'x has shape {tuple(x.shape)}: the pre-trained Mixer mixes a batch of images, '
                              f'N x C x H x W (add the batch dimension, e.g. x[None])')
        if not torch.is_tensor(target):
            raise ConfigError(f'target is a {type(target).__name__}: pass the class indices as a tensor of N '
                              f'integers (e.g. torch.as_tensor(target))')
        if target.numel() != len(x) or target.dim() > 2 or (target.dim() == 2 and target.shape[1] != 1):
            kind = ('one-hot or soft targets' if target.dim() == 2 and target.shape[0] == len(x) and
                    target.shape[1] > 1 else f'{target.numel()} labels')
            raise ConfigError(f'target has shape {tuple(target.shape)} for {len(x)} images ({kind}): pass the class '
                              f'index of each image, a tensor of shape ({len(x)},), as for timm.data.Mixup')
        if target.is_complex() or target.dtype == torch.bool or (
                target.is_floating_point() and not bool((target == target.round()).all())):
            raise ConfigError(f'target is a {target.dtype} tensor of values that are not class indices: pass the class indices as integers '
                              f'(target.long())')
        low, high = (int(v) for v in torch.stack([target.min(), target.max()]).tolist())
        if low < 0 or high >= self.num_classes:
            fix = (f'pass num_classes={high + 1} or more (the outputs of your classifier)' if low >= 0 else
                   'pass class indices >= 0')
            raise ConfigError(f'target holds label {high if low >= 0 else low}, outside the {self.num_classes} '
                              f'classes of this Mixer (num_classes={self.num_classes}): {fix}')

    def to(self, device: Union[str, torch.device]) -> 'SAMixPretrained':
        self.extractor.to(device)
        self.mixer.to(device)
        self._scale, self._shift = self._scale.to(device), self._shift.to(device)
        return self

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Extractor map of a batch, at the artifact's resolution and normalisation."""
        self._check_batch(x)
        x = x.float() * self._scale + self._shift
        if tuple(x.shape[-2:]) != self.input_size:
            x = F.interpolate(x, size=self.input_size, mode='bilinear', align_corners=False, antialias=True)
        with self.amp_autocast():
            return self.extractor.forward_intermediates(
                x, indices=[self.feature_index], intermediates_only=True, stop_early=True)[0]

    @torch.no_grad()
    def mask(self, x: torch.Tensor, lam: float, index: torch.Tensor, adjust: bool = False) -> torch.Tensor:
        """s (Nx1xHxW), the weight of x[index], for mixing ratio λ: the λ margin, the Mixer on the extractor's map,
        λ adjusting when `adjust` (§3; the core every SAMix shares, `mixing.mixer_mask`). The extractor runs only
        when the Mixer is asked."""
        if in_lam_margin(lam, self.lam_margin):  # no extractor pass for a mask the Mixer does not make
            return margin_mask(x.shape[0], x.shape[-2:], lam, x.device)
        return mixer_mask(self.mixer, self.features(x), lam, index, x.shape[-2:], self.lam_margin, adjust)

    def __call__(self, x: torch.Tensor, target: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(x_mixed, soft_target NxK), like `timm.data.Mixup`."""
        self._check_batch(x)
        self._check_target(x, target)
        if self._scale.device != x.device:
            self.to(x.device)
        draw = None
        if self.mixup_enabled:  # numpy's global RNG, as timm's Mixup and online SAMix draw
            draw = draw_mixing(self.alpha, self.mix_prob, self.lam_margin, self.lam_adjust_prob)
        if draw is None:
            return x, soft_target(target, None, 1., self.num_classes, self.label_smoothing)
        (lam,), adjust = draw
        index = torch.randperm(x.shape[0], device=x.device)
        x_mix = mix_images(x, self.mask(x, lam, index, adjust), index)
        return x_mix, soft_target(target, index, lam, self.num_classes, self.label_smoothing)

    @torch.no_grad()
    def preview(self, x: torch.Tensor, lam: float = 0.5) -> Dict[str, torch.Tensor]:
        """(x_i, x_j, s, x_mix) for display, and 'mask_raw', the Mixer's own mask before λ adjusting (§3), as online
        SAMix previews: λ adjusting only when it always applies (lam_adjust_prob 1); draws nothing from the RNG."""
        self._check_batch(x)
        if self._scale.device != x.device:
            self.to(x.device)
        index = preview_index(x.shape[0], x.device)
        raw = self.mask(x, lam, index)
        adjust = self.lam_adjust_prob >= 1 and not in_lam_margin(lam, self.lam_margin)
        return preview_dict(x, adjust_lam(raw, lam) if adjust else raw, index, raw=raw)
