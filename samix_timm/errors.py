""" User-facing errors: each message names the problem and the fix in one line. """
import re
from pathlib import Path
from typing import Dict, Optional


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


def keyword_as_flag(message: str, flags: Dict[str, str], prefix: str = '--') -> Optional[str]:
    """A library message that starts with a keyword argument (`num_clusters=301 ...`) in a script's words
    (`--num-clusters 301 ...`): the keyword's flag from `flags`, else `prefix` + the keyword with dashes (the
    same keyword later in the message too: `use mixer_scale=1` -> `use --samix-mixer-scale 1`); None when the
    message does not start with one."""
    m = re.match(r'([a-z_]+)=', message)
    if m is None:
        return None
    name = m.group(1)
    flag = flags.get(name, prefix + name.replace('_', '-'))
    return flag + ' ' + re.sub(rf'\b{name}=', flag + ' ', message[m.end():])
