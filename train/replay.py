"""`train replay RUN OUT`: a run that followed its data (--schedule open --follow-data) trained afresh as it
trained: each era of its history on the generations it recorded (kept by its pins), up to the step it switched
at. The losses are RUN's, whatever time budgets its sessions had."""

import dataclasses
import os

from train import checkpoint
from train.config import ConfigError, read_config
from train.fit import fit


def replay(run_dir, out, say=print):
    folder = checkpoint.locate(run_dir)
    (config, plan), state = read_config(folder), checkpoint.load_state(folder)
    if config.schedule != "open" or not state.get("history"):
        raise ConfigError(f"{run_dir}: a replay follows a run with --schedule open --follow-data (another schedule "
                          f"depends on each session's budget)")
    if os.path.exists(os.path.join(out, "config.json")):
        raise ConfigError(f"{out} already holds a run; choose another directory")
    eras = state["history"]
    for number, era in enumerate(eras):
        stop = eras[number + 1]["step"] if number + 1 < len(eras) else state["step"] + 1
        leg = dataclasses.replace(config, out=out, max_steps=stop, max_tokens=None, max_time=None)
        fit(leg, dataclasses.replace(plan, steps=stop, timing=None, retime_at=None), resume=number > 0, say=say,
            generations=era["generations"])
