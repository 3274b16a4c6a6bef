""" Reading finished train.py run folders and applying the paper's metric of their recipe (spec §8). """
import csv
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from .recipes import RECIPES, Recipe, config_path, read_config


def paper_metric(values: Sequence[float], metric: str, last: int) -> Optional[float]:
    """Median of the last `last` epochs (CNNs) or the best epoch (transformers); None without epochs."""
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return None
    return max(values) if metric == 'best' else statistics.median(values[-last:])


@dataclass
class RunResult:
    """One finished (or failed) run, as a row of the table."""
    config: str
    run_dir: Optional[Path]
    epochs_done: int = 0
    epochs: int = 0
    top1: Optional[float] = None
    ema_top1: Optional[float] = None
    test_top1: Optional[float] = None
    error: str = ''


def _column(rows: List[Dict], key: str) -> List[float]:
    return [float(r[key]) for r in rows if r.get(key) not in (None, '')]


def collect(run_dir, data_dir: Optional[str] = None, test_size: bool = True) -> RunResult:
    """Read a train.py run folder (args.yaml + summary.csv) and apply the paper's metric of its recipe.

    Recipes evaluated at another size than they train at (RSB A3: 160 -> 224 px) also get their last
    checkpoint evaluated at the test size with validate.py's code, unless the run overrode the
    recipe's resolution (smoke runs) or `test_size` is False; `data_dir` overrides args.yaml's.
    """
    run_dir = Path(run_dir)
    args = read_config(run_dir / 'args.yaml')
    config = Path(args.get('config') or '')
    stem = config.stem or args.get('experiment') or run_dir.name
    recipe = RECIPES.get(stem.split('_')[0], Recipe(1, 0, ''))
    if not (run_dir / 'summary.csv').is_file():
        return RunResult(config=stem, run_dir=run_dir, error='no summary.csv (no finished epoch)')
    with open(run_dir / 'summary.csv') as f:
        rows = list(csv.DictReader(f))
    last = min(recipe.last, len(rows)) or 1
    result = RunResult(
        config=stem, run_dir=run_dir, epochs_done=len(rows), epochs=int(args.get('epochs') or len(rows)),
        top1=paper_metric(_column(rows, 'eval_top1'), recipe.metric, last),
        ema_top1=paper_metric(_column(rows, 'eval_ema_top1'), recipe.metric, last))
    yaml_path = config if config.is_file() else config_path(stem)
    recipe_size = read_config(yaml_path).get('img_size') if yaml_path else None
    checkpoint = run_dir / 'last.pth.tar'
    if test_size and recipe.test_img_size and args.get('img_size') == recipe_size and checkpoint.is_file():
        from ..engine.validate import parse_validate_args, validate
        vargs = parse_validate_args([
            '--data-dir', data_dir or args['data_dir'], '--checkpoint', str(checkpoint),
            '--img-size', str(recipe.test_img_size), '--crop-pct', str(args.get('crop_pct') or 0.95),
            '--workers', str(args.get('workers', 4)), '--device', args.get('device') or 'cpu'])
        result.test_top1 = validate(vargs)['top1']
    return result
