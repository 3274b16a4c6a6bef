""" Reading user-given torch files safely: tensors and plain types only, one line when a file is not one. """
import argparse
import pickle
import re
import warnings
from pathlib import Path
from typing import Any

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
