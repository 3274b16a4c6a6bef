#!/usr/bin/env python3
""" Cost of a training step with each mixing method, measured side by side in one run.

A step = mix + forward + backward + optimizer step on a batch already in memory. Methods are
interleaved (a window of steps of each, repeated) after a warm-up, so drifts of the machine hit all
of them alike; a sample is the mean step time over its window (2 steps: a whole cycle of
`mixer_every=2`), and the table reports the median sample, its spread (interquartile range) and
the ratio to timm Mixup from the same run. Peak memory is measured per method in a fresh
subprocess (RSS on CPU, max allocated on CUDA). `--breakdown` profiles the online SAMix step.

    python bench/speed.py --models resnet18 resnet50 deit_small_patch16_224:112 --img-size 64 --batch-size 32 --breakdown

A model may carry its own resolution as NAME:SIZE (e.g. a ViT at 112 px, where 64 px would leave
a 4x4 token map); the others use --img-size. A method may carry `@cl` (e.g. `mixup@cl samix_every2@cl`):
model and batch in channels_last, as train.py's --channels-last.

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
import threading
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import timm
import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, Mixup
from timm.loss import SoftTargetCrossEntropy

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from samix_timm import SAMix, SAMixPretrained, StepPreset  # noqa: E402
from samix_timm.clean import CleanBatch, CleanTerm, forward_batch  # noqa: E402
from samix_timm.defaults import SAMIX_PRESETS, is_transformer, samix_defaults  # noqa: E402
from samix_timm.errors import ConfigError  # noqa: E402
from samix_timm.features import FeatureTap  # noqa: E402
from samix_timm.hub import create_pretrained_mixer  # noqa: E402
from samix_timm.mixer import Mixer  # noqa: E402

NUM_CLASSES = 100
# the benchmark's batches are N(0, 1): normalised, as with any mean/std
BATCH_NORMALIZATION = dict(mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD)


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


# method name -> builder(model, img_size, total_steps) -> callable(x, y) or None (no mixing)
METHODS: Dict[str, Callable] = {
    'none': lambda model, size, steps: None,
    'mixup': lambda model, size, steps: Mixup(mixup_alpha=1.0, num_classes=NUM_CLASSES),
    'cutmix': lambda model, size, steps: Mixup(cutmix_alpha=1.0, num_classes=NUM_CLASSES),
    'samix': lambda model, size, steps: SAMix(model, NUM_CLASSES, steps, input_size=(3, size, size)),
    'samix_frac0.5': lambda model, size, steps: SAMix(
        model, NUM_CLASSES, steps, input_size=(3, size, size), preset=StepPreset(mixer_batch_frac=0.5)),
    'samix_every2': lambda model, size, steps: SAMix(
        model, NUM_CLASSES, steps, input_size=(3, size, size), preset=StepPreset(mixer_every=2)),
    'samix_every2_frac0.5': lambda model, size, steps: SAMix(
        model, NUM_CLASSES, steps, input_size=(3, size, size),
        preset=StepPreset(mixer_every=2, mixer_batch_frac=0.5)),
    'samix_p': lambda model, size, steps: SAMixPretrained(random_artifact('resnet18', size), NUM_CLASSES,
                                                          data_config=BATCH_NORMALIZATION),
    # the shipped cluttered-MNIST Mixer (its extractor sees the batch resized to 32 px), as in bench/accuracy.py
    'samix_p_shipped': lambda model, size, steps: create_pretrained_mixer(
        'samix_r18_cluttered_mnist', NUM_CLASSES, data_config=BATCH_NORMALIZATION),
    # a Mixer exported from an online run of the classifier's own architecture (its θ̄ is the extractor)
    'samix_p_self': lambda model, size, steps: SAMixPretrained(
        random_artifact(model.pretrained_cfg['architecture'], size), NUM_CLASSES, data_config=BATCH_NORMALIZATION),
}


# the rows in bench/results were timed with the authors' Mixer; `samix_paper_stable` times the default Mixer (§2.6)
AUTHORS_MIXER = dict(mixer_init='reference', mixer_norm='none', mask_area='free', mask_loss='batch', mask_sharpness=0)


def _preset(name: str, **explicit) -> Callable:
    """Online SAMix as train.py builds it for `--samix-preset name` (clean term included), the authors' Mixer
    unless `explicit` says otherwise."""
    explicit = {**AUTHORS_MIXER, **explicit}
    return lambda model, size, steps: SAMix(model, NUM_CLASSES, steps, input_size=(3, size, size), **samix_defaults(
        model.pretrained_cfg.get('architecture', ''), steps, preset=name, **explicit))


STABLE_MIXER = dict(mixer_init=None, mixer_norm=None, mask_area=None, mask_loss=None, mask_sharpness=None)
METHODS.update({f'samix_{p}': _preset(p) for p in SAMIX_PRESETS})  # the presets, clean-batch term (§5.6) on
# the same presets with the default (stable) Mixer: what bench/mixer_grey.py's preset rule weighs
METHODS.update({f'samix_{p}_stable': _preset(p, **STABLE_MIXER) for p in SAMIX_PRESETS})
# the default step once the Mixer is frozen (`mixer_until`: it trains on the first call only): masks from θ̄
METHODS['samix_paper_frozen'] = _preset('paper', **STABLE_MIXER, mixer_until=1e-4)
METHODS.update({
    'samix_paper_noclean': _preset('paper', clean_weight=0.0),
    'samix_lowres_stable_noclean': _preset('lowres', clean_weight=0.0, **STABLE_MIXER),  # the default step, no clean term
    'samix_paper_joint': _preset('paper', clean_forward='joint'),
    # economies beside the presets (lowres, lean, quarter): the clean term alone on a quarter of the batch
    # (separate forward), and lean with the Mixer every 4th step
    'samix_every2_clean0.25': _preset('every2', clean_frac=0.25),
    'samix_every4_scale0.5_clean0.25': _preset('lean', mixer_every=4),
    # the fair control of the clean term: timm Mixup plus the same clean forward (§5.6)
    'mixup_clean': lambda model, size, steps: CleanBatch(Mixup(mixup_alpha=1.0, num_classes=NUM_CLASSES),
                                                         CleanTerm(1.0, NUM_CLASSES, forward='separate')),
    # the same control with the clean term on a quarter of the clean batch (separate / joint forward)
    'mixup_clean0.25': lambda model, size, steps: CleanBatch(Mixup(mixup_alpha=1.0, num_classes=NUM_CLASSES),
                                                             CleanTerm(1.0, NUM_CLASSES, forward='separate', frac=0.25)),
    'mixup_clean0.25_joint': lambda model, size, steps: CleanBatch(Mixup(mixup_alpha=1.0, num_classes=NUM_CLASSES),
                                                                   CleanTerm(1.0, NUM_CLASSES, frac=0.25)),
})
# methods a plain `--methods` default leaves out: the shipped Mixer is only meaningful for the embedded benchmark,
# and samix_p_self builds its extractor like a CNN's (no img_size for a ViT)
OPTIONAL_METHODS = ('samix_p_shipped', 'samix_p_self')


class Runner:
    """One model + optimizer + mixer, able to do one timed training step."""

    def __init__(self, model_name: str, method: str, img_size: int, batch_size: int, device: torch.device, seed=0):
        torch.manual_seed(seed)
        method, channels_last = split_method(method)
        kwargs = dict(img_size=img_size) if is_transformer(model_name) else {}
        self.model = timm.create_model(model_name, num_classes=NUM_CLASSES, **kwargs).to(device)
        if channels_last:  # as train.py --channels-last: model and batches; SAMix's θ̄ copy follows the model
            self.model.to(memory_format=torch.channels_last)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.01, momentum=0.9)
        self.mix = METHODS[method](self.model, img_size, 10_000)
        self.loss_fn = self.mix.loss(SoftTargetCrossEntropy()) if hasattr(self.mix, 'loss') else SoftTargetCrossEntropy()
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(batch_size, 3, img_size, img_size, generator=g).to(device)
        if channels_last:
            self.x = self.x.contiguous(memory_format=torch.channels_last)
        self.y = torch.randint(0, NUM_CLASSES, (batch_size,), generator=g).to(device)
        self.device = device

    def step(self) -> float:
        start = time.perf_counter()
        if self.mix is None:
            x, t = self.x, torch.nn.functional.one_hot(self.y, NUM_CLASSES).float()
        else:
            x, t = self.mix(self.x, self.y)
        loss = self.loss_fn(forward_batch(self.model, x, self.mix), t)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        if self.device.type == 'cuda':
            torch.cuda.synchronize()
        return time.perf_counter() - start


def split_method(spec: str) -> Tuple[str, bool]:
    """'name@cl' -> (name, True): the method with model and batch in channels_last; anything else -> (spec, False)."""
    name, _, suffix = spec.partition('@')
    return (name, True) if suffix == 'cl' else (spec, False)


def split_size(spec: str, default: int) -> Tuple[str, int]:
    """'name:size' -> (name, size); 'name' -> (name, default)."""
    name, _, size = spec.partition(':')
    return name, int(size) if size else default


def time_methods(model_name: str, methods: List[str], args, device) -> Dict[str, Dict]:
    """{method: median step time and spread}, or {method: {'skipped': why}} for a method the model cannot run."""
    runners, skipped = {}, {}
    for m in methods:
        try:
            runners[m] = Runner(model_name, m, args.img_size, args.batch_size, device)
        except ConfigError as e:  # e.g. --samix-mixer-scale on a ViT with a fixed patch grid
            skipped[m] = dict(skipped=str(e))
    for r in runners.values():
        for _ in range(args.warmup):
            r.step()
    times = {m: [] for m in runners}
    for _ in range(args.reps):
        for m, r in runners.items():  # one sample = the mean of a window of steps (a --samix-mixer-every cycle)
            times[m].append(sum(r.step() for _ in range(args.window)) / args.window)
    out = {}
    for m, t in times.items():
        q1, med, q3 = np.percentile(t, [25, 50, 75])
        out[m] = dict(median_s=float(med), iqr_s=float(q3 - q1), steps=len(t))
    return {m: out.get(m) or skipped[m] for m in methods}


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
    r = Runner(args.models[0], args.single, args.img_size, args.batch_size, device)
    for _ in range(3):
        r.step()
    done.set()
    sampler.join()
    print(torch.cuda.max_memory_allocated() / 2 ** 20 if device.type == 'cuda' else peak[0] - base)


def breakdown(model_name: str, args, device) -> Dict[str, float]:
    """Mean milliseconds per step of each `samix/*` region of the online SAMix step (torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile
    r = Runner(model_name, 'samix', args.img_size, args.batch_size, device)
    for _ in range(args.warmup):
        r.step()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == 'cuda' else [])
    n = max(3, args.reps // 2)
    total = 0.0
    with profile(activities=activities) as prof:
        for _ in range(n):
            total += r.step()
    regions = {e.key: e.cpu_time_total / 1000 / n for e in prof.key_averages() if e.key.startswith('samix/')}
    regions['step total'] = total * 1000 / n
    return regions


def markdown(results: Dict, machine: str) -> str:
    lines = [f'Machine: {machine}', f'Command: `{results["command"]}`'
             + ('' if results.get('done', True) else ' (still running, or cut short: the models timed so far)'),
             f'Step time = median over {results["reps"]} interleaved samples, each the mean of {results.get("window", 1)} steps.', '']
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
    return '\n'.join(lines)


def write(results: Dict, machine: str, out: Path) -> None:
    out.with_suffix('.json').write_text(json.dumps(results, indent=2))
    out.with_suffix('.md').write_text(markdown(results, machine))


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--models', nargs='+', default=['resnet18', 'resnet50', 'deit_small_patch16_224:112'])
    p.add_argument('--methods', nargs='+', default=[m for m in METHODS if m not in OPTIONAL_METHODS])
    p.add_argument('--img-size', type=int, default=64)
    p.add_argument('--batch-size', type=int, default=32)
    p.add_argument('--reps', type=int, default=7, help='interleaved timed steps per method')
    p.add_argument('--warmup', type=int, default=2)
    p.add_argument('--window', type=int, default=2,
                   help='steps per timed sample; a multiple of every --samix-mixer-every timed, so each sample holds whole cycles')
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--no-memory', action='store_true', help='skip the per-method memory subprocesses')
    p.add_argument('--breakdown', action='store_true', help='profile the online SAMix step')
    p.add_argument('--out', default='bench/results/speed', help='writes <out>.json and <out>.md (new files)')
    p.add_argument('--overwrite', action='store_true', help='replace an existing <out>.json/.md (re-timing it)')
    p.add_argument('--single', default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    unknown = {m for m in args.methods if split_method(m)[0] not in METHODS}
    if unknown or 'mixup' not in args.methods:
        p.error(f'methods must include mixup (the reference) and come from {", ".join(METHODS)} '
                f'(each optionally with @cl)')
    device = torch.device(args.device)
    if args.single:
        _single(args, device)
        return 0
    machine = (f'{platform.processor() or platform.machine()}, {os.cpu_count()} CPU threads, torch '
               f'{torch.__version__}, {args.device}' + (f' ({torch.cuda.get_device_name()})' if device.type == 'cuda' else ''))
    results = dict(machine=machine, img_size=args.img_size, batch_size=args.batch_size, reps=args.reps, window=args.window,
                   done=False, command=' '.join(['python', sys.argv[0] if argv is None else 'bench/speed.py']
                                    + (sys.argv[1:] if argv is None else argv)), models={})
    try:  # before the first step: nothing this run did not make is replaced
        out = claim_results(args.out, args.overwrite, {'.json': json.dumps(results, indent=2),
                                                       '.md': markdown(results, machine)})
    except OutError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    for spec in args.models:
        model_name, size = split_size(spec, results['img_size'])
        args.img_size = size
        res = dict(img_size=size, time=time_methods(model_name, args.methods, args, device))
        if not args.no_memory:
            res['memory'] = {m: peak_memory(model_name, m, args) for m in args.methods if 'skipped' not in res['time'][m]}
        if args.breakdown:
            res['breakdown'] = breakdown(model_name, args, device)
        results['models'][model_name] = res
        print(markdown(dict(results, models={model_name: res}, done=True), machine), flush=True)
        write(results, machine, out)  # after every model: a run cut short keeps what it timed
    results['done'] = True
    write(results, machine, out)
    return 0


if __name__ == '__main__':
    sys.exit(main())
