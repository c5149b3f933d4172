"""A run's set-up: every check that can refuse it comes before its first file is written; then its data, model,
optimizer and resume state are opened, its configuration settled once for the device and the data, its step plan
made, and its session (train/session.py) trains.

Every step is a pure function of (seed, step) and the state saved in a checkpoint, which is what makes a resumed
run log the same losses as an uninterrupted one. Under torchrun each process takes a slice of the step's windows;
one process is a world of size 1 of the same code.
"""

import dataclasses
import os
import time

import numpy as np
import torch

from prepare import format as fmt
from prepare.storage import dataset
from prepare.tokenizer import open_encoding, save_directory, token_bytes
from train import checkpoint, report
from train.budget import first_count, settling_steps, step_budget
from train.config import StepPlan, mixture_name
from train.device import compile_pays_off, pick_dtype
from train.distributed import JobError, init_world
from train.downstream import load_eval_tasks
from train.history import History, first_era, open_mixture, pin, resume_eras
from train.memory import check_fits
from train.models import build_model, model_config
from train.optim import apply_options
from train.plot import truncate_metrics
from train.resolve import request
from train.session import Session, TrainingError, resumed_at
from train.tracking import check_trackers
from train.trainer import Trainer


def from_options(values, given, say):
    """`train fit` with its option `values` (those `given` on the command line): the run they ask for, trained."""
    config, plan, session = request(values, given)
    return fit(config, plan, resume=values["resume"], allow_data_change=values["allow_data_change"], say=say,
               session=session)


def fit(config, plan, resume=False, allow_data_change=False, say=print, session=(None, None), generations=None):
    """Train as `config` (resolved: train/resolve.py) and `plan` say; returns the session's report.FitResult.
    `session`: (steps, seconds) of a budget for this session alone, if given; `generations`: those of the
    datasets to train on (a replay's), else those in force."""
    wall_start = time.perf_counter()
    world = init_world(config.device, config.collective_timeout)
    try:
        say = say if world.is_main else (lambda *a, **k: None)
        loop, first_windows, first_wait = start(config, plan, world, resume, allow_data_change, say, wall_start,
                                                session, generations)
        try:
            result = loop.run(first_windows, first_wait)
        finally:
            loop.mixture.close()  # its leases: a bucket's would hold their generation from gc until they expire
        world.finish()
        return result
    finally:
        world.close()


def start(config, plan, world, resume, allow_data_change, say, wall_start, session, generations):
    """The run's Session, its first step's windows and the seconds they took to read, once nothing can refuse it."""
    refuse(config, world)
    folder, weights, state = None, None, None
    if resume:
        folder = checkpoint.locate(config.out)
        state = checkpoint.load_state(folder)
        if "sharding" in state:  # read by train/sharding.py's restore, re-split for this world
            check_shards(folder, state)
        elif config.shard != "fsdp":
            weights = checkpoint.weights_of(folder, state)
    # The run reads these snapshots to its end, whatever prepare publishes meanwhile (leases keep their files);
    # a cool-down branch goes on with its checkpoint's generations.
    branched = state and config.cooldown_from is not None and state.get("history")
    mixture = open_mixture(config, world, branched[-1]["generations"] if branched else generations)
    config, plan = settle(config, plan, world.device, mixture, state, session)
    encoding = open_encoding(config.tokenizer, dataset.tokenizer_dir(config.data[0].path, mixture.manifest))
    fingerprint = mixture.fingerprint()
    tasks = load_eval_tasks(config, encoding, world)
    model = new_model(config, world, resume)
    start_step, count = resumed_at(state)[0], config.micro_batches * config.batch_size
    eras = [first_era(mixture.generations)]
    if resume:
        changed = world.broadcast(state["data_fingerprint"] != fingerprint)  # rank 0's check decides
        if changed and not (allow_data_change or config.follow_data):
            raise JobError(f"{mixture_name(config.data)}: the train data changed since this run started (another "
                           f"generation of a dataset, or other datasets or weights); pass --follow-data to move to "
                           f"it, or --allow-data-change to resume anyway")
        if weights is not None:
            checkpoint.load_weights(model, weights, folder)
        eras = resume_eras(state, mixture, not changed, start_step, config, count)
    history = History(eras, mixture, config, count)
    trainer = Trainer(model, mixture, history, config, world, token_bytes(encoding), tasks)
    plan = planned(plan, config, trainer, encoding, state, say, wall_start)
    read_at = time.perf_counter()
    first_windows = trainer.windows(start_step)  # a token file damaged under its right size stops the run here
    first_wait = time.perf_counter() - read_at  # a bucket's: the files of the first steps, downloaded
    check_trackers(config)
    begin(config, world, mixture, encoding)
    if state is not None:  # after calibration, which starts a fresh optimizer
        restore(trainer, state, config, folder)
        saved_by = len(state["rng"])
        say(f"resuming {config.out} from {os.path.basename(folder)}"
            + ("" if saved_by == world.size else f" (saved by {saved_by} processes: dropout masks start afresh)"))
    report.say_plan(trainer, config, plan, say)
    return Session(trainer, config, plan, encoding, fingerprint, state, say, wall_start), first_windows, first_wait


def refuse(config, world):
    """What refuses a run before anything is opened: a precision the device lacks, micro-batches that do not split
    over the processes, --out a file, a sharding that cannot take the run, a step that cannot fit the device
    (with the first dataset's vocabulary)."""
    dtype = pick_dtype(config.dtype, world.device)
    if config.shard == "fsdp":
        refuse_sharding(config, world, dtype)
    if config.micro_batches % world.size:
        raise TrainingError(
            f"{config.micro_batches} micro-batches of {config.batch_size} x {config.context} tokens per step do not "
            f"split over {world.size} processes; give --tokens-per-step a multiple of "
            f"{world.size * config.batch_size * config.context}"
        )
    if os.path.exists(config.out) and not os.path.isdir(config.out):
        raise TrainingError(f"--out {config.out}: exists and is not a directory")
    vocab_size = dataset.read_manifest(config.data[0].path).tokenizer.vocab_size
    shards = world.size if config.shard == "fsdp" else 1
    check_fits(model_config(config, vocab_size=vocab_size), config.batch_size, dtype, world.device, shards)


def refuse_sharding(config, world, dtype):
    """--shard fsdp where it cannot work: on one process, or with what needs the whole model on one process."""
    if world.size == 1:
        raise TrainingError("--shard fsdp on one process: there is nothing to shard over; run it under torchrun "
                            "--nproc-per-node 2 or more, or give --shard none")
    unsupported = [("--dtype fp16", dtype == "fp16"), ("--init-from", config.init_from),
                   ("--max-time", config.max_time), ("--eval-tasks", config.eval_tasks)]
    given = [name for name, value in unsupported if value]
    if given:
        raise TrainingError(f"--shard fsdp does not take {given[0]} yet (docs/distributed.md): give --shard none")


def check_shards(folder, state):
    """Every file of a sharded checkpoint present, before anything is written: one message for the whole job."""
    from train.sharding import shard_files

    try:
        shard_files(folder, state)
    except checkpoint.CheckpointError as e:
        raise JobError(str(e)) from None


def settle(config, plan, device, mixture, state, session):
    """The configuration and step plan the run goes on with, settled once here: the precision and compilation
    `device` takes (kept by a resume), the datasets' tokenizer, and a resumed session's own budget in place of
    the run's (from where it resumes; its step count redone)."""
    settled = dict(dtype=pick_dtype(config.dtype, device), tokenizer=dataclasses.asdict(mixture.manifest.tokenizer),
                   compile=compile_pays_off(device) if config.compile is None else config.compile)
    if state is not None and session != (None, None):
        step, elapsed = resumed_at(state)
        settled.update(max_steps=session[0] and step + session[0], max_tokens=None,
                       max_time=session[1] and elapsed + session[1])
        plan = StepPlan(warmup_steps=plan.warmup_steps)
    return dataclasses.replace(config, **settled), plan


def new_model(config, world, resume):
    """The model on the device, initialised from the seed (or --init-from's weights on a new run); the dropout's
    stream then seeded for this process."""
    torch.manual_seed(config.seed)
    if config.shard == "fsdp":
        from train.sharding import sharded_model

        with torch.device("meta"):
            model = build_model(model_config(config))
        model = sharded_model(model, config, world.device)
        torch.manual_seed(int(np.random.SeedSequence([config.seed, world.rank]).generate_state(1)[0]))
        return model
    model = build_model(model_config(config))
    if config.init_from and not resume:
        from train.fetch import hub_model
        from train.hf import load_hf_weights

        load_hf_weights(model, hub_model(config.init_from))
    model.to(world.device)
    torch.manual_seed(int(np.random.SeedSequence([config.seed, world.rank]).generate_state(1)[0]))
    return model


def planned(plan, config, trainer, encoding, state, say, wall_start):
    """`plan` with its step count (a time budget's timed here) and warmup; refuses a budget past the mixture's
    epoch caps, or one the run has already spent."""
    start_step, elapsed_before = resumed_at(state)
    if plan.steps is None:
        plan = dataclasses.replace(plan, steps=step_budget(config))
        check_capacity(config, plan, trainer.mixture)  # before calibrating, when the budget is not a time
        if config.max_time:
            elapsed = lambda: elapsed_before + time.perf_counter() - wall_start  # noqa: E731
            plan = first_count(trainer, config, plan, encoding, start_step, elapsed)
            say(report.calibrated(config, plan, trainer.tasks))
    check_capacity(config, plan, trainer.mixture)
    if start_step >= plan.steps:
        raise TrainingError(f"{config.out} already ran its {plan.steps} steps; give a larger --max-steps, --max-tokens "
                            f"or --max-time to continue")
    if plan.warmup_steps is None:
        plan = dataclasses.replace(plan, warmup_steps=settling_steps(plan.steps))
    return plan


def check_capacity(config, plan, mixture):
    if plan.steps and plan.steps * config.tokens_per_step > mixture.capacity():
        raise TrainingError(f"the mixture's max_epochs allow {mixture.capacity():,.0f} train tokens, the budget is "
                            f"{plan.steps * config.tokens_per_step:,}; raise a max_epochs or give a smaller budget")


def begin(config, world, mixture, encoding):
    """The run's first files (rank 0): its directory, its pins on the data it follows, its trained tokenizer."""
    os.makedirs(config.out, exist_ok=True)
    if world.is_main and config.follow_data and config.cooldown_from is None:  # a branch's are its main line's
        pin(config, mixture)
    if world.is_main and config.tokenizer["trained"]:  # each checkpoint copies it: sample, eval, export need no more
        save_directory(encoding, os.path.join(config.out, fmt.TOKENIZER))


def restore(trainer, state, config, folder):
    """A checkpoint's optimizer, gradient scaler and (on as many processes) RNG state, with the options given
    on --resume applied over the saved ones; the metrics past its step dropped."""
    if trainer.sharded or "sharding" in state:
        from train.sharding import restore as restore_shards

        restore_shards(folder, state, trainer.model, trainer.optimizer)
    else:
        trainer.optimizer.load_state_dict(state["optimizer"])
    apply_options(trainer.optimizer, config)
    if trainer.scaler and state.get("scaler"):
        trainer.scaler.load_state_dict(state["scaler"])
    if len(state["rng"]) == trainer.world.size:
        trainer.set_rng_state(state["rng"][trainer.world.rank])
    if trainer.world.is_main:
        truncate_metrics(os.path.join(config.out, "metrics.jsonl"), state["step"])
