"""--max-time as a step count, the run's only stopping rule (so a resumed run ends where the run would have): a
first count from timing the run's own work before step 0 (`calibrate`, `first_count`), then fixed again from
the run's own steps after the warmup and halfway to the warmdown while the rate does not yet depend on it
(`retime`; docs/training.md). Each count is a new StepPlan (train/config.py), recorded, never patched in.
"""

import dataclasses
import math
import os
import shutil
import tempfile
import time

from prepare.format import TOKENIZER
from train import checkpoint
from train.config import StepPlan
from train.generate import sample_lines
from train.schedule import momentum_at, warmdown_from
from train.plot import plot_run

# --max-time becomes a step count by timing real steps: two warm-up steps (compilation, first allocations),
# then at least 5 steps and 2 seconds of them, at most 50 steps.
CALIBRATION_WARMUP, CALIBRATION_STEPS, CALIBRATION_SECONDS, CALIBRATION_MAX_STEPS = 2, 5, 2.0, 50


def calibrate(trainer, config, encoding, start_step=0):
    """Seconds of (a step, an evaluation with its samples and plot, a checkpoint, a scoring of the downstream
    tasks), measured on real steps from `start_step` that are then undone: weights and RNG go back to where
    they were and the optimizer starts afresh."""
    model, mixture, run_dir = trainer.model, trainer.mixture, config.out
    weights = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    rng = trainer.rng_state()
    times, step, more = [], 0, True
    while more:
        start = time.perf_counter()
        at = start_step + step  # the session's own windows (a resumed run's history may begin there)
        # The count is not known yet (StepPlan()): the momentum of a step before any warmdown. Read: on a GPU the
        # step is done.
        trainer.step(trainer.windows(at)[0], config.lr, momentum_at(at, config, StepPlan())).read()
        if step >= CALIBRATION_WARMUP:
            times.append(time.perf_counter() - start)
        step += 1
        more = (step < CALIBRATION_WARMUP + CALIBRATION_STEPS
                or (sum(times) < CALIBRATION_SECONDS and step < CALIBRATION_MAX_STEPS))
        more = trainer.world.broadcast(more)  # every process stops after the same step: each step is a collective
    step_seconds = sorted(times)[len(times) // 2]
    splits = [split for splits in mixture.splits for split in splits.values() if split.windows]
    if config.compile:  # a first evaluation compiles the eval graph, which the run does once: time a warm one
        for split in splits:
            trainer.evaluate(split)
    start = time.perf_counter()
    for split in splits:
        trainer.evaluate(split)
    if trainer.world.is_main:
        if config.samples:
            sample_lines(model, encoding, config, 0)
        # Beside the run directory, on the same storage: the run writes nothing until nothing can refuse it.
        parent = os.path.dirname(os.path.abspath(run_dir))
        os.makedirs(parent, exist_ok=True)
        scratch = tempfile.mkdtemp(prefix=".calibration-", dir=parent)
        with open(os.path.join(scratch, "metrics.jsonl"), "w") as f:
            f.write('{"step": 0, "tokens": 1, "loss": 1.0, "train_eval_loss": 1.0, "val_loss": 1.0, "val_bpb": 1.0}\n')
        plot_run(scratch)
    eval_seconds = time.perf_counter() - start
    tasks_seconds = 0.0
    if trainer.tasks:
        start = time.perf_counter()
        trainer.score_tasks()
        tasks_seconds = time.perf_counter() - start
    start = time.perf_counter()
    if trainer.world.is_main:
        state, tokenizer = {"optimizer": trainer.optimizer.state_dict()}, os.path.join(run_dir, TOKENIZER)
        checkpoint.write_folder(os.path.join(scratch, "checkpoint"), checkpoint.whole_weights(model), state, "{}",
                                tokenizer)
        shutil.rmtree(scratch)
    checkpoint_seconds = time.perf_counter() - start
    model.load_state_dict(weights)
    trainer.set_rng_state(rng)
    trainer.reset_optimizer()
    return trainer.world.broadcast((step_seconds, eval_seconds, checkpoint_seconds, tasks_seconds))


def first_count(trainer, config, plan, encoding, start_step, elapsed):
    """`plan` with a time budget's first step count (from `start_step`, with `elapsed()` seconds of the run gone),
    from calibrated costs: the costs kept as its timing, and the step that re-times the count."""
    costs = calibrate(trainer, config, encoding, start_step)
    timed = start_step + steps_for_time(config, config.max_time - elapsed(), costs)
    # Rank 0's clock decides: each process started at its own moment, and all must run the same steps.
    steps = trainer.world.broadcast(min(plan.steps or timed, timed))
    return dataclasses.replace(plan, steps=steps, timing=list(costs),
                               retime_at=start_step + settling_steps(steps - start_step))


def steps_for_time(config, seconds_left, costs, at_least=1):
    """The most steps (`at_least` of them) whose steps, evaluations and checkpoints fit in `seconds_left`.
    Every evaluation is counted with a checkpoint, since one that improves on the best so far saves one."""
    step_s, eval_s, ckpt_s, tasks_s = (*costs, 0.0)[:4]  # a run configured before downstream tasks timed three
    per_step = step_s + ((eval_s + ckpt_s) / config.eval_every if config.eval_every else 0)
    per_step += ckpt_s / config.ckpt_every if config.ckpt_every else 0
    per_step += tasks_s / config.tasks_every if config.tasks_every else 0
    return max(at_least, int((seconds_left - eval_s - ckpt_s - tasks_s) / per_step))


def retime(config, plan, world, mixture, step, step_seconds, elapsed):
    """A time budget's step count fixed from the seconds of this session's steps so far (evaluations and
    checkpoints apart), where the calibration before step 0 timed only a few seconds. Only the later half
    counts: a machine's first seconds of work run faster than the rest (docs/benchmarks.md). With the
    warmdown schedule, each re-timing sets the next one halfway to the warmdown (`next_retime`). Returns
    (the new StepPlan, seconds per step, steps timed, seconds the budget had left)."""
    measured = step_seconds[len(step_seconds) // 2 :]
    per_step = sum(measured) / len(measured)
    timing = [per_step, *plan.timing[1:]]  # what the step count now rests on, kept with it
    left = config.max_time - elapsed
    timed = step + 1 + steps_for_time(config, left, timing, at_least=0)
    capacity = mixture.capacity() / config.tokens_per_step  # the steps the mixture's epoch caps allow (inf: no cap)
    steps = world.broadcast(int(min(step_budget(config) or timed, timed, capacity)))
    plan = dataclasses.replace(plan, steps=steps, timing=timing)
    return dataclasses.replace(plan, retime_at=next_retime(step + 1, config, plan)), per_step, len(measured), left


def next_retime(step, config, plan):
    """Where a time budget re-timed before `step` is timed again: halfway from there to the warmdown's start,
    if that is at least a warmup's steps away (None: not again; a cosine rate depends on the count from the
    warmup on)."""
    if config.schedule != "warmdown":
        return None
    middle = (step + warmdown_from(plan.steps, plan.warmup_steps, config.warmdown_fraction)) // 2
    return middle if middle - step >= settling_steps(plan.steps) else None


def settling_steps(steps):
    """5% of `steps`, at least 1 and at most 100: the learning rate's warmup, and the steps after which a time
    budget is timed again (the learning rate does not depend on the step count until then)."""
    return max(1, min(100, steps // 20))


def step_budget(config):
    """The step count that the step and token budgets allow (None if neither is set)."""
    limits = [config.max_steps] if config.max_steps else []
    if config.max_tokens:
        limits.append(math.ceil(config.max_tokens / config.tokens_per_step))
    return min(limits, default=None)
