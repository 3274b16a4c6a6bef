""" Reading user-given torch files safely (tensors and plain types only, one line when a file is not one), and
writing new ones without ever replacing what the user had. """
import argparse
import os
import pickle
import re
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from .errors import ConfigError


def read_torch_file(path: Path, what: str, fix: str) -> Any:
    """`torch.load(weights_only=True)` of a user file (argparse.Namespace allowed: train.py checkpoints hold
    their args); a file that cannot be read this way is one `ConfigError` line (`what` it should be, the `fix`),
    never an unpickling."""
    try:
        with warnings.catch_warnings(), torch.serialization.safe_globals([argparse.Namespace]):
            warnings.simplefilter('ignore')  # torch warns about the pickle protocol of odd files
            return torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r'GLOBAL ([\w.]+)', str(e))
        if found:
            raise ConfigError(f"'{path}' holds a pickled {found.group(1)}, which a {what} never holds (samix-timm "
                              f"reads files with weights_only=True only): {fix}") from None
        reason = type(e).__name__
    except Exception as e:  # truncated zip, random bytes, empty file
        reason = type(e).__name__
    raise ConfigError(f"'{path}' cannot be read as a torch file ({reason}): it is truncated, corrupt or not a "
                      f"{what}; {fix}") from None


def as_created(path: Path) -> None:
    """Give a file written through `tempfile` (mode 0600) the mode a plain `open` would have given it."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def write_new_torch_file(obj: Any, out: Path, fix: str, name: Optional[Callable[[Path], Path]] = None,
                         what: Optional[str] = None) -> Path:
    """`torch.save(obj)` to a file that must not exist: written to a temporary file beside `out`, then linked to its
    name only when whole, so an existing file is never replaced and a failed write (full disk, no permission)
    leaves nothing behind. The name is `out`, or `name(temporary file)` (e.g. one holding its hash). Failures are one
    `ConfigError` line: `cannot write <what> (reason): <fix>` (`what` defaults to the path)."""
    out = Path(out)
    if name is None and out.exists():
        raise ConfigError(f"'{out}' exists: remove it or choose another path (nothing is ever overwritten)")
    tmp = final = None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out.parent, prefix=f'.{out.name}-', suffix='.tmp', delete=False) as f:
            tmp = Path(f.name)
            torch.save(obj, f)
        as_created(tmp)
        final = name(tmp) if name is not None else out
        try:
            os.link(tmp, final)  # fails if the name exists (or appeared meanwhile): never replaces it
        except FileExistsError:
            raise
        except OSError:  # a filesystem without hard links: rename, after one more look
            if final.exists():
                raise FileExistsError(final) from None
            tmp.rename(final)
    except (OSError, RuntimeError) as e:  # RuntimeError: torch's zip writer on a full disk
        if isinstance(e, FileExistsError) and final is not None:  # the name is taken (not: a file where a folder goes)
            raise ConfigError(f"'{final}' exists: remove it or choose another path (nothing is ever overwritten)") \
                from None
        reason = getattr(e, 'strerror', None) or str(e).splitlines()[0]
        raise ConfigError(f"cannot write {what or repr(str(out))} ({reason}): {fix}") from None
    finally:
        if tmp is not None and tmp.exists():
            tmp.unlink()
    return final
