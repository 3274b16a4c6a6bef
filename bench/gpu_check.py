#!/usr/bin/env python3
""" One-command GPU check of the AMP path (issues 14, 33): online SAMix and SAMix^P against timm Mixup, in a budget.

    python bench/gpu_check.py                       # one CUDA GPU, 240 s; writes bench/results/gpu_check.{json,md}
    python bench/gpu_check.py --smoke --out /tmp/x  # the CPU path the tests run (test_resnet, 32 px, 2 steps)

For each model (resnet50 channels_last, deit_small at 224 px), AMP dtype (float16 with GradScalers, bfloat16)
and mode (eager, or compiled as by train.py's --torchcompile: the classifier, θ̄'s passes and the Mixer), every
method trains on one fixed batch of the embedded dataset (built when missing) with train.py's step (bench/speed.py
`Runner`: the task built from the method's train.py flags, run by `train_one_epoch`): timm Mixup, SAMix
`--samix-preset paper`, SAMix with the default preset, SAMix^P (a frozen resnet18 extractor + Mixer). The most
important checks run first, and the results files are rewritten after every one, so a run cut short keeps what it
did (they are created at the start: an existing report, say a finished one, is refused unless `--overwrite`, so a
second run never replaces it with less):
  1. a few finite steps of every path, eager (every loss and every Mixer weight finite);
  2. one injected float16 overflow of θ̄'s features per model, which must take the fp32 fallback (§2);
  3. the same finite steps, compiled;
  4. timings: step time and peak memory of each method as ratios to timm Mixup from the same configuration.
Before each check the budget (`--budget-s`, the device time one lent GPU leaves after start-up) is looked at;
a timing loop stops at the deadline with the steps it timed. What the budget left out is listed as skipped; a run
whose budget ends before its first check exits 1 (it checked nothing).
"""
import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path
from typing import Dict, List, Tuple

import timm
import torch
from timm.data import create_dataset, create_loader, resolve_data_config

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / 'bench'))
from samix_timm import SAMix  # noqa: E402
from samix_timm.data import build_cluttered_mnist  # noqa: E402
from samix_timm.defaults import DEFAULT_PRESET, is_transformer  # noqa: E402
from samix_timm.errors import TrainingDivergedError  # noqa: E402
from speed import OutError, Runner, claim_results  # noqa: E402

NUM_CLASSES = 10
METHODS = tuple(dict.fromkeys(('mixup', 'samix_paper', f'samix_{DEFAULT_PRESET}', 'samix_p')))  # once when the default is paper
# each method as bench/speed.py names its train.py flags: the SAMix presets with the default Mixer
SPEED_METHOD = {m: m if m in ('mixup', 'samix_p') else f'{m}_stable' for m in METHODS}
GROUPS = {'finite': 'finite', 'overflow': 'overflow', 'timing': 'timings'}  # check kind -> its part of the report


def fixed_batch(data_dir: Path, model: torch.nn.Module, img_size: int, batch_size: int, device) -> tuple:
    """One normalised batch of the embedded dataset at `img_size`, and the data config it was made with."""
    if not (data_dir / 'train').is_dir():
        build_cluttered_mnist(data_dir)
    config = resolve_data_config({'img_size': img_size}, model=model)
    loader = create_loader(create_dataset('', root=str(data_dir), split='train', is_training=True),
                           batch_size=batch_size, is_training=True, use_prefetcher=False, no_aug=True, num_workers=0,
                           **{k: config[k] for k in ('input_size', 'mean', 'std', 'crop_pct', 'interpolation')})
    x, y = next(iter(loader))
    return x.to(device), y.to(device), config


class Run:
    """train.py's step (bench/speed.py `Runner`: the task built from the method's flags, run by `train_one_epoch`)
    under one AMP dtype and mode (`--torchcompile`: the classifier, θ̄'s passes and the Mixer compiled, as train.py
    compiles them), on one fixed batch."""

    def __init__(self, model_name: str, method: str, dtype: torch.dtype, compiled: bool, batch, device, steps: int):
        x, y, _ = batch
        flags = ['--amp', '--amp-dtype', str(dtype).split('.')[-1]]
        flags += [] if is_transformer(model_name) else ['--channels-last']
        flags += ['--torchcompile', 'inductor'] if compiled else []
        self.runner = Runner(model_name, SPEED_METHOD[method], x.shape[-1], x.shape[0], device,
                             num_classes=NUM_CLASSES, extra=flags, batch=(x, y), steps_per_epoch=steps)
        self.mix = self.runner.mix
        self.diverged = False

    def step(self) -> float:
        """Seconds of one step; a step whose loss is not finite (train.py stops there) counts as not finite."""
        try:
            return self.runner.step()
        except TrainingDivergedError:
            self.diverged = True
            return float('nan')

    def finite(self) -> bool:
        """Every loss so far, and the Mixer's weights (online SAMix), are finite."""
        ok = not self.diverged
        if isinstance(self.mix, SAMix):
            ok &= all(bool(torch.isfinite(p).all()) for p in self.mix.mixer.parameters())
        return ok


def _batch(model_name: str, args, device) -> tuple:
    probe = timm.create_model(model_name, num_classes=NUM_CLASSES,
                              **(dict(img_size=args.img_size) if is_transformer(model_name) else {}))
    return fixed_batch(Path(args.data_dir), probe, args.img_size, args.batch_size, device)


def finite_steps(model_name: str, dtype: torch.dtype, compiled: bool, args, device) -> Dict[str, Dict]:
    """`--check-steps` steps of every method: are the losses and the Mixer's weights finite?"""
    batch, out = _batch(model_name, args, device), {}
    for method in METHODS:
        run = Run(model_name, method, dtype, compiled, batch, device, args.check_steps)
        for _ in range(args.check_steps):
            run.step()
        out[method] = dict(finite=run.finite(), steps=args.check_steps)
        del run
        if device.type == 'cuda':
            torch.cuda.empty_cache()
    return out


def measure(model_name: str, dtype: torch.dtype, compiled: bool, args, device, deadline: float) -> Dict[str, Dict]:
    """Step time (mean over up to `--steps` after a warm-up, fewer when the deadline comes) and peak memory of each
    method, one after another; methods the deadline leaves out are missing."""
    batch, out = _batch(model_name, args, device), {}
    for method in METHODS:  # timm Mixup first: the ratios need it
        if out and time.monotonic() > deadline:
            break
        run = Run(model_name, method, dtype, compiled, batch, device, args.steps)
        for _ in range(args.warmup):
            run.step()
        if device.type == 'cuda':
            torch.cuda.reset_peak_memory_stats()
        times = []  # each step synchronised (`Runner.run`)
        while len(times) < args.steps and (not times or time.monotonic() < deadline):
            times.append(run.step())
        elapsed, steps = sum(times) / len(times), len(times)
        peak = torch.cuda.max_memory_allocated() / 2 ** 20 if device.type == 'cuda' else float('nan')
        out[method] = dict(step_s=elapsed, peak_mb=peak, finite=run.finite(), steps=steps)
        del run
        if device.type == 'cuda':
            torch.cuda.empty_cache()
    for r in out.values():
        r['time_x_mixup'] = r['step_s'] / out['mixup']['step_s']
        r['memory_x_mixup'] = r['peak_mb'] / out['mixup']['peak_mb']
    return out


def overflow_fallback(model_name: str, args, device) -> Dict[str, bool]:
    """One SAMix step whose θ̄ features overflow float16 once: it must switch to fp32 features and stay finite."""
    batch = _batch(model_name, args, device)
    dtype = torch.float16 if device.type == 'cuda' else torch.bfloat16
    run = Run(model_name, 'samix_paper', dtype, False, batch, device, 10)
    tap = run.mix.tap

    def overflowing(x):
        z = tap(x)
        return z if run.mix.fp32_features else torch.full_like(z, float('inf'), dtype=torch.float16)

    run.mix.tap_forward = overflowing
    run.step()
    return dict(fell_back=run.mix.fp32_features, finite=run.finite())


def plan(args) -> List[Tuple[str, str]]:
    """(kind, key) of every check, most important first."""
    configs = [(m, d) for m in args.models for d in args.dtypes]
    items = [('finite', f'{m}|{d}|eager') for m, d in configs if 'eager' in args.modes]
    items += [('overflow', m) for m in args.models]
    items += [('finite', f'{m}|{d}|compiled') for m, d in configs if 'compiled' in args.modes]
    items += [('timing', f'{m}|{d}|{mode}') for m, d in configs for mode in args.modes]
    return items


def run_item(kind: str, key: str, args, device, deadline: float):
    if kind == 'overflow':
        return overflow_fallback(key, args, device)
    model, dtype, mode = key.split('|')
    if kind == 'finite':
        return finite_steps(model, getattr(torch, dtype), mode == 'compiled', args, device)
    return measure(model, getattr(torch, dtype), mode == 'compiled', args, device, deadline)


def markdown(result: Dict) -> str:
    lines = [f"Machine: {result['machine']}", f"Command: `{result['command']}`",
             f"Budget {result['budget_s']:g} s, used {result['elapsed_s']:.0f} s"
             + ('' if result['done'] else ' (still running)'), '',
             'Finite steps of every path (losses and Mixer weights):', '']
    for key, methods in result['finite'].items():
        lines.append(f"- {key.replace('|', ', ')}: " + ', '.join(
            f"{m} {'finite' if r['finite'] else '**NOT finite**'}" for m, r in methods.items()))
    lines += ['', 'Injected float16 overflow of θ̄\'s features: ' + (', '.join(
        f"{m}: {'fp32 fallback taken' if r['fell_back'] else '**no fallback**'}, "
        f"{'finite' if r['finite'] else '**not finite**'}" for m, r in result['overflow'].items()) or 'not run'), '',
        '| model | AMP | mode | method | timed steps | step (ms) | × timm Mixup | peak memory (MB) | × timm Mixup | finite |',
        '|---|---|---|---|---|---|---|---|---|---|']
    for key, methods in result['timings'].items():
        model, dtype, mode = key.split('|')
        for m, r in methods.items():
            lines.append(f"| {model} | {dtype} | {mode} | {m} | {r['steps']} | {r['step_s'] * 1000:.1f} | "
                         f"{r['time_x_mixup']:.2f} | {r['peak_mb']:.0f} | {r['memory_x_mixup']:.2f} | "
                         f"{'yes' if r['finite'] else '**NO**'} |")
    if result['skipped']:
        lines += ['', 'Not run, the budget was spent: ' + ', '.join(f'{k} {key}' for k, key in result['skipped'])]
    return '\n'.join(lines) + '\n'


def write(result: Dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix('.json').write_text(json.dumps(result, indent=2))
    out.with_suffix('.md').write_text(markdown(result))


def check_numbers(args) -> str:
    """'' when the numeric arguments make sense, else the one line that says which does not and what to pass."""
    if not (math.isfinite(args.budget_s) and args.budget_s > 0):
        return (f'--budget-s {args.budget_s:g} is out of range: it must be a finite number of seconds > 0 '
                f'(e.g. --budget-s 240, the device time a lent GPU leaves after start-up)')
    for dest, low in (('img_size', 1), ('batch_size', 1), ('check_steps', 1), ('steps', 1), ('warmup', 0)):
        if getattr(args, dest) < low:
            return f"--{dest.replace('_', '-')} {getattr(args, dest)} is out of range: it must be >= {low}"
    return ''


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    p.add_argument('--models', nargs='+', default=['resnet50', 'deit_small_patch16_224'])
    p.add_argument('--img-size', type=int, default=224)
    p.add_argument('--batch-size', type=int, default=32)
    p.add_argument('--budget-s', type=float, default=240, help='stop starting checks after this many seconds')
    p.add_argument('--check-steps', type=int, default=3, help='steps of each finite check')
    p.add_argument('--steps', type=int, default=50, help='timed steps per method (fewer when the budget ends)')
    p.add_argument('--warmup', type=int, default=5)
    p.add_argument('--dtypes', nargs='+', default=['float16', 'bfloat16'], choices=['float16', 'bfloat16'])
    p.add_argument('--modes', nargs='+', default=['eager', 'compiled'], choices=['eager', 'compiled'])
    p.add_argument('--data-dir', default=str(REPO / 'data' / 'cluttered_mnist'))
    p.add_argument('--out', default=str(REPO / 'bench' / 'results' / 'gpu_check'),
                   help='writes <out>.json and <out>.md, new files (rewritten after every check)')
    p.add_argument('--overwrite', action='store_true', help='replace an existing <out>.json/.md (a rerun on purpose)')
    p.add_argument('--smoke', action='store_true', help='CPU path: test_resnet, 32 px, batch 8, 2 steps, bf16, eager')
    args = p.parse_args(argv)
    problem = check_numbers(args)
    if problem:
        print(f'error: {problem}', file=sys.stderr)
        return 2
    if args.smoke:
        args.models, args.img_size, args.batch_size, args.steps, args.warmup = ['test_resnet'], 32, 8, 2, 1
        args.check_steps, args.dtypes, args.modes = 2, ['bfloat16'], ['eager']
        device = torch.device('cpu')
    elif not torch.cuda.is_available():
        print('error: no CUDA GPU: run on a machine with one, or pass --smoke for the CPU path', file=sys.stderr)
        return 2
    else:
        device = torch.device('cuda')
    start = time.monotonic()
    deadline = start + args.budget_s
    machine = (torch.cuda.get_device_name() if device.type == 'cuda' else platform.processor() or 'cpu')
    result = dict(machine=f'{machine}, torch {torch.__version__}, timm {timm.__version__}',
                  command='python bench/gpu_check.py ' + ' '.join(argv if argv is not None else sys.argv[1:]),
                  budget_s=args.budget_s, elapsed_s=0.0, done=False, finite={}, overflow={}, timings={}, skipped=[])
    try:  # before any check: the report is this run's from the start, and nothing it did not make is replaced
        out = claim_results(args.out, args.overwrite, {'.json': json.dumps(result, indent=2), '.md': markdown(result)})
    except OutError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    for kind, key in plan(args):
        if time.monotonic() > deadline:
            result['skipped'].append((kind, key))
        else:
            result[GROUPS[kind]][key] = run_item(kind, key, args, device, deadline)
        result['elapsed_s'] = time.monotonic() - start
        write(result, out)  # after every check: a run cut short keeps what it did
    result['done'] = True
    write(result, out)
    print(markdown(result))
    if not any(result[group] for group in GROUPS.values()):
        print(f'error: nothing was checked: the budget ({args.budget_s:g} s) ended before the first check: '
              f'pass a larger --budget-s, e.g. 240 (the report lists every check as skipped)', file=sys.stderr)
        return 1
    ok = all(r['finite'] for group in ('finite', 'timings') for runs in result[group].values()
             for r in runs.values()) and all(o['fell_back'] and o['finite'] for o in result['overflow'].values())
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
