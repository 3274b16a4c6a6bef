""" Running train.py for a config (one process or torchrun) and collecting its run folder. """
import itertools
import logging
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from .recipes import REPO, RECIPES, is_transformer, read_config, split_name
from .results import RunResult, collect

_logger = logging.getLogger(__name__)


def smoke_overrides(cfg: Dict, img_size: Optional[int] = None, nproc: int = 1) -> List[str]:
    """train.py arguments a reduced run needs besides --data-dir/--epochs/--img-size.

    Transformers get `--model-kwargs img_size=N` (timm builds ViT/Swin for a fixed size), and a
    single process cannot use repeated augmentation (timm's RepeatAugSampler is distributed-only).
    """
    extra = []
    if img_size is not None and is_transformer(str(cfg.get('model', ''))):
        extra += ['--model-kwargs', f'img_size={img_size}']
    if nproc == 1 and cfg.get('aug_repeats'):
        extra += ['--aug-repeats', '0']
    return extra


def train_command(path: Path, output: Path, nproc: int = 1, data_dir: Optional[str] = None,
                  epochs: Optional[int] = None, img_size: Optional[int] = None, extra: Sequence[str] = (),
                  pretrained: bool = True) -> List[str]:
    """The train.py command line of one config (python for 1 process, torchrun for more)."""
    launcher = [sys.executable] if nproc == 1 else [sys.executable, '-m', 'torch.distributed.run',
                                                    '--nproc_per_node', str(nproc)]
    cmd = launcher + [str(REPO / 'train.py'), '--config', str(path), '--output', str(output)]
    if data_dir:
        cmd += ['--data-dir', str(data_dir)]
    if epochs is not None:
        cmd += ['--epochs', str(epochs)]
    if img_size is not None:
        cmd += ['--img-size', str(img_size)]
    cmd += smoke_overrides(read_config(path), img_size, nproc)
    recipe = RECIPES.get(split_name(path.stem)[0])
    cmd += [a for a in (recipe.extra if recipe else ()) if pretrained or a != '--pretrained']
    return cmd + list(extra)


def run_config(path: Path, output: Path, **kwargs) -> RunResult:
    """Run train.py for one config (log in OUTPUT/<config>.log) and collect its run folder."""
    output.mkdir(parents=True, exist_ok=True)
    log = output / f'{path.stem}.log'
    for n in itertools.count(1):  # an earlier run's log is kept: the next one gets a numbered name
        if not log.exists():
            break
        log = output / f'{path.stem}-{n}.log'
    cmd = train_command(path, output, **kwargs)
    _logger.info(f'{path.stem}: {" ".join(cmd)}  (log: {log})')
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get('PYTHONPATH')])))
    with open(log, 'w') as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    text = log.read_text()
    found = re.findall(r'^\s*summary:\s+(.+)\s*$', text, re.M)  # printed by train.py at the end
    if proc.returncode != 0 or not found:
        lines = [line for line in text.splitlines() if line.strip()]
        return RunResult(config=path.stem, run_dir=None, error=f'failed ({lines[-1][:120] if lines else "no output"})')
    return collect(Path(found[-1].strip()).parent, kwargs.get('data_dir'))
