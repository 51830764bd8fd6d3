"""The harness's own errors: the CLI turns each into one line on stderr and exit code 2; and the
exit code of a run that stopped to be requeued."""

EXIT_PREEMPTED = 3  # `harness run` exits with this after checkpointing; the Slurm task requeues


class HarnessError(Exception):
    """A problem the user can fix; the message names what is wrong and what to do."""


class ConfigError(HarnessError):
    """A config file or --set override that does not describe a valid sweep."""


class DataError(HarnessError):
    """A dataset cannot be found, downloaded, verified or held: the built-in images or a workload's own."""


class ResultsError(HarnessError):
    """The results folder cannot be written or read."""


class StopRequested(HarnessError):
    """Asked to stop (USR1/TERM) where nothing can be resumed (predict's short runs): the command
    leaves with EXIT_PREEMPTED and one line."""


class Interrupted(BaseException):
    """A second SIGTERM while a step had not returned (a hung loss, a sleep): the step is abandoned
    and the cell recorded as failed, interrupted. A BaseException, so that the user's `except
    Exception` around the code that hangs does not swallow it."""
