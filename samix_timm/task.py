""" The training steps of train.py and train_ssl.py as `timm.task.TrainingTask`s, for the one loop both run
(`engine.loop.train_one_epoch`) and for loops of one's own: mix, forward, loss (and the clean-batch term of §5.6);
online SAMix (§5); MoCo v2 + SAMix-I/-C (§6).

    task = create_task(model, loss_fn, mixer, clean)        # mixer: timm Mixup, SAMix^P, a SAMix or None
    result = task(x, target)                                # {'loss', 'output', 'input', + the mixer's metrics}
    result['loss'].backward()

The training loop knows only the task. A fixed mixer (timm's Mixup, the frozen Mixer of SAMix^P) keeps the
`(x, target) -> (x_mix, soft_target)` call of timm's Mixup; online SAMix is a task (`SAMixTask`) that owns θ̄, the
feature tap, the Mixer and its optimizer (through its `SAMix` submodule) and runs the method's step in order. The
clean term, W·loss(f(x), y) + loss(f(x_mix), ỹ), is computed from both halves directly: each call returns what it
made, and nothing passes between calls through attributes.
"""
import logging
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
import torch.nn as nn
from timm.optim import param_groups_weight_decay
from timm.task import TrainingTask
from timm.utils import unwrap_model
from torch.profiler import record_function

from .clean import CLEAN_HEADS, CleanHeadClassifier, CleanTerm
from .errors import ConfigError
from .mixer import MixerNumericsError
from .mixing import mix_images, soft_target
from .samix import SAMix

__all__ = ['Task', 'MixTask', 'SAMixTask', 'MoCoTask', 'create_task']

_logger = logging.getLogger(__name__)


TASK_STATE_KEY = 'task_state'  # timm's key of what a task keeps outside the eval model's state_dict
MIXER_STATE_KEY = 'samix'  # online SAMix's state, in the task state
CLASSES_KEY = 'class_to_idx'  # the training class index, so validate.py labels a split as training did
CLEAN_HEAD_KEY = 'clean_head'  # the training-only clean head of clean_head='own', in the task state
MOCO_STATE_KEY = 'moco'  # MoCo's key encoder, queue and Mixer, in the task state
# checkpoints written before the task state (2026-12-07) kept these entries at the top level
LEGACY_TASK_KEYS = (MIXER_STATE_KEY, CLEAN_HEAD_KEY, MOCO_STATE_KEY)


def task_state_of(checkpoint: Dict[str, Any]) -> Dict[str, Any]:
    """The task state of a checkpoint: its `task_state`, or for a checkpoint written before that entry existed,
    its top-level `samix` / `clean_head` / `moco` entries."""
    if TASK_STATE_KEY in checkpoint:
        return checkpoint[TASK_STATE_KEY] or {}
    return {k: checkpoint[k] for k in LEGACY_TASK_KEYS if k in checkpoint}


class Task(TrainingTask):
    """A timm TrainingTask with what our loop asks besides timm's contract: `extra_param_groups`, the parameters the
    step trains beside the trainable module (the optimizer is built after the task). timm's `CheckpointSaver(task=...)`, its
    `resume_task_checkpoint` and our resume read and write a checkpoint through `get_task_state` /
    `load_task_state` (`task_state`) beside the trainable module's `state_dict`."""

    resume_keys: Tuple[str, ...] = ()  # entries a checkpoint must hold for this task to continue from it
    resume_task_keys: Tuple[str, ...] = ()  # and entries of its task state

    def extra_param_groups(self, weight_decay: float) -> List[Dict[str, Any]]:
        """Optimizer parameter groups of what the step trains outside `trainable_module` (none here)."""
        return []


class MixTask(Task):
    """One training step: the batch mixed by `mixer` (after the loader, outside autocast: mixers keep their own
    precision), the classifier's forward under the loop's autocast, the recipe's loss on the mixed batch, plus
    W·loss on the clean batch when `clean` is on (§5.6).

    The checkpoint keeps the classifier's `state_dict` / `state_dict_ema` where timm puts them (timm's own
    validate.py reads our checkpoints) and the training class index.

    Args:
        model: the classifier (DDP-wrapped or compiled as the loop runs it; unwrapped with clean_head='own', then
            `prepare_distributed` wraps it with its clean head).
        criterion: the recipe's training loss (soft-target CE, BCE, ...).
        mixer: a `(x, target) -> (x_mix, soft_target)` mixer with `mixup_enabled` (timm Mixup, SAMix^P), or None.
        clean: the clean-batch term, or None.
        clean_head: 'shared' (the clean batch through the classifier's own head) or 'own' (the reference's
            training-only second head, `CleanHeadClassifier`; saved as 'clean_head', outside `state_dict`).
        channels_last: hand the classifier channels_last input.
        model_ema: timm EMA of the classifier, or None (`trainable_module_ema`, as timm's tasks name it).
        class_to_idx: the training class index (ImageFolder), or None.
    """

    mixes_in_place = True  # what timm's Mixup does to its input

    def __init__(self, model: nn.Module, criterion: Callable, mixer: Optional[Callable] = None,
                 clean: Optional[CleanTerm] = None, channels_last: bool = False,
                 device: Optional[torch.device] = None, model_ema: Optional[nn.Module] = None,
                 class_to_idx: Optional[Dict[str, int]] = None, clean_head: str = 'shared'):
        super().__init__(device=device, verbose=False)
        self.trainable_module = model
        self.trainable_module_ema = model_ema
        self.criterion = criterion
        self.mixer = mixer
        self.clean = clean if clean is not None and clean.weight > 0 else None
        self.channels_last = channels_last
        self.class_to_idx = class_to_idx
        if clean_head not in CLEAN_HEADS:
            raise ValueError(f"clean_head={clean_head!r} is not known: use one of {', '.join(CLEAN_HEADS)}")
        if clean_head == 'own' and self.clean is None:
            raise ValueError("clean_head='own' needs the clean-batch term: pass a CleanTerm with weight > 0")
        # the module the step runs with the reference's second head (the classifier and that head), else None
        self.clean_classifier = CleanHeadClassifier(model) if clean_head == 'own' else None

    def prepare_distributed(self, device_ids: Optional[list] = None, **ddp_kwargs) -> 'MixTask':
        """DDP-wrap what the step trains: the classifier, or the classifier with its clean head (whose head is
        unused on steps without mixing, hence find_unused_parameters)."""
        ddp = nn.parallel.DistributedDataParallel
        if self.clean_classifier is not None:
            self.clean_classifier = ddp(self.clean_classifier, device_ids=device_ids, find_unused_parameters=True,
                                        **ddp_kwargs)
        else:
            self.trainable_module = ddp(self.trainable_module, device_ids=device_ids, **ddp_kwargs)
        return self

    def no_sync(self):
        if self.clean_classifier is not None and hasattr(self.clean_classifier, 'no_sync'):
            return self.clean_classifier.no_sync()
        return super().no_sync()

    def get_task_state(self, module: Optional[nn.Module] = None, ema: bool = False) -> Dict[str, Any]:
        """The clean head of clean_head='own' (training-only: outside the state_dict users load)."""
        if ema or self.clean_classifier is None:
            return {}
        return {CLEAN_HEAD_KEY: unwrap_model(self.clean_classifier).head.state_dict()}

    def load_task_state(self, state: Optional[Dict[str, Any]], strict: bool = True, module: Optional[nn.Module] = None,
                        ema: bool = False) -> None:
        if ema or self.clean_classifier is None:
            return
        head = unwrap_model(self.clean_classifier).head
        if state and CLEAN_HEAD_KEY in state:
            head.load_state_dict(state[CLEAN_HEAD_KEY], strict=strict)
        else:
            _logger.warning('the checkpoint holds no clean head (a run with one head): it starts as a copy of the '
                            'resumed classifier head')
            head.load_state_dict(unwrap_model(self.trainable_module).get_classifier().state_dict())

    def get_checkpoint_state(self, ema: bool = False, unwrap_fn=unwrap_model) -> Dict[str, Any]:
        """timm's entries (`state_dict` / `state_dict_ema`, `task_state`) and the training class index."""
        if ema and not self.has_ema():
            return {}
        state = super().get_checkpoint_state(ema, unwrap_fn)
        if not ema and self.class_to_idx:
            state[CLASSES_KEY] = dict(self.class_to_idx)
        return state

    def load_checkpoint_state(self, state_dict: Dict[str, Any], task_state: Optional[Dict[str, Any]] = None,
                              ema: bool = False, strict: bool = True) -> None:
        """timm's contract: the classifier (or with ema=True its EMA) and the task state. Without an EMA entry the
        EMA of a resumed run restarts as a copy of the resumed classifier (`restart_ema`)."""
        if ema and not self.has_ema():
            return
        super().load_checkpoint_state(state_dict, task_state, ema=ema, strict=strict)

    def restart_ema(self) -> None:
        """The EMA as a copy of the classifier (a resumed checkpoint without EMA weights)."""
        if self.has_ema():
            self.trainable_module_ema.set(unwrap_model(self.trainable_module))

    def get_clip_parameters(self, exclude_head: bool = False) -> List[nn.Parameter]:
        """Every parameter the step trains: the classifier's and the clean head's (without the heads with
        exclude_head, as timm's agc clipping wants)."""
        params = list(unwrap_model(self.trainable_module).parameters())
        params = params[:-2] if exclude_head else params
        if self.clean_classifier is not None and not exclude_head:
            params += list(unwrap_model(self.clean_classifier).head.parameters())
        return params

    def extra_param_groups(self, weight_decay: float) -> List[Dict[str, Any]]:
        """The clean head of clean_head='own', in timm's weight-decay groups."""
        if self.clean_classifier is None:
            return []
        return param_groups_weight_decay(unwrap_model(self.clean_classifier).head, weight_decay)

    def mixes(self) -> bool:
        """Whether this call mixes (a mixer, on): the clean-batch term applies then."""
        return self.mixer is not None and self.mixer.mixup_enabled

    def mix(self, x: torch.Tensor, target: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, Dict[str, Any]]:
        """(x_mix, soft_target, metrics) of the mixer: (x, target, {}) without one (timm's Mixup has no metrics)."""
        if self.mixer is None:
            return x, target, {}
        x, y = self.mixer(x, target)
        return x, y, {}

    def compile(self, backend: str = 'inductor', mode: Optional[str] = None, **compile_kwargs) -> nn.Module:
        """torch.compile the classifier as the loop runs it (`--torchcompile`)."""
        self.trainable_module = torch.compile(self.trainable_module, backend=backend, mode=mode, **compile_kwargs)
        self.eval_model = self.trainable_module
        if self.clean_classifier is not None:
            self.clean_classifier = torch.compile(self.clean_classifier, backend=backend, mode=mode, **compile_kwargs)
        return self.trainable_module

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def _model(self, x: torch.Tensor) -> torch.Tensor:
        if self.clean_classifier is not None:  # every step through the module DDP syncs
            return self.clean_classifier(None, self._layout(x))[1]
        return self.trainable_module(self._layout(x))

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> Dict[str, torch.Tensor]:
        clean = None
        if self.clean is not None and self.mixes():
            x_clean, y_clean = self.clean.batch(input, target)
            # before mixing: timm's Mixup mixes the batch in place (SAMix makes a new tensor: no copy)
            clean = (x_clean.clone() if self.mixes_in_place else x_clean), y_clean
        with torch.autocast(device_type=input.device.type, enabled=False):  # mixers keep their own precision
            x, y, metrics = self.mix(input, target)
        if clean is None:
            output = self._model(x)
            return dict(loss=self.criterion(output, y), output=output, input=x, **metrics)
        x_clean, y_clean = clean
        if self.clean_classifier is not None:  # the reference's clean head on the shared features (§5.6)
            out_clean, out_mix = self.clean_classifier(self._layout(x_clean), self._layout(x),
                                                       self.clean.forward == 'separate')
        elif self.clean.forward == 'separate':  # each half with its own BN statistics, as the reference (§5.6)
            out_clean, out_mix = self._model(x_clean), self._model(x)
        else:
            out_clean, out_mix = self._model(torch.cat([x_clean, x])).split([x_clean.shape[0], x.shape[0]])
        w = self.clean.term_weight(x_clean.shape[0], input.shape[0])  # W·n/N (§5.6)
        loss = w * self.criterion(out_clean, y_clean) + self.criterion(out_mix, y)
        return dict(loss=loss, output=torch.cat([out_clean, out_mix]), input=torch.cat([x_clean, x]), **metrics)


class SAMixTask(MixTask):
    """Online SAMix (§5) as one training step: the method's step up to the classifier (`mix`), then `MixTask`'s
    classifier forward and loss on the mixed batch and the clean-batch term (§5.6). The task owns the method's parts
    through its `samix` submodule, as timm's `LogitDistillationTask` owns its teacher: θ̄ (`samix.encoder`), the
    feature tap (`samix.tap`), the Mixer (`samix.mixer`) and the Mixer's optimizer (`samix.trainer`), so `to`,
    `train`/`eval` and `state_dict` reach them, and a checkpoint keeps them in its task state ('samix').

        samix = create_samix(model, num_classes, total_steps, train_size=len(dataset))  # train.py's settings
        task = SAMixTask(model, loss_fn, samix)
        result = task(x, target)        # trains the Mixer on the way; result['loss'] trains the classifier

    Args:
        model: the classifier (as `MixTask`).
        criterion: the recipe's training loss.
        samix: the online SAMix built on `model`; its preset brings the clean-batch term.
        channels_last, device, model_ema, class_to_idx, clean_head: as `MixTask`.
    """
    mixes_in_place = False  # `mix_images` returns a new tensor

    def __init__(self, model: nn.Module, criterion: Callable, samix: SAMix, channels_last: bool = False,
                 device: Optional[torch.device] = None, model_ema: Optional[nn.Module] = None,
                 class_to_idx: Optional[Dict[str, int]] = None, clean_head: str = 'shared'):
        super().__init__(model, criterion, None, samix.clean, channels_last, device, model_ema, class_to_idx,
                         clean_head)
        self.samix = samix

    def mixes(self) -> bool:
        return self.samix.mixup_enabled

    def mix(self, x: torch.Tensor, target: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, Dict[str, Any]]:
        """The method's step up to the classifier (§5): θ̄ follows θ, λ_q, λ_k and π_q are drawn, θ̄ reads the clean
        batch, the Mixer masks it for the classifier and is updated on its own mixing. Returns (x_mix NxCxHxW, ỹ_q NxK,
        metrics); (x, one-hot, {}) when mixing is off or this step draws no mixing (as timm's Mixup)."""
        samix = self.samix
        if target.ndim != 1:
            raise ConfigError('SAMix received soft targets: it must be the only mixer, do not combine it with '
                              'collate-time mixing (timm FastCollateMixup)')
        momentum = samix.update_encoder(unwrap_model(self.trainable_module))  # §5.5 θ̄ ← m θ̄ + (1 − m) θ
        draw = samix.draw() if samix.mixup_enabled else None  # §5.1 λ_q, λ_k: numpy's RNG, rank 0's draw
        if draw is None:
            return x, soft_target(target, None, 1., samix.num_classes, samix.mix.label_smoothing), {}
        lam_q, lam_k, adjust = draw
        index_q = torch.randperm(x.shape[0], device=x.device)  # π_q (N,); the pairing may differ per rank
        try:
            x_mix, metrics = self._masks_and_update(x, target, lam_q, lam_k, index_q, adjust)
        except MixerNumericsError as e:  # §2: fp16 overflow of the features or the attention: once more in fp32
            samix.fall_back_to_fp32(e)
            x_mix, metrics = self._masks_and_update(x, target, lam_q, lam_k, index_q, adjust)
        y_mix = soft_target(target, index_q, lam_q, samix.num_classes, samix.mix.label_smoothing)  # ỹ_q, NxK
        return x_mix, y_mix, dict(metrics, momentum=momentum, lam=lam_q)

    def _masks_and_update(self, x: torch.Tensor, target: torch.Tensor, lam_q: float, lam_k: float,
                          index_q: torch.Tensor, adjust: bool) -> Tuple[torch.Tensor, Dict[str, Any]]:
        samix = self.samix
        x = samix.encoder_input(x)
        z = samix.features(x)  # §5.2 NxCxhxw, θ̄'s stage-l map of the clean batch, no grad
        with torch.no_grad(), record_function('samix/classifier_mask'):
            s_q = samix.classifier_mask(z, lam_q, index_q, x.shape[-2:], adjust)  # §5.3 Nx1xHxW
            x_mix = mix_images(x, s_q, index_q)  # NxCxHxW
        metrics = samix.train_mixer(x, target, z, lam_k) if samix.mixer_due() else {}  # §5.4 with λ_k, π_k
        samix.trainer.sync_buffers()  # also on steps without an update: the mask forward moved the BN statistics
        return x_mix, metrics

    def get_task_state(self, module: Optional[nn.Module] = None, ema: bool = False) -> Dict[str, Any]:
        """The clean head's, and the state to continue or export the Mixer (`SAMix.get_state`: θ̄, the Mixer,
        its optimizer and step, under 'samix')."""
        state = super().get_task_state(module, ema)
        if not ema:
            state[MIXER_STATE_KEY] = self.samix.get_state()
        return state

    def load_task_state(self, state: Optional[Dict[str, Any]], strict: bool = True, module: Optional[nn.Module] = None,
                        ema: bool = False) -> None:
        """The clean head, then the Mixer, its optimizer and θ̄; a checkpoint without them (another mixer's run)
        starts a fresh Mixer on θ̄ = the resumed classifier."""
        super().load_task_state(state, strict, module, ema)
        if ema:
            return
        if state and MIXER_STATE_KEY in state:
            self.samix.load_state(state[MIXER_STATE_KEY])
            _logger.info(f'Restored SAMix state (step {self.samix.step})')
        else:
            _logger.warning('the checkpoint holds no SAMix state: the Mixer starts fresh, θ̄ from the resumed weights')
            self.samix.encoder.set(unwrap_model(self.trainable_module))

    def compile(self, backend: str = 'inductor', mode: Optional[str] = None, **compile_kwargs) -> nn.Module:
        """The classifier, and θ̄'s two passes and the Mixer with the same backend and mode (`SAMix.compile`)."""
        self.samix.compile(backend, mode)
        return super().compile(backend, mode, **compile_kwargs)


class MoCoTask(Task):
    """train_ssl.py's step: MoCo v2 with its `--ssl-mix` mode (§6) on a batch of two views; the input is (x1, x2),
    the target each sample's index. The Mixer of SAMix-I/-C trains inside `MoCoSAMix`.

    A checkpoint holds, besides timm's epoch/optimizer/args/scaler entries, the whole online module (`state_dict`),
    MoCo's key encoder, queue and Mixer (`task_state`), the backbone+projector for the export and the `config` the
    probes rebuild the backbone from.

    Args:
        model: `MoCoOnline` (DDP-wrapped when distributed).
        moco: the `MoCoSAMix` of the run (key encoder, queue, Mixer).
        channels_last: hand the encoder channels_last views.
        config: the run's settings a checkpoint carries for the probes and the export.
    """

    def __init__(self, model: nn.Module, moco, channels_last: bool = False, device: Optional[torch.device] = None,
                 config: Optional[Dict[str, Any]] = None):
        super().__init__(device=device, verbose=False)
        self.trainable_module = model
        self.moco = moco
        self.channels_last = channels_last
        self.config = dict(config or {})

    resume_keys = ('state_dict', 'optimizer', 'epoch')
    resume_task_keys = (MOCO_STATE_KEY,)

    def get_task_state(self, module: Optional[nn.Module] = None, ema: bool = False) -> Dict[str, Any]:
        """MoCo's key encoder, queue and Mixer (`MoCoSAMix.state_dict`)."""
        return {} if ema else {MOCO_STATE_KEY: self.moco.state_dict()}

    def load_task_state(self, state: Optional[Dict[str, Any]], strict: bool = True, module: Optional[nn.Module] = None,
                        ema: bool = False) -> None:
        if ema:
            return
        if not state or MOCO_STATE_KEY not in state:
            raise KeyError(f'the checkpoint holds no {MOCO_STATE_KEY} state (key encoder, queue): not a train_ssl.py run')
        self.moco.load_state_dict(state[MOCO_STATE_KEY])

    def get_checkpoint_state(self, ema: bool = False, unwrap_fn=unwrap_model) -> Dict[str, Any]:
        """timm's entries (the whole online module as `state_dict`, `task_state`), the backbone+projector for the
        export and the probes (`encoder`) and the `config` they rebuild it from."""
        if ema:
            return {}
        state = super().get_checkpoint_state(ema, unwrap_fn)
        return dict(state, config=self.config, encoder=unwrap_fn(self.trainable_module).encoder.state_dict())

    def forward(self, input, target: torch.Tensor) -> Dict[str, torch.Tensor]:
        x1, x2 = input
        if self.channels_last:
            x1, x2 = x1.contiguous(memory_format=torch.channels_last), x2.contiguous(memory_format=torch.channels_last)
        loss, metrics = self.moco(self.trainable_module, x1, x2, target)
        return dict(loss=loss, **metrics)



def create_task(model: nn.Module, criterion: Callable, mixer: Optional[Callable] = None,
                clean: Optional[CleanTerm] = None, channels_last: bool = False,
                device: Optional[torch.device] = None, model_ema: Optional[nn.Module] = None,
                class_to_idx: Optional[Dict[str, int]] = None, clean_head: str = 'shared') -> MixTask:
    """The task of a run: `SAMixTask` for online SAMix (its clean term is its preset's), else `MixTask`."""
    if isinstance(mixer, SAMix):
        return SAMixTask(model, criterion, mixer, channels_last, device, model_ema, class_to_idx, clean_head)
    return MixTask(model, criterion, mixer, clean, channels_last, device, model_ema, class_to_idx, clean_head)
