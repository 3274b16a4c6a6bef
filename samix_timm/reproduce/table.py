""" The markdown table of docs/reproduce.md: commands, expected and measured top-1, metric, cost. """
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

from .expected import format_expected
from .recipes import REPO, RECIPES, config_path, read_config, split_name
from .results import RunResult

TABLE_HEADER = ('| config | GPUs × batch | commands (single node; 2 nodes, same global batch) | expected top-1 '
                '| measured top-1 (online / EMA) | metric | cost |\n|---|---|---|---|---|---|---|')


def commands(path: Path) -> Tuple[str, str]:
    """(single-node, two-node) commands of a config, keeping the recipe's global batch."""
    stem = path.stem
    recipe = RECIPES[split_name(stem)[0]]
    cfg = path.relative_to(REPO) if path.is_absolute() and REPO in path.parents else path
    tail = f'train.py -c {cfg} --data-dir {recipe.data}' + ''.join(f' {a}' for a in recipe.extra)
    if recipe.gpus == 1:
        return f'python {tail}', '—'
    batch = read_config(path)['batch_size']
    return (f'torchrun --nproc_per_node {recipe.gpus} {tail}',
            f'torchrun --nnodes 2 --nproc_per_node {recipe.gpus} --rdzv-backend c10d --rdzv-endpoint $HOST:29500 '
            f'{tail} -b {batch // 2}')


def _pct(v: Optional[float]) -> str:
    return '—' if v is None else f'{v:.2f}'


def metric_text(stem: str, result: Optional[RunResult] = None) -> str:
    """The paper's metric of a recipe, plus the length of `result` when it is not the recipe's."""
    recipe = RECIPES[split_name(stem)[0]]
    text = 'best epoch' if recipe.metric == 'best' else f'median of last {recipe.last} ep'
    if recipe.test_img_size:
        text += f' (paper: tested at {recipe.test_img_size} px; train.py evaluates at the training size)'
    path = config_path(stem)
    planned = read_config(path).get('epochs') if path else None
    if result is not None and result.epochs_done and result.epochs_done != planned:
        text += f' (this run: {result.epochs_done} of {planned} ep)'
    return text


def table_row(path: Path, result: Optional[RunResult] = None, cost: str = '') -> str:
    """One row of the docs table; `result` fills the measured column."""
    stem = path.stem
    recipe = RECIPES[split_name(stem)[0]]
    single, multi = commands(path)
    measured = ''
    if result is not None:
        measured = result.error or f'{_pct(result.top1)} / {_pct(result.ema_top1)}'
        if result.test_top1 is not None:
            measured += f'; last epoch at {recipe.test_img_size} px: {result.test_top1:.2f}'
    batch = read_config(path).get('batch_size')
    multi = f'`{multi}`' if multi != '—' else multi
    return (f'| {stem} | {recipe.gpus} × {batch} | `{single}`<br>{multi} | {format_expected(stem)} | {measured} '
            f'| {metric_text(stem, result)} | {cost} |')


def format_table(paths: Sequence[Path], results: Optional[Dict[str, RunResult]] = None,
                 costs: Optional[Dict[str, str]] = None) -> str:
    results, costs = results or {}, costs or {}
    return '\n'.join([TABLE_HEADER] + [table_row(p, results.get(p.stem), costs.get(p.stem, '')) for p in paths])
