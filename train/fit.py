"""The training loop: build the model, then step, evaluate, checkpoint and log until the step budget is spent.

Every step is a pure function of (seed, step) and the state saved in a checkpoint, which is what makes a
resumed run log the same losses as an uninterrupted one. Under torchrun each process takes a slice of the
step's windows; one process is a world of size 1 of the same loop.
"""

import concurrent.futures
import dataclasses
import itertools
import json
import math
import os
import sys
import time

import numpy as np
import torch
from tqdm import tqdm

from prepare import format as fmt
from prepare.tokenizer import open_encoding, save_directory, token_bytes
from train import checkpoint
from train.budget import first_count, retime, settling_steps
from train.config import mixture_name, step_budget
from train.device import compile_pays_off, peak_flops, pick_dtype
from train.distributed import JobError, StopRequest, init_world
from train.downstream import load_eval_tasks
from train.generate import sample_lines
from train.history import History, first_era, open_mixture, pin, resume_eras
from train.memory import check_fits
from train.models import build_model, model_config
from train.optim import apply_options
from train.plot import plot_run, truncate_metrics
from train.schedule import lr_at, momentum_at
from train.tracking import check_trackers, open_trackers
from train.trainer import Trainer


class TrainingError(Exception):
    pass


def dropout_seed(config, rank):
    """Each process's own dropout stream, a function of (seed, rank)."""
    return int(np.random.SeedSequence([config.seed, rank]).generate_state(1)[0])


def fit(config, resume=False, allow_data_change=False, say=print, session=(None, None), generations=None):
    """Train as `config` (a resolved RunConfig) says; returns the last step's metrics. `session`: (steps, seconds)
    of a budget for this session alone, if given; `generations`: those of the datasets to train on (a replay's),
    else those in force."""
    wall_start = time.perf_counter()
    world = init_world(config.device, config.collective_timeout)
    try:
        log = run(config, world, resume, allow_data_change, say if world.is_main else lambda *a, **k: None, wall_start, session,
                  generations)
        world.finish()
        return log
    finally:
        world.close()


def check_capacity(config, mixture):
    if config.steps and config.steps * config.tokens_per_step > mixture.capacity():
        raise TrainingError(f"the mixture's max_epochs allow {mixture.capacity():,.0f} train tokens, the budget is "
                            f"{config.steps * config.tokens_per_step:,}; raise a max_epochs or give a smaller budget")


def run(config, world, resume, allow_data_change, say, wall_start, session, generations):
    """Every check that can refuse the run comes before its first file is written."""
    run_dir, device = config.out, world.device
    config.dtype = pick_dtype(config.dtype, device)
    if config.compile is None:
        config.compile = compile_pays_off(device)
    if config.micro_batches % world.size:
        raise TrainingError(
            f"{config.micro_batches} micro-batches of {config.batch_size} x {config.context} tokens per step do not "
            f"split over {world.size} processes; give --tokens-per-step a multiple of "
            f"{world.size * config.batch_size * config.context}"
        )
    if os.path.exists(run_dir) and not os.path.isdir(run_dir):
        raise TrainingError(f"--out {run_dir}: exists and is not a directory")
    # A step that cannot fit is refused before anything is opened, with the first dataset's vocabulary.
    vocab_size = fmt.read_manifest(config.data[0].path).tokenizer.vocab_size
    check_fits(model_config(config, vocab_size=vocab_size), config.batch_size, config.dtype, device)
    start_step, elapsed_before, state = 0, 0.0, None
    if resume:
        folder = checkpoint.locate(run_dir)
        weights, state = checkpoint.load(folder)
        start_step, elapsed_before = state["step"] + 1, state["elapsed"]
    # The run reads these snapshots to its end, whatever prepare publishes meanwhile (leases keep their files);
    # a cool-down branch goes on with its checkpoint's generations.
    branched = state and config.cooldown_from is not None and state.get("history")
    mixture = open_mixture(config, world, branched[-1]["generations"] if branched else generations)
    config.tokenizer = dataclasses.asdict(mixture.manifest.tokenizer)
    shape = model_config(config)
    encoding = open_encoding(config.tokenizer, os.path.join(config.data[0].path, fmt.TOKENIZER))
    fingerprint = mixture.fingerprint()
    tasks = load_eval_tasks(config, encoding, world)

    torch.manual_seed(config.seed)
    model = build_model(shape)
    if config.init_from and not resume:
        from train.fetch import hub_model
        from train.hf import load_hf_weights

        load_hf_weights(model, hub_model(config.init_from))
    model.to(device)
    torch.manual_seed(dropout_seed(config, world.rank))
    eras = [first_era(mixture.generations)]
    if resume:
        changed = world.broadcast(state["data_fingerprint"] != fingerprint)  # rank 0's check decides
        if changed and not (allow_data_change or config.follow_data):
            raise JobError(f"{mixture_name(config.data)}: the train data changed since this run started (another generation of a dataset, "
                           f"or other datasets or weights); pass --follow-data to move to it, or --allow-data-change to resume anyway")
        checkpoint.load_weights(model, weights, folder)
        eras = resume_eras(state, mixture, not changed, start_step, config, config.micro_batches * config.batch_size)
        if session != (None, None):  # this session's budget replaces the run's
            config.max_steps, config.max_tokens, config.steps = session[0] and start_step + session[0], None, None
            config.max_time, config.timing, config.retime_at = session[1] and elapsed_before + session[1], None, None
    history = History(eras, mixture, config, config.micro_batches * config.batch_size)
    trainer = Trainer(model, mixture, history, config, world, token_bytes(encoding), tasks)

    if config.steps is None:
        config.steps = step_budget(config)
        check_capacity(config, mixture)  # before calibrating, when the budget is not a time
        if config.max_time:
            first_count(trainer, config, encoding, start_step, lambda: elapsed_before + time.perf_counter() - wall_start)
            say(f"--max-time {config.max_time:.0f} s: calibrated {config.timing[0]:.3f} s per step, {config.timing[1]:.2f} s per "
                f"evaluation, {config.timing[2]:.2f} s per checkpoint" + (f", {config.timing[3]:.2f} s per task scoring" if tasks else "")
                + f": {config.steps} steps, timed again at step {config.retime_at}")
    check_capacity(config, mixture)
    if start_step >= config.steps:
        raise TrainingError(f"{run_dir} already ran its {config.steps} steps; give a larger --max-steps, --max-tokens or --max-time to continue")
    if config.warmup_steps is None:
        config.warmup_steps = settling_steps(config.steps)

    first_windows = trainer.windows(start_step)  # a token file damaged under its right size stops the run here
    check_trackers(config)
    os.makedirs(run_dir, exist_ok=True)
    if world.is_main and config.follow_data and config.cooldown_from is None:  # a branch's generations are its main line's
        pin(config, mixture)
    if world.is_main:
        fmt.write_atomic(os.path.join(run_dir, "config.json"), (config.to_json() + "\n").encode())
        if config.tokenizer["trained"]:  # each checkpoint copies it: sample, eval and export need nothing else
            save_directory(encoding, os.path.join(run_dir, fmt.TOKENIZER))
    if state is not None:  # after calibration, which starts a fresh optimizer
        restore(trainer, state, config)
        if world.is_main:
            truncate_metrics(os.path.join(run_dir, "metrics.jsonl"), state["step"])
        saved_by = len(state["rng"])
        say(f"resuming {run_dir} from {os.path.basename(folder)}"
            + ("" if saved_by == world.size else f" (saved by {saved_by} processes: dropout masks start afresh)"))
    say_plan(trainer, config, say)
    seen = np.array([(state or {}).get("windows_seen", {}).get(s.name, 0) for s in config.data], np.int64)
    session = Session(trainer, config, encoding, fingerprint, start_step, elapsed_before, seen, say, wall_start)
    return session.run(first_windows)


def restore(trainer, state, config):
    """A checkpoint's optimizer, gradient scaler and (on as many processes) RNG state, with the options given
    on --resume applied over the saved ones."""
    trainer.optimizer.load_state_dict(state["optimizer"])
    apply_options(trainer.optimizer, config)
    if trainer.scaler and state.get("scaler"):
        trainer.scaler.load_state_dict(state["scaler"])
    if len(state["rng"]) == trainer.world.size:
        trainer.set_rng_state(state["rng"][trainer.world.rank])


def say_plan(trainer, config, say):
    """What the run is about to do: each dataset's share and expected epochs, the model, the step."""
    mixture, world = trainer.mixture, trainer.world
    for source, splits in zip(config.data, mixture.splits):
        if not splits["val"].windows:
            say(f"warning: the val split of {source.path} is shorter than the context; only its train loss is evaluated")
    epochs = mixture.expected_epochs(config.steps * config.tokens_per_step)
    for source, tokens, share, epoch in zip(config.data, mixture.train_tokens, mixture.shares, epochs):
        say(f"{source.path}: {tokens:,.0f} train tokens, weight {share:.3f}, {epoch:.2f} epochs expected in {config.steps} steps"
            + (f" (at most {source.max_epochs:g})" if source.max_epochs else ""))
    say(
        f"{trainer.model.num_params() / 1e6:.2f}M parameters, {config.tokens_per_step:,} tokens per step "
        f"({config.batch_size} x {config.context} x {config.micro_batches}"
        f"{f' over {world.size} processes' if world.size > 1 else ''}), {world.device.type} {config.dtype}"
        f"{', compiled' if config.compile else ''}, {config.steps} steps"
    )


class Session:
    """One process's part of a run from its start or resume step to its end: the steps, and what each step
    writes (metrics, evaluations, samples, checkpoints, the plot). Rank 0 alone writes files."""

    def __init__(self, trainer, config, encoding, fingerprint, start_step, elapsed_before, seen, say, wall_start):
        self.trainer, self.config, self.encoding, self.fingerprint = trainer, config, encoding, fingerprint
        self.world, self.mixture, self.run_dir = trainer.world, trainer.mixture, config.out
        self.start_step, self.elapsed_before, self.seen, self.say, self.wall_start = start_step, elapsed_before, seen, say, wall_start
        self.names = [s.name for s in config.data]
        self.flops_per_token = trainer.model.flops_per_token()
        self.peak = peak_flops(self.world.device, config.dtype)
        self.generations = self.mixture.generations
        pointer = checkpoint.read_pointer(self.run_dir)  # the best is the best on these generations' val split
        same = pointer.get("best_generations", self.generations) == self.generations
        self.best_val_loss = pointer.get("best_val_loss", float("inf")) if same else float("inf")
        self.config_json = config.to_json()
        self.step_seconds = []  # each step of this session, evaluations and checkpoints apart
        self.started, self.warned = time.perf_counter(), False

    def elapsed(self):
        """Seconds of the whole run so far, earlier sessions included."""
        return self.elapsed_before + time.perf_counter() - self.wall_start

    def run(self, first_windows):
        config, world, trainer = self.config, self.world, self.trainer
        trackers = open_trackers(config, self.run_dir) if world.is_main else []
        metrics = open(os.path.join(self.run_dir, "metrics.jsonl"), "a") if world.is_main else None
        prefetch = concurrent.futures.ThreadPoolExecutor(1)  # the next step's windows are read while this one runs
        pending = concurrent.futures.Future()
        pending.set_result(first_windows)
        bar = tqdm(total=config.steps, initial=self.start_step, disable=not (sys.stderr.isatty() and world.is_main),
                   dynamic_ncols=True, unit="step")
        with StopRequest() as stop:
            # Each step is queued before the previous one's values are read (trainer.StepValues), so a GPU never
            # waits for the host; a step whose evaluation, scoring, checkpoint or re-timing needs its weights, and
            # the last, is read at once, before the next step changes them.
            waiting, stopping = None, False  # a step queued but not yet read: (its finish's arguments, its values)
            for step in itertools.count(self.start_step):  # to config.steps, which re-timing a time budget may move
                t0 = time.perf_counter()
                windows, which = pending.result()
                self.seen += np.bincount(which, minlength=len(self.seen))
                data_wait = time.perf_counter() - t0
                pending = prefetch.submit(trainer.windows, step + 1)
                lr = lr_at(step, config)
                values = trainer.step(windows, lr, momentum_at(step, config))
                previous = trainer.values(waiting[1], stop.requested) if waiting else None
                asked = bool(previous and previous[2])  # a stop asked for meanwhile: this step, already taken, is the last
                now = asked or self.needs_weights(step)
                current = trainer.values(values, stop.requested or asked) if now else None
                # This iteration's time, evaluations and checkpoints apart: on a CPU this step's; on a GPU the wait
                # for the previous one while this one is queued. Either way the seconds add up to the run's.
                entry = (step, lr, data_wait, self.seen.copy(), time.perf_counter() - t0)
                if waiting:
                    self.finish(*waiting[0], (*previous[:2], False), metrics, trackers, bar)
                waiting = None if now else (entry, values)
                if now:
                    stopping = self.finish(*entry, current, metrics, trackers, bar)
                    if stopping or step + 1 >= config.steps:
                        break
        bar.close()
        if metrics:
            metrics.close()
        prefetch.shutdown(cancel_futures=True)
        if stopping:
            self.say(f"stopped at step {step}; checkpoint saved, continue with --resume")
            raise KeyboardInterrupt
        self.say_done(step, self.log)
        reached, new = trainer.history.reached(step + 1)
        if new:
            self.say(f"new documents: {reached:,} of the {new:,} added since the last session drawn in full"
                     + ("" if reached == new else "; the next session begins with the rest"))
        return self.log

    def is_eval_step(self, step):
        """Whether `step` is one of --eval-every's (the last step always evaluates too)."""
        return bool(self.config.eval_every and step % self.config.eval_every == 0 and step)

    def is_tasks_step(self, step):
        """Whether the downstream tasks are scored after `step` (and after the last)."""
        config = self.config
        return bool(self.trainer.tasks and config.tasks_every and step % config.tasks_every == 0 and step)

    def is_checkpoint_step(self, step):
        """Whether --ckpt-every saves after `step` (an improved val loss and the last step save too)."""
        return bool(self.config.ckpt_every and (step + 1) % self.config.ckpt_every == 0)

    def needs_weights(self, step):
        """Whether what follows `step` (an evaluation, a scoring of the tasks, a checkpoint, the re-timing of a
        time budget, the end) needs its values or weights before the next step runs."""
        config = self.config
        return (step + 1 >= config.steps or step + 1 == config.retime_at or self.is_eval_step(step)
                or self.is_tasks_step(step) or self.is_checkpoint_step(step))

    def finish(self, step, lr, data_wait, seen, seconds, read, metrics, trackers, bar):
        """Everything a step leads to once its values are `read` (trainer.values): its metrics line, evaluation,
        scoring, checkpoint and plot. Returns whether the run stops here (a process asked to)."""
        config, world, trainer = self.config, self.world, self.trainer
        loss, grad_norm, stopping = read
        if not math.isfinite(loss):
            last = checkpoint.read_pointer(self.run_dir).get("latest")
            raise TrainingError(
                f"loss became {loss} at step {step} (lr {lr:.3g}, grad norm {grad_norm:.3g}); "
                f"try a lower --lr or --dtype fp32. Last good checkpoint: {last or 'none'} in {self.run_dir}"
            )
        self.step_seconds.append(seconds)
        if step + 1 == config.retime_at:
            self.retime(step, bar)
        log = self.step_log(step, loss, lr, grad_norm, seconds, data_wait, seen)
        done = step + 1 >= config.steps or stopping
        evaluated = self.is_eval_step(step) or done
        if evaluated:
            self.evaluate(step, log)
        if trainer.tasks and (self.is_tasks_step(step) or done):
            self.score_tasks(step, log)
        log["elapsed_sec"] = self.elapsed()
        if world.is_main:  # before the checkpoint: a resume from it must find this step's line
            with fmt.naming(metrics.name):  # a full disk names the file
                metrics.write(json.dumps(log) + "\n")
                metrics.flush()
            for track in trackers:
                track(log)
        improved = log.get("val_loss", float("inf")) < self.best_val_loss
        if improved or self.is_checkpoint_step(step) or done:
            self.best_val_loss = min(self.best_val_loss, log.get("val_loss", float("inf")))
            self.save(step, log.get("val_loss"), seen)
        if evaluated and world.is_main:
            plot_run(self.run_dir)
        if evaluated and config.max_time and not done:
            self.warn_if_overrunning(step, log)
        bar.set_postfix_str(
            f"loss {loss:.3f} lr {lr:.2e} {log['tokens_per_sec']:,.0f} tok/s "
            + (f"MFU {log['mfu']:.1%}" if self.peak else f"{log['flops_per_sec'] / 1e9:.0f} GFLOP/s")
        )
        bar.update(1)
        self.log = log
        return stopping

    def step_log(self, step, loss, lr, grad_norm, seconds, data_wait, seen):
        """A step's metrics line, before any evaluation; `seen`: the windows drawn from each dataset so far."""
        config = self.config
        log = {
            "step": step, "tokens": (step + 1) * config.tokens_per_step, "loss": loss, "lr": lr,
            "grad_norm": grad_norm, "tokens_per_sec": config.tokens_per_step / seconds,
            "flops_per_sec": config.tokens_per_step * self.flops_per_token / seconds, "data_wait_sec": data_wait,
            **{f"epochs/{n}": count * config.context / tokens for n, count, tokens in zip(self.names, seen, self.mixture.train_tokens)},
            **{f"generation/{n}": g for n, g in zip(self.names, self.generations)},
        }
        if self.peak:
            log["mfu"] = log["flops_per_sec"] / (self.peak * self.world.size)
        return log

    def retime(self, step, bar):
        """Fix a time budget's step count from this session's steps (train/budget.py), and keep it."""
        before, per_step, timed, left = retime(self.config, self.world, self.mixture, step, self.step_seconds, self.elapsed())
        self.config_json = self.config.to_json()
        if self.world.is_main:
            fmt.write_atomic(os.path.join(self.run_dir, "config.json"), (self.config_json + "\n").encode())
        bar.total = self.config.steps
        self.say(f"--max-time: {per_step:.3f} s per step over steps {step + 1 - timed}-{step}: {self.config.steps} steps (was {before}; "
                 f"{left:.3f} s left)" + (f"; timed again at step {self.config.retime_at}" if self.config.retime_at else ""))

    def evaluate(self, step, log):
        """Train and val loss per dataset and their means weighted as the mixture (in a mixture of one, the
        dataset's own); samples of the model at this step."""
        weights, names = self.mixture.shares, self.names
        for split, prefix in (("train", "train_eval"), ("val", "val")):
            scores = {i: self.trainer.evaluate(splits[split]) for i, splits in enumerate(self.mixture.splits) if splits[split].windows}
            for unit in ("loss", "bpb"):
                values = {i: getattr(score, unit) for i, score in scores.items()}
                if values:
                    log[f"{prefix}_{unit}"] = sum(weights[i] * v for i, v in values.items()) / sum(weights[i] for i in values)
                if len(names) > 1:
                    log.update({f"{prefix}_{unit}/{names[i]}": v for i, v in values.items()})
        if "val_loss" in log:
            log["val_perplexity"] = math.exp(min(log["val_loss"], 50))
        each = [f"{n} {log[f'val_loss/{n}']:.4f}" for n in names if f"val_loss/{n}" in log]
        self.say(f"step {step}: train {log['train_eval_loss']:.4f}" + (f", val {log['val_loss']:.4f}" if "val_loss" in log else "")
                 + (f" ({', '.join(each)})" if each else "")
                 + (f", val {log['val_bpb']:.4f} bits per byte" if "val_bpb" in log else "") + "; " + self.epochs_seen(log))
        if self.config.samples and self.world.is_main:
            lines = sample_lines(self.trainer.model, self.encoding, self.config, step)
            path = os.path.join(self.run_dir, "samples.txt")
            with fmt.naming(path), open(path, "a") as f:
                f.write("\n".join(lines) + "\n")
            for line in lines:
                self.say(line)

    def score_tasks(self, step, log):
        """Downstream accuracies on the run's fixed items: hellaswag/acc, hellaswag/acc_norm, core/<task>, core."""
        figures = self.trainer.score_tasks()
        log.update(figures)
        shown = [f"{name} {figures[name]:.4f}" for name in ("hellaswag/acc_norm", "core") if name in figures]
        self.say(f"step {step}: " + ", ".join(shown))

    def save(self, step, val_loss, seen):
        trainer, world = self.trainer, self.world
        rng = world.gather(trainer.rng_state())  # a collective: every process calls save at the same step
        if world.is_main:
            state = {
                "step": step, "elapsed": self.elapsed(), "optimizer": trainer.optimizer.state_dict(),
                "scaler": trainer.scaler.state_dict() if trainer.scaler else {}, "rng": rng,
                "data_fingerprint": self.fingerprint, "world_size": world.size,
                "windows_seen": {name: int(count) for name, count in zip(self.names, seen)},
                "history": trainer.history.eras,
            }
            checkpoint.save(self.run_dir, trainer.model, state, self.config_json, val_loss, self.generations)

    def warn_if_overrunning(self, step, log):
        """Say once if the pace so far would overrun the time budget by more than 5%."""
        config = self.config
        per_step = (time.perf_counter() - self.started) / (step + 1 - self.start_step)
        projected = log["elapsed_sec"] + per_step * (config.steps - step - 1)
        if projected > 1.05 * config.max_time and not self.warned:
            self.warned = True
            self.say(f"warning: at the {per_step:.3f} s per step measured so far this run will take {projected:.0f} s, "
                     f"over its --max-time of {config.max_time:.0f} s; it runs on to the end of its schedule (step {config.steps})")

    def epochs_seen(self, log):
        return "epochs " + ", ".join(f"{n} {log[f'epochs/{n}']:.2f}" for n in self.names)

    def say_done(self, step, log):
        config = self.config
        session = time.perf_counter() - self.started
        steps_run = step + 1 - self.start_step
        self.say(
            f"done: {step + 1} steps, {(step + 1) * config.tokens_per_step:,} tokens in {log['elapsed_sec']:.0f} s of wall time "
            + (f"(--max-time {config.max_time:.0f} s) " if config.max_time else "")
            + f"({steps_run * config.tokens_per_step / max(session, 1e-9):,.0f} tokens/s, {session / steps_run:.3f} s per step "
            f"this session, evaluations and checkpoints included); "
            f"train {log.get('train_eval_loss', float('nan')):.4f}, val {log.get('val_loss', float('nan')):.4f} "
            f"({log.get('val_bpb', float('nan')):.4f} bits per byte); " + self.epochs_seen(log)
        )
