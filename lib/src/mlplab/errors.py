"""Errors that the command-line entry points report as one line and a non-zero exit."""


class MlplabError(Exception):
    """A user-facing error: bad config, missing or corrupt data, unusable checkpoint."""


class ConfigError(MlplabError):
    """A config value is out of range or a combination is impossible."""


class DataError(MlplabError):
    """Data files are missing, corrupt or inconsistent."""


class DivergenceError(MlplabError):
    """The training loss became NaN or infinite."""


class CheckpointError(MlplabError):
    """A checkpoint is missing, unreadable or does not fit the model."""


class RunInterrupted(MlplabError):
    """Training was stopped by Ctrl-C or SIGTERM after saving a checkpoint to resume from."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class InterruptedWhenDone(RunInterrupted):
    """Ctrl-C or SIGTERM arrived once the run had written all its outputs: it is complete."""


class JobRequeued(RunInterrupted):
    """A SLURM job stopped to be requeued: it continues from its checkpoint when it restarts."""


class TrackingError(MlplabError):
    """An experiment tracker (W&B) cannot be used as configured."""


class DiskFullError(MlplabError):
    """A file of the run could not be written: no space left on the device."""


class ExportError(MlplabError):
    """An exported model does not give the PyTorch model's outputs (or cannot be written)."""
