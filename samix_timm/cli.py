""" Entry points of the thin scripts: parse, run, turn bad input into a one-line error and Ctrl-C into a resume
hint. """
import errno
import logging
import os
import re
import shlex
import sys
from typing import Callable, Optional, Sequence

from timm.utils import setup_default_logging

from .data import EmbeddedDataError
from .engine.args import ConfigError, parse_train_args
from .errors import RunInterrupted, TrainingDivergedError
from .features import FeatureTapError
from .health import format_health, health_failures
from .mixer import MixerNumericsError

_logger = logging.getLogger('train')
_UNREADABLE = re.compile(r'Failed to load (\d+) consecutive samples')


def guarded(fn: Callable[[], int], script: str = '', argv: Optional[Sequence[str]] = None) -> int:
    """Run `fn`; known user errors print `error: ...` and exit code 2 instead of a traceback; Ctrl-C prints one
    line (with the command that resumes the run, when it has a checkpoint) and exit code 130."""
    try:
        return fn()
    except (ConfigError, EmbeddedDataError, MixerNumericsError, FeatureTapError, TrainingDivergedError) as e:
        hint = ' (train.py: lower --samix-mixer-lr, or leave out --amp)' if isinstance(e, MixerNumericsError) else ''
        print(f'error: {e}{hint}', file=sys.stderr)
        return 2
    except RuntimeError as e:
        unreadable = _UNREADABLE.search(str(e))  # timm's ImageDataset, also re-raised from a loader worker
        if unreadable is None:
            raise
        count = int(unreadable.group(1))
        files = _unreadable_files(e, count)
        where = (f"({', '.join(repr(f) for f in files[:3])}{', ...' if len(files) > 3 else ''})" if files else
                 '(read in a loader worker: rerun with --workers 0 to have them named here)')
        print(f'error: {count} images in a row cannot be read {where}; timm skipped each one: a class folder of '
              f'corrupt or non-image files? replace or remove them', file=sys.stderr)
        return 2
    except OSError as e:
        if e.errno != errno.ENAMETOOLONG:
            raise
        name = str(e.filename or '')
        print(f"error: a path is too long for the file system ('{name[:40]}...', {len(os.fsencode(name))} bytes; a "
              f"name may have 255, a path 4095): pass a shorter path", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        checkpoint = getattr(e, 'checkpoint', None) if isinstance(e, RunInterrupted) else None
        if checkpoint is not None:
            words = list(sys.argv[1:] if argv is None else argv)
            for i, w in enumerate(words):  # an earlier --resume gives way to the new checkpoint
                if w == '--resume' and i + 1 < len(words):
                    del words[i:i + 2]
                    break
            command = shlex.join(['python', script, *words, '--resume', str(checkpoint)])
            print(f'interrupted: the run is kept up to its last epoch; resume with: {command}', file=sys.stderr)
        elif script:  # a training run
            print('interrupted before the first checkpoint: nothing was kept', file=sys.stderr)
        else:
            print('interrupted', file=sys.stderr)
        return 130


def _unreadable_files(error: BaseException, count: int) -> list:
    """The files behind timm's "Failed to load N consecutive samples" (its "Skipped sample" warnings give only
    indexes): the N indexes before the one timm's `ImageDataset.__getitem__` stopped at, read from its frame. Empty
    when the error was re-raised from a loader worker (its frames are in the worker)."""
    tb, found = error.__traceback__, None
    while tb is not None:  # the innermost dataset frame (wrappers such as SampleSeededDataset come first)
        frame = tb.tb_frame
        dataset, index = frame.f_locals.get('self'), frame.f_locals.get('index')
        if frame.f_code.co_name == '__getitem__' and isinstance(index, int) and hasattr(dataset, 'reader') \
                and hasattr(dataset.reader, 'filename'):
            found = dataset.reader, index
        tb = tb.tb_next
    if found is None:
        return []
    reader, index = found
    try:
        return [str(reader.filename((index - count + i) % len(reader), absolute=True)) for i in range(count)]
    except Exception:  # a reader without file names: the warnings still give the indexes
        return []


def _print_health(health) -> None:
    """The final line of a run with a learned Mixer: its health verdict (§2.6, a grey Mixer is never silent)."""
    if not health:
        return
    failures = health_failures(health)
    verdict = 'the masks follow lam and are spatial' if not failures else 'NOT healthy: ' + '; '.join(failures.values())
    print(f'  Mixer health: {format_health(health)} -> {verdict}')


def run_train(argv: Optional[Sequence[str]] = None) -> int:
    """train.py: parse timm-style arguments, train, print where the results are."""
    from .engine.train import train

    def _run() -> int:
        setup_default_logging()
        args, args_text = parse_train_args(argv)
        result = train(args, args_text)
        if result.output_dir is not None:
            m = result.eval_metrics
            line = f'validation top-1 {m.get("top1", float("nan")):.2f}%'
            if result.ema_metrics:
                line += f' (EMA {result.ema_metrics["top1"]:.2f}%)'
            print(f'\n{line} after {result.last_epoch + 1} epochs\n'
                  f'  checkpoint:  {result.checkpoint}\n'
                  f'  summary:     {result.output_dir / "summary.csv"}\n'
                  f'  tensorboard: tensorboard --logdir {result.output_dir}')
            _print_health(result.mixer_health)
        return 0

    return guarded(_run, 'train.py', argv)


def run_train_ssl(argv: Optional[Sequence[str]] = None) -> int:
    """train_ssl.py: parse the SSL arguments, train, print where the results are."""
    from .ssl.args import parse_ssl_args
    from .ssl.engine import train_ssl

    def _run() -> int:
        setup_default_logging()
        args, args_text = parse_ssl_args(argv)
        result = train_ssl(args, args_text)
        if result.output_dir is not None:
            knn = f'{result.knn_top1:.2f}%' if result.knn_top1 is not None else 'not measured'
            print(f'\nkNN top-1 {knn} after {result.last_epoch + 1} epochs\n'
                  f'  checkpoint:  {result.checkpoint}\n'
                  f'  probes:      python -m samix_timm.ssl.probe --checkpoint {result.checkpoint} --data-dir {args.data_dir}\n'
                  f'  tensorboard: tensorboard --logdir {result.output_dir}')
            _print_health(result.mixer_health)
        return 0

    return guarded(_run, 'train_ssl.py', argv)


def run_validate(argv: Optional[Sequence[str]] = None) -> int:
    """validate.py: evaluate one checkpoint and print its metrics as JSON."""
    import json

    from .engine.validate import parse_validate_args, validate

    def _run() -> int:
        setup_default_logging()
        print(json.dumps(validate(parse_validate_args(argv)), indent=2))
        return 0

    return guarded(_run)
