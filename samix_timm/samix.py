""" SAMix: the parts of online SAMix and its steps (spec §5), for `task.SAMixTask`.

θ̄, a momentum copy of the classifier, reads the clean batch (§1); the Mixer proposes masks from its features (§2);
the classifier-branch mask mixes the batch the classifier trains on (§3), and a second, independent mixing trains
the Mixer through θ̄ with the η-balanced loss plus the mask losses (§3, §4). `SAMixTask` (task.py) owns a `SAMix`
as a submodule and runs these steps in the method's order; the margin → Mixer → λ-adjusting path, the λ draw and
the mixed image are the shared core in `mixing.py`. `create_samix` builds a `SAMix` with train.py's run-aware settings
(`defaults.samix_defaults`): train.py's factory and one's own loop both call it.
"""
import logging
import math
from contextlib import nullcontext
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.profiler import record_function

from .clean import CleanTerm
from .defaults import DEFAULT_PRESET, preset_values, samix_defaults
from .errors import ConfigError
from .features import FeatureTap, _input_hw
from .losses import eta_balanced_bce, mixup_ce
from .mixer import MixerNumericsError, create_mixer, mixer_inference, mixer_name
from .mixing import (adjust_lam, draw_mixing, in_lam_margin, mix_images, mixer_mask, preview_dict, preview_index,
                     soft_target)
from .mixer_trainer import MixerTrainer
from .limits import check_keyword
from .momentum import MomentumEncoder, MomentumSchedule, paper_momentum
from .settings import MixerSettings, MixSettings, StepPreset
from .sync import any_rank, broadcast_module_

_logger = logging.getLogger(__name__)


def scaled_size(size: Sequence[int], scale: float) -> List[int]:
    """(H, W) of the copy θ̄ reads and the Mixer makes its mask at, with `mixer_scale` < 1 (at least 1x1)."""
    return [max(1, round(d * scale)) for d in size]


def warn_small_mixer_input(input_size: Sequence[int], mixer_scale: float) -> bool:
    """Warn (and return True) when `mixer_scale` shrinks the Mixer's input below 2x2: its masks are then constant
    over each image (exactly λ with the area fixed, so every Mixer gradient is 0): the Mixer learns nothing, as
    `FeatureTap` warns of a 1x1 stage map."""
    full = _input_hw(input_size)
    h, w = scaled_size(full, mixer_scale)
    if min(h, w) >= 2:
        return False
    _logger.warning(f'mixer_scale={mixer_scale:g} trains the Mixer on {h}x{w} copies of the {full[0]}x{full[1]} '
                    f'input: its masks are constant over each image and its gradients 0 (the Mixer learns nothing); '
                    f'use mixer_scale={2 / min(full):.3g} or more (or 1)')
    return True


def timm_name(model: nn.Module) -> str:
    """The timm name a model was created with (its `pretrained_cfg['architecture']`), else its class name."""
    cfg = getattr(model, 'pretrained_cfg', None) or getattr(model, 'default_cfg', None) or {}
    return cfg.get('architecture') or type(model).__name__


def create_samix(
        model: nn.Module,
        num_classes: int,
        total_steps: int,
        *,
        model_name: Optional[str] = None,
        train_size: Optional[int] = None,
        input_size: Optional[Tuple[int, ...]] = None,
        amp_autocast: Callable = nullcontext,
        grad_scaler: Optional[torch.amp.GradScaler] = None,
        **settings,
) -> 'SAMix':
    """Online SAMix for a run of `total_steps` steps with train.py's run-aware settings: the one path train.py's
    factory and one's own loop both take, so the same model, steps and data size give the same `SAMix`.

    Args:
        model: the classifier being trained (unwrapped, on its device; before DDP wrapping).
        num_classes: classes of the soft targets.
        total_steps: SAMix calls in the whole run, T (epochs x batches per epoch).
        model_name: timm name that picks the CNN or transformer settings (None: the model's own, `timm_name`).
        train_size: training images (below 200k the small-data settings apply; None = ImageNet-scale).
        input_size: training input size (C, H, W), for the feature tap's small-input rule.
        amp_autocast, grad_scaler: the loop's autocast factory and the Mixer's fp16 GradScaler (or None).
        settings: `samix_defaults` keywords (lr, weight_decay, preset, mask_beta, ...: None or absent = chosen for
            the run) and `MixSettings` fields (alpha, lam_margin, lam_adjust_prob, label_smoothing, prob: absent =
            its defaults); train.py passes its flags by the table `defaults.SAMIX_FLAGS`.
    """
    mix = MixSettings(**{k: settings.pop(k) for k in MixSettings.__dataclass_fields__ if k in settings})
    fixed_grid = getattr(getattr(model, 'patch_embed', None), 'strict_img_size', False)
    preset = settings.get('preset', DEFAULT_PRESET)
    if fixed_grid and settings.get('mixer_scale') is None and preset_values(preset).mixer_scale < 1:
        settings['mixer_scale'] = 1.0  # a preset's reduced-resolution Mixer branch cannot run on a fixed patch grid
        _logger.info(f'preset {preset!r} runs its Mixer branch at {preset_values(preset).mixer_scale:g}x resolution, '
                     f'which this model (a fixed patch grid) cannot take: the branch runs at full resolution '
                     f'(mixer_scale=1)')
    chosen = samix_defaults(model_name or timm_name(model), total_steps, train_size=train_size, **settings)
    return SAMix(model, num_classes, total_steps, mix=mix, input_size=input_size, amp_autocast=amp_autocast,
                 grad_scaler=grad_scaler, **chosen)


class SAMix(nn.Module):
    """The parts of online SAMix (§5) and the steps it takes with them: θ̄ (`encoder`, the momentum copy of the
    classifier), the stage-l feature tap on it (`tap`), the Mixer M_φ (`mixer`) and its optimizer (`trainer`).
    `SAMixTask` owns it as a submodule and runs the steps in the method's order (`SAMixTask.mix`), so `to`, `train`,
    `eval` and `state_dict` of the task reach θ̄ and the Mixer. Each step takes what it needs and returns what it
    makes; between calls SAMix keeps only the run's state (step counter, fp32 fallback, weights, optimizer).

    Args:
        model: the classifier being trained (unwrapped, on its device; before DDP wrapping): θ̄ starts as its copy.
        num_classes: classes of the soft targets.
        total_steps: training steps in the whole run (schedules are functions of the step).
        mixer: the Mixer and how it is trained (`MixerSettings`; `samix_defaults` chooses it per run).
        preset: how the step runs, economies and clean-batch term (`StepPreset`; a `SAMIX_PRESETS` entry).
        mix: the classifier branch's draw (`MixSettings`: α, λ margin and adjusting, label smoothing, prob).
        momentum: schedule of the momentum encoder (§5; None: `paper_momentum`, 0.999 -> 0.99999 after 10 %).
        input_size: training input size, for the small-input stage rule of `FeatureTap`.
        amp_autocast: autocast context factory of the training loop.
        grad_scaler: `torch.amp.GradScaler` for fp16 training of the Mixer, or None.
    """

    def __init__(
            self,
            model: nn.Module,
            num_classes: int,
            total_steps: int,
            mixer: Optional[MixerSettings] = None,
            preset: Optional[StepPreset] = None,
            mix: Optional[MixSettings] = None,
            momentum: Optional[MomentumSchedule] = None,
            input_size: Optional[Tuple[int, ...]] = None,
            amp_autocast: Callable = nullcontext,
            grad_scaler: Optional[torch.amp.GradScaler] = None,
    ):
        super().__init__()
        check_keyword('num_classes', num_classes)
        # the settings as given; built without them, each object's own defaults (`create_samix`: train.py's choice)
        mixer = (mixer or MixerSettings()).for_run(total_steps)
        preset, mix = preset or StepPreset(), mix or MixSettings()
        model_classes = getattr(model, 'num_classes', None)
        if model_classes is not None and model_classes != num_classes:
            raise ConfigError(f'num_classes={num_classes} differs from the {model_classes} outputs of the model: '
                              f'pass the number of classes the model predicts')
        if preset.mixer_scale < 1 and getattr(getattr(model, 'patch_embed', None), 'strict_img_size', False):
            raise ConfigError(f'mixer_scale={preset.mixer_scale:g} needs a model that takes any input size; this one '
                              f'has a fixed patch grid: use mixer_scale=1')
        if preset.mixer_scale < 1 and input_size is not None:
            warn_small_mixer_input(input_size, preset.mixer_scale)
        self.num_classes = num_classes
        self.total_steps = total_steps
        self.settings, self.preset, self.mix = mixer, preset, mix
        self.momentum = momentum or paper_momentum(total_steps)
        self.encoder = MomentumEncoder(model, self.momentum)  # θ̄
        self.tap = FeatureTap(self.encoder.module, index=mixer.tap_index, input_size=input_size)
        built = mixer.mixer
        if isinstance(built, str):
            built = create_mixer(built, self.tap.channels, **mixer.kwargs)
        self.mixer = built.to(next(model.parameters()).device)
        self._run_through(self.tap, self.encoder.module, self.mixer)
        broadcast_module_(self.encoder.module)  # every rank starts from rank 0's θ̄ (and Mixer, in the trainer)
        self.trainer = MixerTrainer(self.mixer, total_steps, mixer.optimizer, mixer.min_lr, mixer.beta,
                                    mixer.mask_margin, grad_scaler, mixer.mask_loss)
        self.clean = CleanTerm(preset.clean_weight, num_classes, mix.label_smoothing, preset.clean_forward,
                               preset.clean_frac)
        self.amp_autocast = amp_autocast
        self.mixup_enabled = True
        self.step = 0
        self.mixer_steps = math.ceil(preset.mixer_until * total_steps)  # the Mixer trains on calls 1..mixer_steps
        self.fp32_features = False  # set after an fp16 overflow of the features or attention (§2: fall back once)
        # θ̄ is a copy of the classifier: it gets its input in the classifier's memory format
        self.channels_last = any(p.ndim == 4 and p.is_contiguous(memory_format=torch.channels_last)
                                 and not p.is_contiguous() for p in model.parameters())

    def _run_through(self, tap: Callable, encoder: Callable, mixer: Callable) -> None:
        """What θ̄'s two passes and the Mixer run through: the modules, or their torch.compile'd versions
        (`compile()`). Plain attributes, not submodules: they share the modules' weights."""
        self.__dict__.update(tap_forward=tap, encoder_forward=encoder, mixer_forward=mixer)

    def train(self, mode: bool = True) -> 'SAMix':
        """The Mixer follows `mode`; θ̄ stays on batch statistics (train mode), the way the method uses it (§5.2)."""
        super().train(mode)
        self.encoder.module.train()
        return self

    # -- the steps, in the order `SAMixTask.mix` runs them (§5) -----------------------------------

    def update_encoder(self, model: nn.Module) -> float:
        """θ̄ ← m θ̄ + (1 − m) θ with this step's m (§5.5; before this step's passes, as the reference); returns m
        and counts the step."""
        with record_function('samix/momentum_update'):
            m = self.encoder.step(model, self.step)  # §5.5, θ̄ follows the live θ
            broadcast_module_(self.encoder.module, params=False)  # θ's BN statistics differ per rank under DDP
        self.step += 1
        return m

    def draw(self) -> Optional[Tuple[float, float, bool]]:
        """This step's (λ_q, λ_k, λ adjusting), None for an unmixed batch: numpy's global RNG (as timm's Mixup,
        `mixing.draw_mixing`), drawn on rank 0 and broadcast, because these decide which collectives the step runs
        (Mixer update, buffer sync) and every rank must run the same ones."""
        distributed = dist.is_available() and dist.is_initialized()
        if not distributed or dist.get_rank() == 0:
            drawn = draw_mixing(self.mix.alpha, self.mix.prob, self.mix.lam_margin, self.mix.lam_adjust_prob,
                                num_lams=2)  # §5.1: λ_q, λ_k
            values = [0., 1., 1., 0.] if drawn is None else [1., *drawn[0], float(drawn[1])]
        else:
            values = [0.] * 4
        if distributed:
            t = torch.tensor(values, dtype=torch.float64, device=next(self.encoder.module.parameters()).device)
            dist.broadcast(t, 0)
            values = t.tolist()
        mixed, lam_q, lam_k, adjust = values
        return (lam_q, lam_k, bool(adjust)) if mixed else None

    def encoder_input(self, x: torch.Tensor) -> torch.Tensor:
        """The batch in θ̄'s memory format (the classifier's: channels_last when it is)."""
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """z, θ̄'s stage-l map of the clean batch (§1, §5.2), NxCxhxw, no grad; fp32 after an fp16 overflow. Raises
        `MixerNumericsError` on every rank when the features overflowed float16 on one."""
        with record_function('samix/features'):
            z = self._features(x)
            check = z.dtype == torch.float16 or self.fp32_features  # fp16 overflow, or still bad after the fallback
            if check and any_rank(not bool(torch.isfinite(z).all()), z.device):
                raise MixerNumericsError('θ̄ features overflowed float16 (inf/nan).')  # every rank falls back
        return z

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), (nullcontext() if self.fp32_features else self.amp_autocast()):
            return self.tap_forward(x)

    def classifier_mask(self, z: torch.Tensor, lam: float, index: torch.Tensor, out_size,
                        adjust: bool = False) -> torch.Tensor:
        """s_q, the mask of the batch handed to the classifier (§5.3): λ margin, Mixer, λ adjusting when `adjust`
        (§3, `mixing.mixer_mask`)."""
        return mixer_mask(self._mask, z, lam, index, out_size, self.mix.lam_margin, adjust)

    def mixer_due(self) -> bool:
        """Whether this step (counted by `update_encoder`) updates the Mixer: every `mixer_every`-th step of the
        first `mixer_until` of the run (§5.4 economies)."""
        return (self.step - 1) % self.preset.mixer_every == 0 and self.step <= self.mixer_steps

    def train_mixer(self, x: torch.Tensor, target: torch.Tensor, z: torch.Tensor, lam: float
                    ) -> Dict[str, torch.Tensor]:
        """One Mixer update with its own λ_k and π_k: L_φ = ℓ(f_θ̄(x_mix_k), ỹ_k) + β(ℓ_μ + ℓ_σ), gradient to φ only
        (§5.4); returns its metrics."""
        n = max(2, int(round(self.preset.mixer_batch_frac * x.shape[0])))
        x, target, z = x[:n], target[:n], z[:n]
        if self.preset.mixer_scale < 1:  # θ̄ reads a smaller copy; the Mixer makes its mask at that size (not §5.4)
            size = scaled_size(x.shape[-2:], self.preset.mixer_scale)
            x = F.interpolate(x, size=size, mode='bilinear', align_corners=False, antialias=True)
        index = torch.randperm(n, device=x.device)  # π_k
        with record_function('samix/mixer_forward'):
            s = self._mask(z, lam, index, x.shape[-2:])  # Nx1xHxW, with grad to φ
            x_mix = mix_images(x, s, index)
        with self.amp_autocast(), record_function('samix/encoder_forward'):
            logits = self.encoder_forward(x_mix)  # θ̄ frozen: grad flows to x_mix only (channels_last if θ̄ is)
        if self.settings.loss == 'eta':
            loss_cls = eta_balanced_bce(logits, target, target[index], lam, self.settings.eta)  # §4 ℓ_η
        else:
            # the reference's head_mix: soft CE with the recipe's label smoothing (0.1 in the ViT configs, §5.7)
            y = soft_target(target, index, lam, self.num_classes, self.mix.label_smoothing)
            loss_cls = mixup_ce(logits.float(), y)
        with record_function('samix/mixer_backward_step'):
            metrics = self.trainer.update(loss_cls, s, lam, self.step)  # + β(ℓ_μ + ℓ_σ), step φ (§3, §5.4)
        return dict(metrics, lam_k=lam)

    def fall_back_to_fp32(self, error: MixerNumericsError) -> None:
        """After an fp16 overflow of the features or the attention: compute the features in fp32 from now on (§2);
        a second overflow means the Mixer diverged."""
        if self.fp32_features:
            raise MixerNumericsError(f'{error} Happened with fp32 features too: the Mixer diverged, lower '
                                     f'the Mixer learning rate (or train without AMP).') from None
        _logger.warning('Mixer attention was not finite: computing the Mixer features in fp32 from now on')
        self.fp32_features = True

    def compile(self, backend: str = 'inductor', mode: Optional[str] = None) -> None:
        """torch.compile θ̄'s two passes (stage features, full forward on the Mixer's mix) and the Mixer, as
        `--torchcompile` compiles the classifier. λ reaches the Mixer as a tensor (`_mask`), so a new λ is new
        data, not a new graph."""
        self._run_through(torch.compile(self.tap, backend=backend, mode=mode),
                          torch.compile(self.encoder.module, backend=backend, mode=mode),
                          torch.compile(self.mixer, backend=backend, mode=mode))

    def _mask(self, z: torch.Tensor, lam: float, index: torch.Tensor, out_size,
              z_partner: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The Mixer's mask s, λ passed as a 0-d tensor: the same float32 value the Mixer would make of a
        float, but no float for dynamo to specialise (and recompile) on."""
        lam = torch.tensor(lam, dtype=torch.float32, device=z.device)
        if z_partner is None:
            return self.mixer_forward(z, lam, index, out_size)
        return self.mixer_forward(z, lam, index, out_size, z_partner=z_partner)

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        """The Mixer's optimizer (owned by `trainer`)."""
        return self.trainer.optimizer

    @property
    def grad_scaler(self) -> Optional[torch.amp.GradScaler]:
        return self.trainer.grad_scaler

    # -- inspection and state --------------------------------------------------------------------

    @torch.no_grad()
    def preview(self, x: torch.Tensor, lam: float = 0.5) -> Dict[str, torch.Tensor]:
        """(x_i, x_j, s, x_mix) as the classifier branch makes them (θ̄ on batch statistics, as in training;
        Mixer as `mixer_inference`: dropout off), and 'mask_raw', the Mixer's own mask before λ adjusting (§3);
        changes no state."""
        index = preview_index(x.shape[0], x.device)
        counts = [(m, m.num_batches_tracked.clone()) for m in self.encoder.module.modules()
                  if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.num_batches_tracked is not None]
        try:
            with mixer_inference(self.mixer):
                raw = self.classifier_mask(self._features(self.encoder_input(x)), lam, index, x.shape[-2:])
        finally:
            for m, count in counts:  # θ̄'s BN momentum is 0: only the forward count moved
                m.num_batches_tracked.copy_(count)
        adjust = self.mix.lam_adjust_prob >= 1 and not in_lam_margin(lam, self.mix.lam_margin)
        return preview_dict(x, adjust_lam(raw, lam) if adjust else raw, index, raw=raw)

    def get_state(self) -> Dict:
        """Everything needed to continue (step, Mixer, its optimizer and scaler, θ̄) and to export (§7): the 'samix'
        entry of a checkpoint's task state."""
        return dict(
            step=self.step, fp32_features=self.fp32_features, feature_index=self.tap.index,
            mixer_name=mixer_name(self.mixer), mixer_config=self.mixer.config, mixer=self.mixer.state_dict(),
            mask_loss=self.trainer.mask_loss, encoder=self.encoder.module.state_dict(), **self.trainer.state_dict())

    def _check_same_mixer(self, state: Dict) -> None:
        """A checkpoint continues only with the Mixer it trained: its settings add no weights, so a changed default
        (the stable Mixer of §2.6) would otherwise load silently into another Mixer."""
        if 'mixer_config' not in state:
            return
        implied = dict(init='reference', norm='none', area='free')  # what a checkpoint older than them holds
        saved = {**implied, **state['mixer_config']}
        now = {**implied, **self.mixer.config}
        if 'mask_loss' in state:  # saved since the stable Mixer became the default
            saved['mask_loss'], now['mask_loss'] = state['mask_loss'], self.trainer.mask_loss
        differ = [k for k in sorted(set(saved) | set(now)) if saved.get(k) != now.get(k)]
        if differ:
            pairs = ', '.join(f'{k} {saved.get(k)!r} (now {now.get(k)!r})' for k in differ)
            raise ConfigError(f'the checkpoint was trained with another Mixer: {pairs}; resume it with the Mixer '
                              f'settings it was trained with')

    def load_state(self, state: Dict) -> None:
        """Continue from `get_state()`'s dict (a checkpoint's task state 'samix')."""
        self._check_same_mixer(state)
        self.step = state['step']
        self.fp32_features = state.get('fp32_features', False)
        self.mixer.load_state_dict(state['mixer'])
        self.trainer.load_state_dict(state)
        self.encoder.module.load_state_dict(state['encoder'])
        # the Mixer lr comes back with its optimizer: it is the one the last Mixer update set, which
        # is not lr(step) when that update was before `step` (--samix-mixer-every > 1, mix_prob < 1)
