"""The training loop: build the model, then step, evaluate, checkpoint and log until the step budget is spent.

Every step is a pure function of (seed, step) and the state saved in a checkpoint, which is what makes a
resumed run log the same losses as an uninterrupted one. Under torchrun each process takes a slice of the
step's windows; one process is a world of size 1 of the same loop.
"""

import concurrent.futures
import contextlib
import dataclasses
import itertools
import json
import math
import os
import shutil
import signal
import sys
import tempfile
import time

import numpy as np
import torch
from tqdm import tqdm

from prepare import format as fmt
from prepare.tokenizer import load_encoding
from train import checkpoint
from train.config import mixture_name, step_budget
from train.data import Mixture, eval_windows, step_windows, to_device
from train.device import autocast, compile_pays_off, peak_flops, pick_dtype
from train.distributed import JobError, init_world
from train.evaluate import windows_loss
from train.generate import sample
from train.memory import check_fits
from train.optim import apply_options, make_optimizer
from train.plot import plot_run, read_metrics
from train.tracking import open_trackers

SAMPLE_PROMPTS = ("", "The")  # "" starts a fresh document after the end-of-text token
# --max-time becomes a step count by timing real steps: two warm-up steps (compilation, first allocations),
# then at least 5 steps and 2 seconds of them, at most 50 steps.
CALIBRATION_WARMUP, CALIBRATION_STEPS, CALIBRATION_SECONDS, CALIBRATION_MAX_STEPS = 2, 5, 2.0, 50


class TrainingError(Exception):
    pass


def lr_at(step, config):
    """Linear warmup to config.lr, then cosine decay to config.min_lr at the last step."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - 1 - config.warmup_steps)
    return config.min_lr + 0.5 * (1 + math.cos(math.pi * min(1.0, progress))) * (config.lr - config.min_lr)


class Trainer:
    """The model, its optimizer and the step they take together, on one process of the world."""

    def __init__(self, model, mixture, config, world):
        self.model, self.mixture, self.config, self.world = model, mixture, config, world
        self.device = world.device
        compiled = torch.compile(model) if config.compile else model
        self.eval_model = compiled
        if world.size > 1:
            ids = [world.device.index] if world.device.type == "cuda" else None
            self.train_model = torch.nn.parallel.DistributedDataParallel(compiled, device_ids=ids)
        else:
            self.train_model = compiled
        self.local_micro_batches = config.micro_batches // world.size
        self.reset_optimizer()

    def reset_optimizer(self):
        self.optimizer = make_optimizer(self.model, self.config, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type) if self.config.dtype == "fp16" else None

    def windows(self, step):
        """(This process's windows of `step`, a contiguous slice of the step's global windows; the dataset of
        each global window)."""
        per_rank = self.local_micro_batches * self.config.batch_size
        rows = slice(self.world.rank * per_rank, (self.world.rank + 1) * per_rank)
        return step_windows(self.mixture, self.config.seed, step, per_rank * self.world.size, rows)

    def step(self, windows, lr, stop_requested=False):
        """One optimizer step at learning rate `lr`. Returns (global mean loss, gradient norm, whether any
        process asked to stop)."""
        config = self.config
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        loss_sum = torch.zeros((), device=self.device)
        local = self.local_micro_batches
        for micro in range(local):
            x, y = to_device(windows[micro * config.batch_size : (micro + 1) * config.batch_size], self.device)
            # Gradients are averaged over processes once per step, on the last micro-batch.
            sync = micro == local - 1 or self.world.size == 1
            with contextlib.nullcontext() if sync else self.train_model.no_sync():
                with autocast(self.device, config.dtype):
                    _, loss = self.train_model(x, y)
                loss = loss / local
                (self.scaler.scale(loss) if self.scaler else loss).backward()
            loss_sum += loss.detach()
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), config.grad_clip or float("inf")).item()
        # One collective carries the loss and the stop request, so every process takes the same decisions.
        loss_total, stops = self.world.sum([loss_sum.item(), float(stop_requested)])
        loss_value = loss_total / self.world.size
        if not math.isfinite(loss_value):
            self.optimizer.zero_grad(set_to_none=True)
            return loss_value, grad_norm, bool(stops)
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss_value, grad_norm, bool(stops)

    def evaluate(self, split):
        """Mean loss over the fixed eval windows of `split`, shared out over processes and summed."""
        rows = slice(self.world.rank, None, self.world.size)
        windows = eval_windows(split, self.config.eval_windows, rows)
        total, count = windows_loss(self.eval_model, windows, self.config.batch_size, self.device, self.config.dtype)
        total, count = self.world.sum([total, count])
        return total / count

    def rng_state(self):
        return {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None}

    def set_rng_state(self, state):
        torch.set_rng_state(state["cpu"])
        if self.device.type == "cuda" and state.get("cuda") is not None:
            torch.cuda.set_rng_state(state["cuda"], self.device)


def dropout_seed(config, rank):
    """Each process's own dropout stream, a function of (seed, rank)."""
    return int(np.random.SeedSequence([config.seed, rank]).generate_state(1)[0])


def sample_lines(model, encoding, config, step):
    """A few continuations of fixed prompts, from a generator of their own so training RNG is untouched."""
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(config.seed)
    model.eval()
    lines = []
    for prompt in SAMPLE_PROMPTS:
        ids = [encoding.eot_token] + encoding.encode_ordinary(prompt)
        with autocast(device, config.dtype):
            new = list(sample(model, ids, 48, temperature=0.8, top_k=50, generator=generator, eot=encoding.eot_token))
        text = prompt + encoding.decode([t for t in new if t < encoding.n_vocab and t != encoding.eot_token])
        lines.append(f"[step {step}] {text!r}")
    model.train()
    return lines


def truncate_metrics(path, last_step):
    """Drop metric lines past the checkpoint a run resumes from, so the log reads as one run."""
    if not os.path.exists(path):
        return
    kept = [line for line in read_metrics(os.path.dirname(path)) if line["step"] <= last_step]
    fmt.write_atomic(path, "".join(json.dumps(line) + "\n" for line in kept).encode())


class StopRequest:
    """Ctrl-C (SIGINT) or SIGTERM asks the loop to stop after the current step and save."""

    def __init__(self):
        self.requested = False

    def __enter__(self):
        self.previous = {s: signal.signal(s, self.handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def handle(self, signum, frame):
        if self.requested:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        for s, handler in self.previous.items():
            signal.signal(s, handler)


def calibrate(trainer, mixture, config, run_dir, encoding):
    """Seconds of (a step, an evaluation with its samples and plot, a checkpoint), measured on real steps
    that are then undone: weights and RNG go back to where they were and the optimizer starts afresh."""
    model = trainer.model
    weights = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    rng = trainer.rng_state()
    times, step, more = [], 0, True
    while more:
        start = time.perf_counter()
        trainer.step(trainer.windows(step)[0], config.lr)
        if step >= CALIBRATION_WARMUP:
            times.append(time.perf_counter() - start)
        step += 1
        more = step < CALIBRATION_WARMUP + CALIBRATION_STEPS or (sum(times) < CALIBRATION_SECONDS and step < CALIBRATION_MAX_STEPS)
        more = trainer.world.broadcast(more)  # every process stops after the same step: each step is a collective
    step_seconds = sorted(times)[len(times) // 2]
    start = time.perf_counter()
    for splits in mixture.splits:
        for split in splits.values():
            if split.windows:
                trainer.evaluate(split)
    if trainer.world.is_main:
        if config.samples:
            sample_lines(model, encoding, config, 0)
        # Beside the run directory, on the same storage: the run writes nothing until nothing can refuse it.
        parent = os.path.dirname(os.path.abspath(run_dir))
        os.makedirs(parent, exist_ok=True)
        scratch = tempfile.mkdtemp(prefix=".calibration-", dir=parent)
        with open(os.path.join(scratch, "metrics.jsonl"), "w") as f:
            f.write('{"step": 0, "tokens": 1, "loss": 1.0, "train_eval_loss": 1.0, "val_loss": 1.0}\n')
        plot_run(scratch)
    eval_seconds = time.perf_counter() - start
    start = time.perf_counter()
    if trainer.world.is_main:
        checkpoint.write_folder(os.path.join(scratch, "checkpoint"), model, {"optimizer": trainer.optimizer.state_dict()}, "{}")
        shutil.rmtree(scratch)
    checkpoint_seconds = time.perf_counter() - start
    model.load_state_dict(weights)
    trainer.set_rng_state(rng)
    trainer.reset_optimizer()
    return trainer.world.broadcast((step_seconds, eval_seconds, checkpoint_seconds))


def steps_for_time(config, seconds_left, costs, at_least=1):
    """The most steps (`at_least` of them) whose steps, evaluations and checkpoints fit in `seconds_left`.
    Every evaluation is counted with a checkpoint, since one that improves on the best so far saves one."""
    step_s, eval_s, ckpt_s = costs
    per_step = step_s + ((eval_s + ckpt_s) / config.eval_every if config.eval_every else 0)
    per_step += ckpt_s / config.ckpt_every if config.ckpt_every else 0
    return max(at_least, int((seconds_left - eval_s - ckpt_s) / per_step))


def fit(config, resume=False, allow_data_change=False, say=print):
    """Train as `config` (a resolved RunConfig) says; returns the last step's metrics."""
    wall_start = time.perf_counter()
    world = init_world(config.device)
    try:
        log = run(config, world, resume, allow_data_change, say if world.is_main else lambda *a, **k: None, wall_start)
        world.finish()
        return log
    finally:
        world.close()


def open_mixture(config, world):
    """The run's datasets, leased. Rank 0 opens the generation in force of each; the others open exactly those,
    so that every process slices the same global batches whatever a prepare publishes meanwhile."""

    def opened(generations):
        try:
            return Mixture(config.data, config.context, generations), None
        except fmt.DatasetError as e:
            return None, str(e)

    mixture, error = opened(None) if world.is_main else (None, None)
    error, generations = world.broadcast((error, mixture and mixture.generations))
    if error is None and not world.is_main:
        mixture, error = opened(generations)
    error = world.first_error(error)
    if error:
        if mixture:
            mixture.close()
        raise JobError(error)
    return mixture


def check_capacity(config, mixture):
    if config.steps and config.steps * config.tokens_per_step > mixture.capacity():
        raise TrainingError(f"the mixture's max_epochs allow {mixture.capacity():,.0f} train tokens, the budget is "
                            f"{config.steps * config.tokens_per_step:,}; raise a max_epochs or give a smaller budget")


def run(config, world, resume, allow_data_change, say, wall_start):
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
    config.tokenizer = dataclasses.asdict(fmt.read_manifest(config.data[0].path).tokenizer)
    shape = checkpoint.model_config(config)
    check_fits(shape, config.batch_size, config.dtype, device)
    # The run reads these snapshots to its end, whatever prepare publishes meanwhile (leases keep their files).
    mixture = open_mixture(config, world)
    config.tokenizer = dataclasses.asdict(mixture.manifest.tokenizer)
    encoding = load_encoding(config.tokenizer["name"])
    fingerprint = mixture.fingerprint()

    torch.manual_seed(config.seed)
    model = checkpoint.build_model(shape)
    if config.init_from and not resume:
        from train.hf import load_hf_weights

        load_hf_weights(model, config.init_from)
    model.to(device)
    torch.manual_seed(dropout_seed(config, world.rank))
    trainer = Trainer(model, mixture, config, world)

    start_step, elapsed_before, state = 0, 0.0, None
    if resume:
        folder = checkpoint.locate(run_dir)
        weights, state = checkpoint.load(folder)
        if world.broadcast(state["data_fingerprint"] != fingerprint) and not allow_data_change:  # rank 0's check decides
            raise JobError(f"{mixture_name(config.data)}: the train data changed since this run started (another generation of a dataset, "
                           f"or other datasets or weights); pass --allow-data-change to resume anyway")
        checkpoint.load_weights(model, weights, folder)
        start_step, elapsed_before = state["step"] + 1, state["elapsed"]

    if config.steps is None:
        config.steps = step_budget(config)
        check_capacity(config, mixture)  # before calibrating, when the budget is not a time
        if config.max_time:
            costs = calibrate(trainer, mixture, config, run_dir, encoding)
            seconds_left = config.max_time - elapsed_before - (time.perf_counter() - wall_start)
            timed = start_step + steps_for_time(config, seconds_left, costs)
            # Rank 0's clock decides: each process started at its own moment, and all must run the same steps.
            config.steps = world.broadcast(min(config.steps or timed, timed))
            config.timing, config.retime_at = list(costs), start_step + settling_steps(config.steps - start_step)
            say(f"--max-time {config.max_time:.0f} s: calibrated {costs[0]:.3f} s per step, {costs[1]:.2f} s per evaluation, "
                f"{costs[2]:.2f} s per checkpoint: {config.steps} steps, timed again at step {config.retime_at}")
    check_capacity(config, mixture)
    if start_step >= config.steps:
        raise TrainingError(f"{run_dir} already ran its {config.steps} steps; give a larger --max-steps, --max-tokens or --max-time to continue")
    if config.warmup_steps is None:
        config.warmup_steps = settling_steps(config.steps)

    first_windows = trainer.windows(start_step)  # a token file damaged under its right size stops the run here
    os.makedirs(run_dir, exist_ok=True)
    if world.is_main:
        fmt.write_atomic(os.path.join(run_dir, "config.json"), (config.to_json() + "\n").encode())
    if state is not None:  # after calibration, which starts a fresh optimizer
        trainer.optimizer.load_state_dict(state["optimizer"])
        apply_options(trainer.optimizer, config)  # options given with --resume win over the saved ones
        if trainer.scaler and state.get("scaler"):
            trainer.scaler.load_state_dict(state["scaler"])
        rng = state["rng"]
        if len(rng) == world.size:
            trainer.set_rng_state(rng[world.rank])
        if world.is_main:
            truncate_metrics(os.path.join(run_dir, "metrics.jsonl"), state["step"])
        say(f"resuming {run_dir} from {os.path.basename(folder)}"
            + ("" if len(rng) == world.size else f" (saved by {len(rng)} processes: dropout masks start afresh)"))
    for source, splits in zip(config.data, mixture.splits):
        if not splits["val"].windows:
            say(f"warning: the val split of {source.path} is shorter than the context; only its train loss is evaluated")
    epochs = mixture.expected_epochs(config.steps * config.tokens_per_step)
    for source, tokens, share, epoch in zip(config.data, mixture.train_tokens, mixture.shares, epochs):
        say(f"{source.path}: {tokens:,.0f} train tokens, weight {share:.3f}, {epoch:.2f} epochs expected in {config.steps} steps"
            + (f" (at most {source.max_epochs:g})" if source.max_epochs else ""))
    say(
        f"{model.num_params() / 1e6:.2f}M parameters, {config.tokens_per_step:,} tokens per step "
        f"({config.batch_size} x {config.context} x {config.micro_batches}"
        f"{f' over {world.size} processes' if world.size > 1 else ''}), {device.type} {config.dtype}"
        f"{', compiled' if config.compile else ''}, {config.steps} steps"
    )
    seen = np.array([(state or {}).get("windows_seen", {}).get(s.name, 0) for s in config.data], np.int64)
    return loop(trainer, config, encoding, fingerprint, start_step, first_windows, elapsed_before, seen, say, wall_start)


def retime(config, world, mixture, step, step_seconds, elapsed):
    """Fix a time budget's step count from the seconds of this session's steps so far (evaluations and
    checkpoints apart), where the calibration before step 0 timed only a few seconds. Only the later half
    counts: a machine's first seconds of work run faster than the rest (measured: 0.245 s per step over the
    first 10 steps of a `tiny-llama` run, 0.31 from step 50 on). Returns (the step count it was, seconds per step,
    steps timed)."""
    measured = step_seconds[len(step_seconds) // 2 :]
    per_step = sum(measured) / len(measured)
    config.timing[0] = per_step  # what the step count now rests on, kept with it
    timed = step + 1 + steps_for_time(config, config.max_time - elapsed, config.timing, at_least=0)
    capacity = mixture.capacity() / config.tokens_per_step  # the steps the mixture's epoch caps allow (inf: no cap)
    before, config.retime_at = config.steps, None
    config.steps = world.broadcast(int(min(step_budget(config) or timed, timed, capacity)))
    return before, per_step, len(measured)


def settling_steps(steps):
    """5% of `steps`, at least 1 and at most 100: the learning rate's warmup, and the steps after which a time
    budget is timed again (the learning rate does not depend on the step count until then)."""
    return max(1, min(100, steps // 20))


def loop(trainer, config, encoding, fingerprint, start_step, first_windows, elapsed_before, seen, say, wall_start):
    """Steps from `start_step` (whose windows are `first_windows`) to the end of the budget; `seen` counts each
    dataset's windows trained on so far."""
    world, model, mixture, run_dir = trainer.world, trainer.model, trainer.mixture, config.out
    names = [s.name for s in config.data]
    weights = mixture.shares
    epochs_seen = lambda log: "epochs " + ", ".join(f"{n} {log[f'epochs/{n}']:.2f}" for n in names)
    flops_per_token = model.flops_per_token()
    peak = peak_flops(world.device, config.dtype)
    pointer = checkpoint.read_pointer(run_dir)
    best = {"val_loss": pointer.get("best_val_loss", float("inf"))}
    elapsed = lambda: elapsed_before + time.perf_counter() - wall_start
    config_json = config.to_json()

    def save(step, val_loss):
        rng = world.gather(trainer.rng_state())  # a collective: every process calls save at the same step
        if world.is_main:
            state = {
                "step": step, "elapsed": elapsed(), "optimizer": trainer.optimizer.state_dict(),
                "scaler": trainer.scaler.state_dict() if trainer.scaler else {}, "rng": rng,
                "data_fingerprint": fingerprint, "world_size": world.size,
                "windows_seen": {name: int(count) for name, count in zip(names, seen)},
            }
            checkpoint.save(run_dir, model, state, config_json, val_loss)

    def evaluate(step, log):
        """Train and val loss per dataset and their means weighted as the mixture (in a mixture of one, the
        dataset's own)."""
        for split, key in (("train", "train_eval_loss"), ("val", "val_loss")):
            losses = {i: trainer.evaluate(splits[split]) for i, splits in enumerate(mixture.splits) if splits[split].windows}
            if losses:
                log[key] = sum(weights[i] * loss for i, loss in losses.items()) / sum(weights[i] for i in losses)
            if len(names) > 1:
                log.update({f"{key}/{names[i]}": loss for i, loss in losses.items()})
        if "val_loss" in log:
            log["val_perplexity"] = math.exp(min(log["val_loss"], 50))
        each = [f"{n} {log[f'val_loss/{n}']:.4f}" for n in names if f"val_loss/{n}" in log]
        say(f"step {step}: train {log['train_eval_loss']:.4f}" + (f", val {log['val_loss']:.4f}" if "val_loss" in log else "")
            + (f" ({', '.join(each)})" if each else "")
            + "; " + epochs_seen(log))
        if config.samples and world.is_main:
            lines = sample_lines(model, encoding, config, step)
            with open(os.path.join(run_dir, "samples.txt"), "a") as f:
                f.write("\n".join(lines) + "\n")
            for line in lines:
                say(line)

    trackers = open_trackers(config, run_dir) if world.is_main else []
    metrics = open(os.path.join(run_dir, "metrics.jsonl"), "a") if world.is_main else None
    prefetch = concurrent.futures.ThreadPoolExecutor(1)  # the next step's windows are read while this one runs
    pending = concurrent.futures.Future()
    pending.set_result(first_windows)
    bar = tqdm(total=config.steps, initial=start_step, disable=not (sys.stderr.isatty() and world.is_main),
               dynamic_ncols=True, unit="step")
    log, step, session_start, warned = {}, start_step, time.perf_counter(), False
    step_seconds = []  # each step of this session, evaluations and checkpoints apart
    with StopRequest() as stop:
        for step in itertools.count(start_step):  # to config.steps, which re-timing a time budget may move
            t0 = time.perf_counter()
            windows, which = pending.result()
            seen += np.bincount(which, minlength=len(seen))
            data_wait = time.perf_counter() - t0
            pending = prefetch.submit(trainer.windows, step + 1)
            lr = lr_at(step, config)
            loss, grad_norm, stopping = trainer.step(windows, lr, stop.requested)
            if not math.isfinite(loss):
                last = checkpoint.read_pointer(run_dir).get("latest")
                raise TrainingError(
                    f"loss became {loss} at step {step} (lr {lr:.3g}, grad norm {grad_norm:.3g}); "
                    f"try a lower --lr or --dtype fp32. Last good checkpoint: {last or 'none'} in {run_dir}"
                )
            seconds = time.perf_counter() - t0
            step_seconds.append(seconds)
            if step + 1 == config.retime_at:
                before, per_step, timed = retime(config, world, mixture, step, step_seconds, elapsed())
                config_json = config.to_json()
                if world.is_main:
                    fmt.write_atomic(os.path.join(run_dir, "config.json"), (config_json + "\n").encode())
                bar.total = config.steps
                say(f"--max-time: {per_step:.3f} s per step over steps {step + 1 - timed}-{step}: {config.steps} steps (was {before})")
            log = {
                "step": step, "tokens": (step + 1) * config.tokens_per_step, "loss": loss, "lr": lr,
                "grad_norm": grad_norm, "tokens_per_sec": config.tokens_per_step / seconds,
                "flops_per_sec": config.tokens_per_step * flops_per_token / seconds, "data_wait_sec": data_wait,
                **{f"epochs/{n}": count * config.context / tokens for n, count, tokens in zip(names, seen, mixture.train_tokens)},
            }
            if peak:
                log["mfu"] = log["flops_per_sec"] / (peak * world.size)
            done = step + 1 >= config.steps or stopping
            evaluated = (config.eval_every and step % config.eval_every == 0 and step) or done
            if evaluated:
                evaluate(step, log)
            log["elapsed_sec"] = elapsed()
            if world.is_main:  # before the checkpoint: a resume from it must find this step's line
                metrics.write(json.dumps(log) + "\n")
                metrics.flush()
                for track in trackers:
                    track(log)
            improved = log.get("val_loss", float("inf")) < best["val_loss"]
            if improved or (config.ckpt_every and (step + 1) % config.ckpt_every == 0) or done:
                best["val_loss"] = min(best["val_loss"], log.get("val_loss", float("inf")))
                save(step, log.get("val_loss"))
            if evaluated and world.is_main:
                plot_run(run_dir)
            if evaluated and config.max_time and not warned and not done:
                per_step = (time.perf_counter() - session_start) / (step + 1 - start_step)
                projected = log["elapsed_sec"] + per_step * (config.steps - step - 1)
                if projected > 1.05 * config.max_time:
                    warned = True
                    say(f"warning: at the {per_step:.3f} s per step measured so far this run will take {projected:.0f} s, "
                        f"over its --max-time of {config.max_time:.0f} s; it runs on to the end of its schedule (step {config.steps})")
            bar.set_postfix_str(
                f"loss {loss:.3f} lr {lr:.2e} {log['tokens_per_sec']:,.0f} tok/s "
                + (f"MFU {log['mfu']:.1%}" if peak else f"{log['flops_per_sec'] / 1e9:.0f} GFLOP/s")
            )
            bar.update(1)
            if done:
                break
    bar.close()
    if metrics:
        metrics.close()
    prefetch.shutdown(cancel_futures=True)
    if stopping:
        say(f"stopped at step {step}; checkpoint saved, continue with --resume")
        raise KeyboardInterrupt
    session = time.perf_counter() - session_start
    steps_run = step + 1 - start_step
    say(
        f"done: {step + 1} steps, {(step + 1) * config.tokens_per_step:,} tokens in {log['elapsed_sec']:.0f} s of wall time "
        + (f"(--max-time {config.max_time:.0f} s) " if config.max_time else "")
        + f"({steps_run * config.tokens_per_step / max(session, 1e-9):,.0f} tokens/s, {session / steps_run:.3f} s per step "
        f"this session, evaluations and checkpoints included); "
        f"train {log.get('train_eval_loss', float('nan')):.4f}, val {log.get('val_loss', float('nan')):.4f}; "
        + epochs_seen(log)
    )
    return log
