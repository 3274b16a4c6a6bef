""" Command line of the reproduction harness: run, collect or price the table of docs/reproduce.md. """
import argparse
import glob
import logging
from pathlib import Path
from typing import List, Optional, Sequence

from ..cli import guarded
from ..engine.checks import check_numbers
from ..errors import ConfigError
from .cost import cost_text, measure_cost
from .recipes import RECIPES, config_path, list_configs, read_config, split_name
from .results import collect
from .runner import run_config
from .table import format_table


def _expand(patterns: Sequence[str]) -> List[Path]:
    """The config files `patterns` name (paths or globs); one that names no file is one `ConfigError` line."""
    paths = []
    for p in patterns:
        found = [Path(m).resolve() for m in sorted(glob.glob(p))] or [Path(p).resolve()]
        missing = [f for f in found if not f.is_file()]
        if missing:
            raise ConfigError(f"--configs {p}: '{missing[0]}' is not a config file: pass a YAML of configs/ "
                              f"(e.g. configs/in1k/pt100_resnet50_samix.yaml) or a glob that matches some")
        paths += found
    return paths


def _check_run_dir(run_dir: str) -> None:
    """`--collect RUN_DIR` is a train.py run folder (it used to be a FileNotFoundError traceback)."""
    path = Path(run_dir)
    what = 'pass a train.py run folder of a configs/ recipe (output/train/<run>, holding args.yaml and summary.csv)'
    if not path.exists():
        raise ConfigError(f"--collect '{run_dir}' does not exist: {what}")
    if not path.is_dir():
        raise ConfigError(f"--collect '{run_dir}' is a file, not a run folder: {what}")
    if not (path / 'args.yaml').is_file():
        raise ConfigError(f"--collect '{run_dir}' holds no args.yaml, so it is not a train.py run folder: {what}")


def _check_recipe(result) -> None:
    """A collected run was trained from a reproduction recipe: its table row needs the recipe's name."""
    try:
        recipe, _, _ = split_name(result.config)
    except ValueError:
        recipe = None
    if recipe not in RECIPES:
        raise ConfigError(f"--collect '{result.run_dir}' is a run of '{result.config}', not of a recipe of configs/ "
                          f"(e.g. pt100_resnet50_samix): collect runs of train.py --config configs/<group>/<recipe>.yaml "
                          f"or of python -m samix_timm.reproduce")


def create_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description='Run/collect the reproduction table of docs/reproduce.md')
    p.add_argument('--configs', nargs='+', default=None, help='config YAMLs (default: every recipe in configs/)')
    p.add_argument('--collect', nargs='+', default=None, metavar='RUN_DIR', help='only collect finished run folders')
    p.add_argument('--markdown', action='store_true', help='print the docs table of the configs (no runs)')
    p.add_argument('--measure-cost', action='store_true', help='time training steps, print img/s and device-hours')
    p.add_argument('--data-dir', default=None, help='dataset root (overrides nothing else)')
    p.add_argument('--epochs', type=int, default=None, help='override the recipe epochs (smoke runs)')
    p.add_argument('--img-size', type=int, default=None, help='override the training resolution (smoke runs)')
    p.add_argument('--output', default='output/reproduce', help='root of the run folders and logs')
    p.add_argument('--nproc', type=int, default=1, help='processes per run (torchrun when > 1)')
    p.add_argument('--skip-pretrained', action='store_true',
                   help='do not add --pretrained to fine-tuning recipes (offline smoke runs)')
    p.add_argument('--device', default='cpu', help='device of --measure-cost')
    p.add_argument('--cost-batch', type=int, default=None, help='batch of --measure-cost (default: the recipe)')
    p.add_argument('--cost-steps', type=int, default=3, help='timed steps of --measure-cost')
    p.add_argument('--cost-repeats', type=int, default=1, help='timings per config; the fastest counts')
    p.add_argument('--extra', nargs=argparse.REMAINDER, default=[], help='further train.py arguments (last)')
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    logging.basicConfig(level=logging.INFO, format='%(message)s')
    args = create_parser().parse_args(argv)

    def _run() -> int:
        check_numbers(args)
        return _main(args)

    return guarded(_run)


def _main(args) -> int:
    if args.collect:
        for d in args.collect:
            _check_run_dir(d)
        results = [collect(d, data_dir=args.data_dir) for d in args.collect]
        for r in results:
            _check_recipe(r)
        paths = [config_path(r.config) or Path(f'{r.config}.yaml') for r in results]
        print(format_table(paths, {r.config: r for r in results}))
        return 0
    paths = _expand(args.configs) if args.configs else list_configs()
    if args.markdown:
        print(format_table(paths))
        return 0
    if args.measure_cost:
        import torch
        costs, seen = {}, {}
        for path in paths:
            cfg = read_config(path)
            mixing = f"samix:{cfg.get('samix_mixer')}" if cfg.get('mixup') == 'samix' else 'timm'  # Mixup = CutMix
            key = (cfg['model'], args.img_size or cfg.get('img_size'), mixing, cfg.get('opt'),
                   bool(cfg.get('model_ema')))
            if key not in seen:
                seen[key] = measure_cost(path, args.device, args.cost_batch, args.cost_steps, args.img_size,
                                         repeats=args.cost_repeats)
            threads = torch.get_num_threads() if args.device == 'cpu' else None
            costs[path.stem] = cost_text(path, seen[key], args.device, threads)
            print(f'{path.stem}: {costs[path.stem]}', flush=True)
        print(format_table(paths, costs=costs))
        return 0
    results = {}
    for path in paths:
        results[path.stem] = run_config(
            path, Path(args.output).resolve(), nproc=args.nproc, data_dir=args.data_dir, epochs=args.epochs,
            img_size=args.img_size, extra=args.extra, pretrained=not args.skip_pretrained)
    print(format_table(paths, results))
    return 1 if any(r.error for r in results.values()) else 0
