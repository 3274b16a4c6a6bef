""" The training steps of train.py and train_ssl.py as `timm.task.TrainingTask`s, for the one loop both run
(`engine.loop.train_one_epoch`): mix, forward, loss (and the clean-batch term of §5.6); MoCo v2 + SAMix-I/-C (§6).

    task = create_task(model, loss_fn, mixer, clean)        # mixer: timm Mixup, SAMix, SAMix^P or None
    result = task(x, target)                                # {'loss', 'output', 'input', + the mixer's metrics}
    result['loss'].backward()

The training loop knows only the task. The clean term, W·loss(f(x), y) + loss(f(x_mix), ỹ), is computed here from
both halves directly, so nothing passes between the mixer's call and the loss (the Mixup-shaped `SAMix.__call__`
with `SAMix.loss` stays for loops of one's own).
"""
import logging
from typing import Any, Callable, Dict, Optional, Tuple

import torch
import torch.nn as nn
from timm.task import TrainingTask
from timm.utils import get_state_dict, unwrap_model

from .clean import CLEAN_HEADS, CleanHeadClassifier, CleanTerm
from .samix import SAMix

__all__ = ['Task', 'MixTask', 'SAMixTask', 'MoCoTask', 'create_task']

_logger = logging.getLogger(__name__)


MIXER_STATE_KEY = 'samix'  # online SAMix's state in a train.py checkpoint
CLASSES_KEY = 'class_to_idx'  # the training class index, so validate.py labels a split as training did
CLEAN_HEAD_KEY = 'clean_head'  # the training-only clean head of clean_head='own'


class Task(TrainingTask):
    """A timm TrainingTask with the one hook our loop calls after every optimizer step (`after_step`: MoCo enqueues
    its keys there); nothing to do for the supervised steps. timm's `CheckpointSaver(task=...)` asks it what a
    checkpoint holds besides timm's own entries (`get_checkpoint_state`)."""

    resume_keys: Tuple[str, ...] = ()  # entries a checkpoint must hold for this task to continue from it

    def after_step(self) -> None:
        pass

    def load_checkpoint_state(self, checkpoint: Dict[str, Any], load: Callable[[Any, str], None]) -> None:
        """Continue from a checkpoint `get_checkpoint_state` wrote: `load(obj, key)` puts entry `key` into `obj`
        (the caller's strict loader, which words the errors)."""
        raise NotImplementedError


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

    def get_checkpoint_state(self, ema: bool = False, unwrap_fn=unwrap_model) -> Dict[str, Any]:
        if ema:
            ema_module = self.trainable_module_ema
            return {'state_dict_ema': get_state_dict(ema_module, unwrap_fn)} if ema_module is not None else {}
        state = {'state_dict': get_state_dict(self.trainable_module, unwrap_fn)}
        if self.class_to_idx:
            state[CLASSES_KEY] = dict(self.class_to_idx)
        if self.clean_classifier is not None:  # training-only: outside the state_dict users load
            state[CLEAN_HEAD_KEY] = unwrap_fn(self.clean_classifier).head.state_dict()
        return state

    def load_checkpoint_state(self, checkpoint: Dict[str, Any], load: Callable[[Any, str], None]) -> None:
        """The classifier, and its EMA (a copy of the resumed classifier when the checkpoint has none)."""
        model = unwrap_model(self.trainable_module)
        load(model, 'state_dict')
        if self.trainable_module_ema is not None:
            if 'state_dict_ema' in checkpoint:
                load(self.trainable_module_ema.module, 'state_dict_ema')
            else:
                self.trainable_module_ema.set(model)
        if self.clean_classifier is not None:
            if CLEAN_HEAD_KEY in checkpoint:
                load(unwrap_model(self.clean_classifier).head, CLEAN_HEAD_KEY)
            else:
                _logger.warning('the checkpoint holds no clean head (a run with one head): it starts as a copy of the '
                                'resumed classifier head')
                unwrap_model(self.clean_classifier).head.load_state_dict(model.get_classifier().state_dict())

    def mix(self, x: torch.Tensor, target: torch.Tensor):
        return self.mixer(x, target)

    def compile(self, backend: str = 'inductor', mode: Optional[str] = None, **compile_kwargs) -> nn.Module:
        """torch.compile the classifier as the loop runs it (`--torchcompile`)."""
        self.trainable_module = torch.compile(self.trainable_module, backend=backend, mode=mode, **compile_kwargs)
        self.eval_model = self.trainable_module
        if self.clean_classifier is not None:
            self.clean_classifier = torch.compile(self.clean_classifier, backend=backend, mode=mode, **compile_kwargs)
        return self.trainable_module

    def metrics(self) -> Dict[str, torch.Tensor]:
        """The mixer's metrics of the last step (none for a fixed mixer)."""
        return {}

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def _model(self, x: torch.Tensor) -> torch.Tensor:
        if self.clean_classifier is not None:  # every step through the module DDP syncs
            return self.clean_classifier(None, self._layout(x))[1]
        return self.trainable_module(self._layout(x))

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> Dict[str, torch.Tensor]:
        x, y, clean = input, target, None
        if self.mixer is not None:
            if self.clean is not None and self.mixer.mixup_enabled:
                x_clean, y_clean = self.clean.batch(input, target)
                # before mixing: timm's Mixup mixes the batch in place (SAMix makes a new tensor: no copy)
                clean = (x_clean.clone() if self.mixes_in_place else x_clean), y_clean
            with torch.autocast(device_type=input.device.type, enabled=False):
                x, y = self.mix(input, target)
        if clean is None:
            output = self._model(x)
            return dict(loss=self.criterion(output, y), output=output, input=x, **self.metrics())
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
        return dict(loss=loss, output=torch.cat([out_clean, out_mix]), input=torch.cat([x_clean, x]),
                    **self.metrics())


class SAMixTask(MixTask):
    """`MixTask` with online SAMix: the step trains the Mixer (through `SAMix.mix_batch`) and reports its metrics;
    `compile()` also compiles θ̄'s passes and the Mixer."""
    mixes_in_place = False  # `mix_images` returns a new tensor

    def __init__(self, model: nn.Module, criterion: Callable, samix: SAMix, channels_last: bool = False,
                 device: Optional[torch.device] = None, model_ema: Optional[nn.Module] = None,
                 class_to_idx: Optional[Dict[str, int]] = None, clean_head: str = 'shared'):
        super().__init__(model, criterion, samix, samix.clean, channels_last, device, model_ema, class_to_idx,
                         clean_head)

    def get_checkpoint_state(self, ema: bool = False, unwrap_fn=unwrap_model) -> Dict[str, Any]:
        """timm's entries, and the state to continue or export the Mixer (`SAMix.state_dict`, under 'samix')."""
        state = super().get_checkpoint_state(ema, unwrap_fn)
        if not ema:
            state[MIXER_STATE_KEY] = self.mixer.state_dict()
        return state

    def load_checkpoint_state(self, checkpoint: Dict[str, Any], load: Callable[[Any, str], None]) -> None:
        """The classifier and its EMA, then the Mixer, its optimizer and θ̄; a checkpoint without them (another
        mixer's run) starts a fresh Mixer on θ̄ = the resumed classifier."""
        super().load_checkpoint_state(checkpoint, load)
        if MIXER_STATE_KEY in checkpoint:
            load(self.mixer, MIXER_STATE_KEY)
            _logger.info(f'Restored SAMix state (step {self.mixer.step})')
        else:
            _logger.warning('the checkpoint holds no SAMix state: the Mixer starts fresh, θ̄ from the resumed weights')
            self.mixer.encoder.set(unwrap_model(self.trainable_module))

    def mix(self, x: torch.Tensor, target: torch.Tensor):
        return self.mixer.mix_batch(x, target)

    def metrics(self) -> Dict[str, torch.Tensor]:
        return dict(self.mixer.last_metrics)

    def compile(self, backend: str = 'inductor', mode: Optional[str] = None, **compile_kwargs) -> nn.Module:
        """The classifier, and θ̄'s two passes and the Mixer with the same backend and mode (`SAMix.compile`)."""
        self.mixer.compile(backend, mode)
        return super().compile(backend, mode, **compile_kwargs)


class MoCoTask(Task):
    """train_ssl.py's step: MoCo v2 with its `--ssl-mix` mode (§6) on a batch of two views; the input is (x1, x2),
    the target each sample's index. The Mixer of SAMix-I/-C trains inside `MoCoSAMix`.

    A checkpoint holds, besides timm's epoch/optimizer/args/scaler entries, the backbone+projector for export, the
    whole online module, MoCo's key encoder, queue and Mixer, and the `config` the probes rebuild the backbone from.

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

    def get_checkpoint_state(self, ema: bool = False, unwrap_fn=unwrap_model) -> Dict[str, Any]:
        if ema:
            return {}
        online = unwrap_model(self.trainable_module)
        return dict(config=self.config, encoder=online.encoder.state_dict(), online=online.state_dict(),
                    moco=self.moco.state_dict())

    resume_keys = ('online', 'optimizer', 'moco', 'epoch')

    def load_checkpoint_state(self, checkpoint: Dict[str, Any], load: Callable[[Any, str], None]) -> None:
        """The online encoder, then MoCo's key encoder, queue and Mixer."""
        load(unwrap_model(self.trainable_module), 'online')
        load(self.moco, 'moco')

    def forward(self, input, target: torch.Tensor) -> Dict[str, torch.Tensor]:
        x1, x2 = input
        if self.channels_last:
            x1, x2 = x1.contiguous(memory_format=torch.channels_last), x2.contiguous(memory_format=torch.channels_last)
        loss, metrics = self.moco(self.trainable_module, x1, x2, target)
        return dict(loss=loss, **metrics)

    def after_step(self) -> None:
        self.moco.after_step()  # enqueue this step's keys, advance the step


def create_task(model: nn.Module, criterion: Callable, mixer: Optional[Callable] = None,
                clean: Optional[CleanTerm] = None, channels_last: bool = False,
                device: Optional[torch.device] = None, model_ema: Optional[nn.Module] = None,
                class_to_idx: Optional[Dict[str, int]] = None, clean_head: str = 'shared') -> MixTask:
    """The task of a run: `SAMixTask` for online SAMix (its clean term is its preset's), else `MixTask`."""
    if isinstance(mixer, SAMix):
        return SAMixTask(model, criterion, mixer, channels_last, device, model_ema, class_to_idx, clean_head)
    return MixTask(model, criterion, mixer, clean, channels_last, device, model_ema, class_to_idx, clean_head)
