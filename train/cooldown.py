"""`train cooldown RUN`: the model to release from a run with an open schedule (train/schedule.py).

The main line of such a run never decays. A cool-down copies its latest checkpoint into a branch,
RUN/cooldowns/step-NNNNNNN/ (a run directory of its own), and trains it on for N more steps on the same
data and generations while the learning rate decays linearly to --min-lr and Muon's momentum to 0.90; the
main line is left as it was, and the next session resumes it, never the branch. RUN/cooled.json names the
latest branch: sample, eval, score and export use its last checkpoint by default.
"""

import dataclasses
import json
import os
import shutil

from prepare.format import write_atomic
from train import checkpoint
from train.config import read_config
from train.fit import fit
from train.report import FitResult

# A cool-down of a fifth of the steps since the previous one (Hägele et al. 2024, arXiv 2405.18392: 20% of
# the steps matched a cosine schedule's loss).
COOLDOWN_FRACTION = 0.2


class CooldownError(Exception):
    pass


@dataclasses.dataclass(frozen=True)
class Cooled:
    """A cool-down: its branch's directory, the branch's last checkpoint (the model sample, eval, score and
    export use by default), and the session that trained it (None: an earlier one had reached its end)."""

    branch: str
    checkpoint: str
    fit: FitResult | None


def cool_down(run_dir, steps=None, fraction=COOLDOWN_FRACTION, min_lr=None, *, say):
    """`train cooldown RUN`: branch RUN's latest checkpoint, decay the branch to min_lr (or finish the decay a
    crash cut short), and name it as RUN's latest cool-down."""
    config, plan, main, started = branch(run_dir, steps, fraction, min_lr)
    if not started:
        begin(config, main)
    session = None
    if checkpoint.read_pointer(config.out).get("latest") != f"step-{plan.steps - 1:07d}":  # else it ended unnamed
        say(f"{config.out}: cooling down from step {config.cooldown_from} over {config.cooldown_steps} steps to lr "
            f"{config.min_lr:.2e}")
        session = fit(config, plan, resume=True, say=say)
    finish(run_dir, config)
    return Cooled(config.out, checkpoint.locate(config.out), session)


def branch(run_dir, steps=None, fraction=COOLDOWN_FRACTION, min_lr=None):
    """(The branch's RunConfig and StepPlan, the main line's checkpoint, whether the branch exists already, half
    done) for a cool-down of RUN's latest main-line checkpoint over `steps` steps (default: `fraction` of the
    steps trained since the previous cool-down's branch point, at least 1)."""
    main = checkpoint.locate(run_dir)
    config, plan = read_config(main)
    if config.cooldown_from is not None:
        raise CooldownError(f"{run_dir} is a cool-down branch; give its main line, the run directory above "
                            f"{checkpoint.COOLDOWNS}/")
    if config.schedule != "open":
        raise CooldownError(f"{run_dir} decays on its own (--schedule {config.schedule}); a cool-down branches a run "
                            f"trained with --schedule open")
    state = checkpoint.load_state(main)
    step, cooled = state["step"], checkpoint.read_cooled(run_dir)
    since = step - cooled["from"] if cooled else step + 1
    if cooled and since <= 0:
        raise CooldownError(f"{run_dir}: its latest checkpoint (step {step}) is cooled down already in "
                            f"{cooled['branch']}; train the main line on with --resume first")
    steps = steps or max(1, round(fraction * since))
    out = os.path.join(run_dir, checkpoint.COOLDOWNS, f"step-{step:07d}")
    # A branch trains on this one process: a sharded main line's checkpoint is read whole (train/sharding.py).
    config = dataclasses.replace(config, out=out, cooldown_from=step, cooldown_steps=steps, max_steps=step + 1 + steps,
                                 min_lr=config.min_lr if min_lr is None else min_lr, max_tokens=None, max_time=None,
                                 shard="none")
    config.check()
    started = os.path.exists(os.path.join(out, checkpoint.POINTER))
    if started and read_config(checkpoint.locate(out))[0].cooldown_steps != steps:
        raise CooldownError(f"{out}: a cool-down of other length was begun there; remove it to begin again")
    return config, dataclasses.replace(plan, steps=step + 1 + steps, retime_at=None), main, started


def begin(config, main):
    """The branch directory, holding a copy of the main line's checkpoint as its latest."""
    name = os.path.basename(main)
    folder = os.path.join(config.out, checkpoint.FOLDER)
    os.makedirs(folder, exist_ok=True)
    shutil.rmtree(os.path.join(folder, name), ignore_errors=True)  # a copy a crash left half made
    shutil.copytree(main, os.path.join(folder, name))
    write_atomic(os.path.join(config.out, checkpoint.POINTER), json.dumps({"latest": name}).encode())


def finish(run_dir, config):
    """Name the branch as the run's latest cool-down."""
    cooled = {"branch": os.path.relpath(config.out, run_dir), "from": config.cooldown_from,
              "steps": config.cooldown_steps}
    write_atomic(os.path.join(run_dir, checkpoint.COOLED), json.dumps(cooled).encode())
