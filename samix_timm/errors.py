""" User-facing errors: each message names the problem and the fix in one line. """


class ConfigError(ValueError):
    """A bad command line, recipe or input path; scripts print it as `error: ...` and exit 2."""


class TrainingDivergedError(RuntimeError):
    """The training loss became NaN or infinite; the run stops before saving a checkpoint of it."""
