""" User-facing errors: each message names the problem and the fix in one line. """
from pathlib import Path
from typing import Optional


class ConfigError(ValueError):
    """A bad command line, recipe or input path; scripts print it as `error: ...` and exit 2."""


class TrainingDivergedError(RuntimeError):
    """The training loss became NaN or infinite; the run stops before saving a checkpoint of it."""


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run, after its folder was tidied: `checkpoint` is the one to resume from (None when the run
    was stopped before its first checkpoint, and its folder removed)."""

    def __init__(self, checkpoint: Optional[Path]):
        super().__init__()
        self.checkpoint = checkpoint
