"""The mistakes a user can make with train's commands (a missing run, a corrupt file, an option that cannot take
effect...): each ends as one line on stderr and a non-zero exit, never a traceback; the CLI and each stage of
`train nightly` end them the same way."""

import functools
import os
import sys

from prepare import clitools
from prepare.format import DatasetError
from prepare.storage.store import StorageError
from prepare.tokenizer import TokenizerError
from train.config import ConfigError
from prepare.evals import TaskError
from prepare.evals.cache import FetchError
from train.tracking import TrackerError

USER_ERRORS = (DatasetError, TokenizerError, ConfigError, TrackerError, TaskError, FetchError, StorageError)


def user_errors(command):
    """`command`, whose user errors end in one line (clitools.fail)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        # torch's modules are imported only by the commands that use them: `--help` starts in a second, not five
        from train.checkpoint import CheckpointError
        from train.cooldown import CooldownError
        from train.device import DeviceError
        from train.distributed import JobError
        from train.memory import StepDoesNotFit
        from train.plot import MetricsError
        from train.session import TrainingError
        from train.sharding import ShardingError

        errors = (*USER_ERRORS, CheckpointError, CooldownError, DeviceError, StepDoesNotFit, TrainingError,
                  MetricsError, ShardingError)
        try:
            return clitools.user_errors(errors)(command)(*args, **kwargs)
        except JobError as e:  # every process of the job raised it: rank 0 says it once
            if os.environ.get("RANK", "0") != "0":
                sys.exit(1)
            clitools.fail(str(e))

    return wrapper
