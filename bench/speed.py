#!/usr/bin/env python3
""" Cost of a training step with each mixing method, measured side by side in one run: step time, peak memory and
(`--flops`) the FLOPs of one step.

A step is train.py's: each method is a set of train.py flags (`METHODS`), and `Runner` builds from them, as
`samix_timm.engine.train` does, the model, the mixing, the task (`build_task`), its optimizer
(`create_task_optimizer`) and the loop's `StepContext`; `train_one_epoch` then runs the task over identical
batches already in memory (mix, forward, loss and for SAMix the Mixer's update inside `task(x, target)`, backward,
clipping, optimizer step, EMA). Methods are interleaved (a window of steps of each, repeated) after a
warm-up, so drifts of the machine hit all of them alike; a sample is the mean step time of one `train_one_epoch` over
a window of batches (2: a whole cycle of `--samix-mixer-every 2`), and the table reports the median sample, its
spread (interquartile range) and the ratio to timm Mixup from the same run. Peak memory is measured per method in a
fresh subprocess (RSS on CPU, max allocated on CUDA). `--breakdown` profiles the default online SAMix step.

    python bench/speed.py --models resnet18 resnet50 deit_small_patch16_224:112 --img-size 64 --batch-size 32 --breakdown
    python bench/speed.py --flops     # FLOPs of one step at ImageNet scale (the models of configs/in1k, 224 px), CPU

A model may carry its own resolution as NAME:SIZE (e.g. a ViT at 112 px, where 64 px would leave
a 4x4 token map); the others use --img-size. A method may carry `@cl` (e.g. `mixup@cl samix_every2@cl`):
train.py's --channels-last (the batch is handed over in channels_last too).

`--flops` counts, with `torch.utils.flop_counter.FlopCounterMode`, the FLOPs of `--window` steps of each method
(a whole Mixer cycle) on a small batch (default 2; per-image FLOPs do not depend on it) and reports GFLOPs per image
per step and the ratio to timm Mixup; by default for the IN-1k models of configs/in1k at 224 px, 1,000 classes, to
bench/results/flops_in1k.{json,md}. FlopCounterMode counts matrix products, convolutions and attention (forward and
backward), not element-wise work, normalisation, resizing or the optimizers.

<out>.json and <out>.md are created before the first step and rewritten after each model; a results file
this run did not create is never replaced: an existing one is refused unless `--overwrite` (re-timing a
committed table on purpose).
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import timm
import torch
from timm.data import resolve_data_config
from timm.utils import random_seed
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from samix_timm.defaults import REFERENCE_PRESET, SAMIX_PRESETS, is_transformer  # noqa: E402
from samix_timm.engine.args import parse_train_args  # noqa: E402
from samix_timm.engine.loop import StepContext, train_one_epoch  # noqa: E402
from samix_timm.engine.setup import create_amp, resolve_device  # noqa: E402
from samix_timm.engine.train import (  # noqa: E402
    build_model, build_task, create_mixing, create_task_optimizer, resolve_lr)
from samix_timm.errors import ConfigError  # noqa: E402
from samix_timm.features import FeatureTap  # noqa: E402
from samix_timm.mixer import Mixer  # noqa: E402

NUM_CLASSES = 100
TOTAL_STEPS = 10_000  # the run length SAMix's schedules are set for (train.py: --epochs 1 of this many batches)
IN1K_CLASSES = 1000
# the ImageNet-1k models of configs/in1k at their resolution (--flops; tests/test_speed_task.py checks the configs)
IN1K_MODELS = ('resnet18:224', 'resnet50:224', 'deit_small_patch16_224:224', 'swin_tiny_patch4_window7_224:224')


def random_artifact(extractor: str, img_size: int) -> Dict:
    """A SAMix^P artifact with an untrained Mixer: same cost as a trained one (§7: R-18 extractor)."""
    model = timm.create_model(extractor, num_classes=NUM_CLASSES)
    index = FeatureTap(model, input_size=img_size).index
    mixer = Mixer(FeatureTap(model, index=index).channels, dropout=0.0)
    model.prune_intermediate_layers(indices=[index], prune_norm=True, prune_head=True)
    return dict(
        format_version=1, info={},
        extractor=dict(model=extractor, num_classes=NUM_CLASSES, feature_index=index, state_dict=model.state_dict()),
        mixer=dict(name='samix', config=mixer.config, state_dict=mixer.state_dict()),
        data=dict(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225], input_size=[3, img_size, img_size]))


class OutError(Exception):
    """A results path this run may not write; the message is the one line to print."""


def claim_results(out: str, overwrite: bool, contents: Dict[str, str]) -> Path:
    """Create <out>.json and <out>.md for this run before any work, with `contents` (suffix -> text: the report as
    it stands), so a later write only ever replaces a file this run made. An existing file is refused unless
    `overwrite`; a path that cannot be written is named. Raises OutError."""
    path = Path(out)
    if not path.name or path.name in ('.', '..'):
        raise OutError(f"--out '{out}' names no file: pass --out FOLDER/NAME (writes NAME.json and NAME.md)")
    files = [path.with_suffix(suffix) for suffix in contents]
    taken = next((f for f in files if f.exists() or f.is_symlink()), None)
    if taken is not None and not overwrite:
        raise OutError(f"'{taken}' already exists (a report this run did not write): pass another --out, "
                       f"or --overwrite to replace it")
    cannot = "--out '{}' cannot be written ({}): pass --out in a folder you can write to"
    if path.parent.exists() and not path.parent.is_dir():
        raise OutError(cannot.format(out, f"'{path.parent}' is a file, not a folder"))
    made: List[Path] = []
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        for f, text in zip(files, contents.values()):
            with open(f, 'w' if overwrite else 'x') as fh:
                made.append(f)
                fh.write(text)
    except FileExistsError as e:  # made by someone else since the check above
        for f in made:
            f.unlink(missing_ok=True)
        raise OutError(f"'{e.filename}' already exists (a report this run did not write): pass another --out, "
                       f"or --overwrite to replace it") from None
    except OSError as e:
        for f in made:
            f.unlink(missing_ok=True)
        raise OutError(cannot.format(out, e.strerror or e)) from None
    return path


# SAMix^P artifacts written for the run (`method_flags`): a resnet18 extractor, or the classifier's own architecture
# (a Mixer exported from an online run of it: its θ̄ is the extractor), each with an untrained Mixer
RANDOM_R18, RANDOM_SELF = '<untrained resnet18 Mixer>', '<untrained Mixer of the classifier>'
# the rows in bench/results were timed with the authors' Mixer; `samix_<preset>_stable` times the default Mixer (§2.6)
AUTHORS_MIXER = ['--samix-mixer-init', 'reference', '--samix-mixer-norm', 'none', '--samix-mask-area', 'free',
                 '--samix-mask-loss', 'batch', '--samix-mask-sharpness', '0']
SAMIX, MIXUP = ['--mixup', 'samix'], ['--mixup', '1.0']
NO_CLEAN = ['--samix-clean-weight', '0']

# method name -> the train.py flags of its step (beside model, size, batch, classes and device)
METHODS: Dict[str, List[str]] = {
    'none': [],
    'mixup': MIXUP,
    'cutmix': ['--cutmix', '1.0'],
    'samix': SAMIX,  # train.py's default SAMix
    # the Mixer on half the batch (every step, or every 2nd), no clean term, default Mixer
    'samix_frac0.5': SAMIX + ['--samix-preset', 'half'] + NO_CLEAN,
    'samix_every2_frac0.5': SAMIX + ['--samix-preset', 'fast'] + NO_CLEAN,
    'samix_p': SAMIX + ['--samix-pretrained', RANDOM_R18],
    # the shipped cluttered-MNIST Mixer (its extractor sees the batch resized to 32 px), as in bench/accuracy.py
    'samix_p_shipped': SAMIX + ['--samix-pretrained', 'samix_r18_cluttered_mnist'],
    'samix_p_self': SAMIX + ['--samix-pretrained', RANDOM_SELF],
}


def _pinned_scale(preset: str) -> List[str]:
    """A preset's reduced Mixer resolution as an explicit flag, so that its row times that step or says the model
    cannot run it (train.py runs a fixed-patch-grid model's default preset at full resolution instead)."""
    scale = SAMIX_PRESETS[preset].mixer_scale
    return ['--samix-mixer-scale', f'{scale:g}'] if scale < 1 else []


METHODS.update({f'samix_{p}': SAMIX + ['--samix-preset', p, *_pinned_scale(p)]
                + (AUTHORS_MIXER if p != REFERENCE_PRESET else []) for p in SAMIX_PRESETS})  # clean term (§5.6) on
# the same presets with the default (stable) Mixer: what bench/mixer_grey.py's preset rule weighs
METHODS.update({f'samix_{p}_stable': SAMIX + ['--samix-preset', p, *_pinned_scale(p)] for p in SAMIX_PRESETS})
METHODS.update({
    # the default Mixer with the paper step once it is frozen (it trains on the first step only): masks from θ̄
    'samix_paper_frozen': SAMIX + ['--samix-preset', 'paper', '--samix-mixer-until', '1e-4'],
    'samix_paper_noclean': METHODS['samix_paper'] + NO_CLEAN,
    'samix_lowres_stable_noclean': METHODS['samix_lowres_stable'] + NO_CLEAN,  # the default step, no clean term
    'samix_paper_joint': METHODS['samix_paper'] + ['--samix-clean-forward', 'joint'],
    # economies beside the presets (lowres, lean, quarter): the clean term alone on a quarter of the batch
    # (separate forward), and lean with the Mixer every 4th step
    'samix_every2_clean0.25': METHODS['samix_every2'] + ['--samix-clean-frac', '0.25'],
    'samix_every4_scale0.5_clean0.25': METHODS['samix_lean'] + ['--samix-mixer-every', '4'],
    # the fair control of the clean term: timm Mixup plus the same clean forward (§5.6)
    'mixup_clean': MIXUP + ['--samix-clean-weight', '1', '--samix-clean-forward', 'separate'],
    # the same control with the clean term on a quarter of the clean batch (separate / joint forward)
    'mixup_clean0.25': MIXUP + ['--samix-clean-weight', '1', '--samix-clean-forward', 'separate',
                                '--samix-clean-frac', '0.25'],
    'mixup_clean0.25_joint': MIXUP + ['--samix-clean-weight', '1', '--samix-clean-forward', 'joint',
                                      '--samix-clean-frac', '0.25'],
})
# methods a plain `--methods` default leaves out: the shipped Mixer is only meaningful for the embedded benchmark,
# and samix_p_self builds its extractor like a CNN's (no img_size for a ViT)
OPTIONAL_METHODS = ('samix_p_shipped', 'samix_p_self')
# --flops: the baselines, the clean term's control, the default SAMix (and with --samix-mixer-scale 1, what a ViT
# with a fixed patch grid runs instead), the authors' step and SAMix^P
FLOP_METHODS = ('none', 'mixup', 'cutmix', 'mixup_clean', 'samix', 'samix_every2_stable', 'samix_reference', 'samix_p')


def shown_flags(method: str) -> List[str]:
    """The train.py flags of `method`, optionally `@cl` (--channels-last), as the reports show them."""
    name, channels_last = split_method(method)
    return METHODS[name] + (['--channels-last'] if channels_last else [])


def method_flags(method: str, model_name: str, img_size: int, folder: Path) -> List[str]:
    """The train.py flags of `method`; a SAMix^P artifact they name is written to `folder` first."""
    artifacts = {RANDOM_R18: 'resnet18', RANDOM_SELF: model_name}
    flags = []
    for flag in shown_flags(method):
        if flag in artifacts:
            path = folder / f'{artifacts[flag]}_{img_size}px_untrained.pth'
            torch.save(random_artifact(artifacts[flag], img_size), path)
            flag = str(path)
        flags.append(flag)
    return flags


class Runner:
    """train.py's training step of one method, ready to run on a batch already in memory.

    The model, the mixing, the task, its optimizer and the loop's `StepContext` are built from the method's train.py
    flags as `samix_timm.engine.train.train` builds them (`reproduce.cost.measure_cost` does the same for a config);
    `run(n)` is `train_one_epoch` over n copies of the batch.

    Args:
        model_name: timm model name (a transformer gets `--model-kwargs img_size=...`).
        method: a `METHODS` name, optionally with `@cl`.
        img_size: input resolution.
        batch_size: images per step.
        device: where the step runs.
        seed: seeds the model, the mixing's draws and the random batch.
        num_classes: classes of the classifier.
        extra: more train.py flags (AMP, --torchcompile, ...).
        batch: (images, labels) to train on (default: N(0, 1) images and random labels, as normalised data).
        steps_per_epoch: the run's length for SAMix's schedules (`--epochs 1` of this many steps).
    """

    def __init__(self, model_name: str, method: str, img_size: int, batch_size: int, device: torch.device,
                 seed: int = 0, num_classes: int = NUM_CLASSES, extra: Sequence[str] = (),
                 batch: Optional[Tuple[torch.Tensor, torch.Tensor]] = None, steps_per_epoch: int = TOTAL_STEPS):
        argv = ['--model', model_name, '--num-classes', str(num_classes), '--img-size', str(img_size),
                '--batch-size', str(batch_size), '--device', str(device), '--epochs', '1', '--seed', str(seed),
                *(['--model-kwargs', f'img_size={img_size}'] if is_transformer(model_name) else []), *extra]
        with tempfile.TemporaryDirectory() as folder:
            self.argv = argv + method_flags(method, model_name, img_size, Path(folder))
            args, _ = parse_train_args(self.argv)
            self.device = resolve_device(args)
            random_seed(args.seed, 0)
            amp_autocast, loss_scaler = create_amp(args, self.device)
            model = build_model(args, args.num_classes).to(self.device)
            if args.channels_last:
                model.to(memory_format=torch.channels_last)
            resolve_lr(args)
            data_config = resolve_data_config(vars(args), model=model)
            mixup_fn, clean, loss_fn = create_mixing(args, model, data_config, steps_per_epoch, None, amp_autocast,
                                                     loss_scaler, self.device)
        self.task = build_task(args, model, loss_fn, mixup_fn, clean, self.device)
        self.optimizer = create_task_optimizer(args, self.task)
        self.ctx = StepContext(device=self.device, amp_autocast=amp_autocast, loss_scaler=loss_scaler,
                               channels_last=args.channels_last, clip_grad=args.clip_grad, clip_mode=args.clip_mode,
                               log_interval=args.log_interval, is_primary=False)
        if batch is None:
            g = torch.Generator().manual_seed(seed)
            batch = (torch.randn(batch_size, 3, img_size, img_size, generator=g),
                     torch.randint(0, num_classes, (batch_size,), generator=g))
        # a copy: timm Mixup mixes its input in place
        self.x, self.y = batch[0].to(self.device, copy=True), batch[1].to(self.device)
        if args.channels_last:  # the batch as the classifier takes it
            self.x = self.x.contiguous(memory_format=torch.channels_last)

    @property
    def mix(self):
        """The task's mixer (timm Mixup, SAMix^P), its SAMix (online SAMix's task) or None."""
        return getattr(self.task, 'samix', self.task.mixer)

    def run(self, steps: int) -> float:
        """Seconds per step of `train_one_epoch` over `steps` copies of the batch; returns when the device is done."""
        self._sync()
        start = time.perf_counter()
        train_one_epoch(0, self.task, [(self.x, self.y)] * steps, self.optimizer, self.ctx)
        self._sync()
        return (time.perf_counter() - start) / steps

    def step(self) -> float:
        """Seconds of one step."""
        return self.run(1)

    def _sync(self) -> None:
        if self.device.type == 'cuda':
            torch.cuda.synchronize()


def split_method(spec: str) -> Tuple[str, bool]:
    """'name@cl' -> (name, True): the method with model and batch in channels_last; anything else -> (spec, False)."""
    name, _, suffix = spec.partition('@')
    return (name, True) if suffix == 'cl' else (spec, False)


def split_size(spec: str, default: int) -> Tuple[str, int]:
    """'name:size' -> (name, size); 'name' -> (name, default)."""
    name, _, size = spec.partition(':')
    return name, int(size) if size else default


def build_runners(model_name: str, methods: List[str], args, device, **kwargs) -> Tuple[Dict, Dict]:
    """({method: Runner}, {method: {'skipped': why}} for a method the model cannot run)."""
    runners, skipped = {}, {}
    for m in methods:
        try:
            runners[m] = Runner(model_name, m, args.img_size, args.batch_size, device, **kwargs)
        except ConfigError as e:  # e.g. --samix-mixer-scale on a ViT with a fixed patch grid
            skipped[m] = dict(skipped=str(e))
    return runners, skipped


def time_methods(model_name: str, methods: List[str], args, device) -> Dict[str, Dict]:
    """{method: median step time and spread}, or {method: {'skipped': why}} for a method the model cannot run."""
    runners, skipped = build_runners(model_name, methods, args, device)
    for r in runners.values():
        if args.warmup:
            r.run(args.warmup)
    times = {m: [] for m in runners}
    for _ in range(args.reps):
        for m, r in runners.items():  # one sample = the mean of a window of steps (a --samix-mixer-every cycle)
            times[m].append(r.run(args.window))
    out = {}
    for m, t in times.items():
        q1, med, q3 = np.percentile(t, [25, 50, 75])
        out[m] = dict(median_s=float(med), iqr_s=float(q3 - q1), steps=len(t))
    return {m: out.get(m) or skipped[m] for m in methods}


def count_flops(model_name: str, methods: List[str], args, device) -> Dict[str, Dict]:
    """{method: GFLOPs per image of one step (the mean over `args.window` steps)}, or {'skipped': why}."""
    out = {}
    for m in methods:  # one at a time: at 224 px a SAMix step holds several models' activations
        runners, skipped = build_runners(model_name, [m], args, device, num_classes=args.num_classes)
        if m in skipped:
            out[m] = skipped[m]
            continue
        with FlopCounterMode(display=False) as counter:
            runners[m].run(args.window)
        out[m] = dict(gflops_per_image=counter.get_total_flops() / (args.window * args.batch_size) / 1e9,
                      steps=args.window)
    return out


def peak_memory(model_name: str, method: str, args) -> float:
    """Peak memory (MB) of a few steps of one method, in a fresh process."""
    cmd = [sys.executable, __file__, '--single', method, '--models', model_name, '--img-size', str(args.img_size),
           '--batch-size', str(args.batch_size), '--device', args.device]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return float(proc.stdout.strip().splitlines()[-1])


def _rss_mb() -> float:
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2 ** 20


def _single(args, device) -> None:
    """Peak memory of model + optimizer + mixer state + activations over a few steps, in MB."""
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats()
    base = _rss_mb()  # interpreter and libraries, before anything of the run exists
    peak, done = [base], threading.Event()

    def _sample():  # ru_maxrss would also count the import-time peak: sample RSS instead
        while not done.is_set():
            peak[0] = max(peak[0], _rss_mb())
            time.sleep(0.002)

    sampler = threading.Thread(target=_sample, daemon=True)
    sampler.start()
    Runner(args.models[0], args.single, args.img_size, args.batch_size, device).run(3)
    done.set()
    sampler.join()
    print(torch.cuda.max_memory_allocated() / 2 ** 20 if device.type == 'cuda' else peak[0] - base)


def breakdown(model_name: str, args, device) -> Dict[str, float]:
    """Mean milliseconds per step of each `samix/*` region of the default online SAMix step (torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile
    r = Runner(model_name, 'samix', args.img_size, args.batch_size, device)
    if args.warmup:
        r.run(args.warmup)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == 'cuda' else [])
    n = max(3, args.reps // 2)
    with profile(activities=activities) as prof:
        total = r.run(n) * n
    regions = {e.key: e.cpu_time_total / 1000 / n for e in prof.key_averages() if e.key.startswith('samix/')}
    regions['step total'] = total * 1000 / n
    return regions


def _flags_legend(methods: List[str]) -> List[str]:
    """The train.py flags of each method, as markdown lines."""
    return ['train.py flags of each method (beside --model, --img-size, --batch-size, --num-classes):', ''] + [
        f"- {m}: `{' '.join(shown_flags(m)) or '(none)'}`" for m in methods]


def markdown(results: Dict, machine: str) -> str:
    lines = [f'Machine: {machine}', f'Command: `{results["command"]}`'
             + ('' if results.get('done', True) else ' (still running, or cut short: the models timed so far)'),
             f'Step time = median over {results["reps"]} interleaved samples, each the mean of '
             f'{results.get("window", 1)} steps of train.py\'s step (`train_one_epoch` of the task the flags build).',
             '']
    for model_name, res in results['models'].items():
        lines += [f'### {model_name} ({res["img_size"]} px, batch {results["batch_size"]})', '',
                  '| method | median step (s) | IQR (s) | × timm Mixup | peak memory (MB) | × timm Mixup |',
                  '|---|---|---|---|---|---|']
        base_t = res['time']['mixup']['median_s']
        base_m = res.get('memory', {}).get('mixup')
        for m, t in res['time'].items():
            if 'skipped' in t:
                lines.append(f'| {m} | n/a: {t["skipped"]} | | | | |')
                continue
            mem = res.get('memory', {}).get(m)
            mem_txt = f'{mem:.0f} | {mem / base_m:.2f}' if mem and base_m else '– | –'
            lines.append(f'| {m} | {t["median_s"]:.3f} | {t["iqr_s"]:.3f} | {t["median_s"] / base_t:.2f} | {mem_txt} |')
        if 'breakdown' in res:
            lines += ['', 'Online SAMix step, where the time goes (ms per step, torch.profiler):', '',
                      '| region | ms |', '|---|---|']
            lines += [f'| {k} | {v:.1f} |' for k, v in res['breakdown'].items()]
        lines.append('')
    if results.get('methods'):
        lines += _flags_legend(results['methods']) + ['']
    return '\n'.join(lines)


def flops_markdown(results: Dict, machine: str) -> str:
    """One table: a row per method, a column per model, GFLOPs per image per step and the ratio to timm Mixup."""
    models = results['models']
    lines = [f'Machine: {machine}', f'Command: `{results["command"]}`'
             + ('' if results.get('done', True) else ' (still running, or cut short: the models counted so far)'),
             f'FLOPs of train.py\'s step (`train_one_epoch` of the task the flags build: mix, forward, loss, the '
             f'Mixer\'s own update, backward, optimizer step), counted by `torch.utils.flop_counter.FlopCounterMode` '
             f'over {results["window"]} steps (a whole `--samix-mixer-every 2` cycle) at batch '
             f'{results["batch_size"]}, {results["num_classes"]} classes, fp32; GFLOPs per image per step (× timm '
             f'Mixup). Counted: matrix products, convolutions and attention, forward and backward; not counted: '
             f'element-wise work, normalisation, resizing, the optimizers.', '']
    if models:
        lines += ['| method | ' + ' | '.join(f'{m} ({r["img_size"]} px)' for m, r in models.items()) + ' |',
                  '|---|' + '---|' * len(models)]
        for method in results['methods']:
            cells = []
            for res in models.values():
                f, base = res['flops'].get(method), res['flops'].get('mixup', {}).get('gflops_per_image')
                cells.append('' if f is None else 'n/a (see below)' if 'skipped' in f else
                             f'{f["gflops_per_image"]:.2f} ({f["gflops_per_image"] / base:.2f}×)')
            lines.append(f'| {method} | ' + ' | '.join(cells) + ' |')
        lines.append('')
    skipped = [(m, method, f['skipped']) for m, res in models.items() for method, f in res['flops'].items()
               if 'skipped' in f]
    if skipped:
        lines += ['Not run (train.py refuses these flags for the model):', '']
        lines += [f'- {method} on {m}: {why}' for m, method, why in skipped] + ['']
    if any(split_method(m)[0] == 'samix_p' for m in results['methods']):
        lines += ['samix_p: no pre-trained Mixer for 224 px is published (`samix_r18_in1k` is registered, its weights '
                  'are not); the row counts a SAMix^P step with a resnet18 extractor at the model\'s resolution and '
                  'an untrained Mixer, the same operations as a trained one.', '']
    return '\n'.join(lines + _flags_legend(results['methods']) + [''])


def write(results: Dict, machine: str, out: Path, render=markdown) -> None:
    out.with_suffix('.json').write_text(json.dumps(results, indent=2))
    out.with_suffix('.md').write_text(render(results, machine))


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--models', nargs='+', default=None,
                   help='NAME or NAME:SIZE (default: resnet18 resnet50 deit_small_patch16_224:112; with --flops the '
                        'IN-1k models of configs/in1k at 224 px)')
    p.add_argument('--methods', nargs='+', default=None,
                   help=f'default: every method but {", ".join(OPTIONAL_METHODS)}; with --flops '
                        f'{" ".join(FLOP_METHODS)}')
    p.add_argument('--img-size', type=int, default=64)
    p.add_argument('--batch-size', type=int, default=None, help='default 32; 2 with --flops')
    p.add_argument('--reps', type=int, default=7, help='interleaved timed steps per method')
    p.add_argument('--warmup', type=int, default=2)
    p.add_argument('--window', type=int, default=2,
                   help='steps per timed sample (with --flops: steps counted); a multiple of every --samix-mixer-every '
                        'timed, so each sample holds whole cycles')
    p.add_argument('--device', default=None, help='default cuda when available, else cpu; cpu with --flops')
    p.add_argument('--no-memory', action='store_true', help='skip the per-method memory subprocesses')
    p.add_argument('--breakdown', action='store_true', help='profile the online SAMix step')
    p.add_argument('--flops', action='store_true',
                   help=f'count the FLOPs of one step instead of timing it ({IN1K_CLASSES} classes)')
    p.add_argument('--out', default=None, help='writes <out>.json and <out>.md (new files; default '
                                               'bench/results/speed, with --flops bench/results/flops_in1k)')
    p.add_argument('--overwrite', action='store_true', help='replace an existing <out>.json/.md (re-timing it)')
    p.add_argument('--single', default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    flops = args.flops
    args.models = args.models or list(IN1K_MODELS if flops else ('resnet18', 'resnet50', 'deit_small_patch16_224:112'))
    args.methods = args.methods or (list(FLOP_METHODS) if flops else [m for m in METHODS if m not in OPTIONAL_METHODS])
    args.batch_size = args.batch_size or (2 if flops else 32)
    args.device = args.device or ('cuda' if torch.cuda.is_available() and not flops else 'cpu')
    args.out = args.out or ('bench/results/flops_in1k' if flops else 'bench/results/speed')
    args.num_classes = IN1K_CLASSES if flops else NUM_CLASSES
    unknown = {m for m in args.methods if split_method(m)[0] not in METHODS}
    if unknown or 'mixup' not in args.methods:
        p.error(f'methods must include mixup (the reference) and come from {", ".join(METHODS)} '
                f'(each optionally with @cl)')
    device = torch.device(args.device)
    if args.single:
        _single(args, device)
        return 0
    machine = (f'{platform.processor() or platform.machine()}, {os.cpu_count()} CPU threads '
               f'({torch.get_num_threads()} used), torch {torch.__version__}, timm {timm.__version__}, {args.device}'
               + (f' ({torch.cuda.get_device_name()})' if device.type == 'cuda' else ''))
    results = dict(machine=machine, img_size=args.img_size, batch_size=args.batch_size, window=args.window,
                   done=False, command=' '.join(['python', sys.argv[0] if argv is None else 'bench/speed.py']
                                                + (sys.argv[1:] if argv is None else argv)),
                   methods=args.methods, flags={m: shown_flags(m) for m in args.methods}, models={})
    if flops:
        results.update(num_classes=args.num_classes)
    else:
        results.update(reps=args.reps)
    render = flops_markdown if flops else markdown
    try:  # before the first step: nothing this run did not make is replaced
        out = claim_results(args.out, args.overwrite, {'.json': json.dumps(results, indent=2),
                                                       '.md': render(results, machine)})
    except OutError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    for spec in args.models:
        model_name, size = split_size(spec, results['img_size'])
        args.img_size = size
        if flops:
            res = dict(img_size=size, flops=count_flops(model_name, args.methods, args, device))
        else:
            res = dict(img_size=size, time=time_methods(model_name, args.methods, args, device))
            if not args.no_memory:
                res['memory'] = {m: peak_memory(model_name, m, args) for m in args.methods
                                 if 'skipped' not in res['time'][m]}
            if args.breakdown:
                res['breakdown'] = breakdown(model_name, args, device)
        results['models'][model_name] = res
        print(render(dict(results, models={model_name: res}, done=True), machine), flush=True)
        write(results, machine, out, render)  # after every model: a run cut short keeps what it did
    results['done'] = True
    write(results, machine, out, render)
    return 0


if __name__ == '__main__':
    sys.exit(main())
