"""A torchrun entry for test_distributed: `python -m train` in which rank 0, right after opening its datasets,
publishes a new generation of the first one (as a nightly prepare could), before the other ranks open theirs.

Environment: PUBLISH_ARGS, the `prepare build` arguments (JSON); PUBLISHED, a file made once it is done.
"""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from click.testing import CliRunner  # noqa: E402

from prepare.cli import cli as prepare_cli  # noqa: E402
from train import data  # noqa: E402
from train.cli import cli  # noqa: E402

opening = data.Mixture.__init__


def open_around_a_publish(self, *args, **kwargs):
    if os.environ["RANK"] == "0":
        opening(self, *args, **kwargs)
        result = CliRunner().invoke(prepare_cli, json.loads(os.environ["PUBLISH_ARGS"]), catch_exceptions=False)
        assert result.exit_code == 0, result.output
        open(os.environ["PUBLISHED"], "w").close()
    else:
        while not os.path.exists(os.environ["PUBLISHED"]):
            time.sleep(0.05)
        opening(self, *args, **kwargs)


data.Mixture.__init__ = open_around_a_publish
cli()
