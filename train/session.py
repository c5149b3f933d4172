"""The loop of a run: one process's steps from its start or resume step to the plan's last, and what each leads
to (an evaluation, a scoring of the tasks, a checkpoint, a re-timing of a time budget). A step's values are read
once the next step is queued, so that a GPU never waits for the host. What it tells and writes as it goes is the
report's (train/report.py)."""

import concurrent.futures
import itertools
import math
import time

import numpy as np

from train import budget, checkpoint, sharding
from train.config import record, write_config
from train.device import peak_flops
from train.distributed import StopRequest
from train.generate import sample_lines
from train.report import FitResult, Report
from train.schedule import lr_at, momentum_at


class TrainingError(Exception):
    """The run cannot go on as asked; the message says what to change."""


def resumed_at(state):
    """(The first step, the run's seconds so far) of a session from checkpoint `state` (None: a new run)."""
    return (state["step"] + 1, state["elapsed"]) if state else (0, 0.0)


class Session:
    """One process's part of a run, trained as `config` and `plan` say from checkpoint `state` (None: from step 0).
    Rank 0 alone writes files."""

    def __init__(self, trainer, config, plan, encoding, fingerprint, state, say, wall_start):
        self.trainer, self.config, self.plan = trainer, config, plan
        self.encoding, self.fingerprint = encoding, fingerprint
        self.world, self.mixture, self.run_dir = trainer.world, trainer.mixture, config.out
        self.start_step, self.elapsed_before = resumed_at(state)
        self.names = [s.name for s in config.data]
        seen = (state or {}).get("windows_seen", {})
        self.seen = np.array([seen.get(name, 0) for name in self.names], np.int64)  # windows drawn from each dataset
        self.say, self.wall_start = say, wall_start
        self.flops_per_token = trainer.model.flops_per_token()
        self.peak = peak_flops(self.world.device, config.dtype)
        self.generations = self.mixture.generations
        pointer = checkpoint.read_pointer(self.run_dir)  # the best is the best on these generations' val split
        same = pointer.get("best_generations", self.generations) == self.generations
        self.best_val_loss = pointer.get("best_val_loss", float("inf")) if same else float("inf")
        self.report = Report(config, self.world, say, self.start_step)
        self.step_seconds = []  # each step of this session, evaluations and checkpoints apart
        self.started, self.warned = time.perf_counter(), False

    def elapsed(self):
        """Seconds of the whole run so far, earlier sessions included."""
        return self.elapsed_before + time.perf_counter() - self.wall_start

    def record(self):
        """config.json: the configuration and step plan the run goes on with (and every checkpoint's copy)."""
        self.config_json = write_config(self.run_dir, self.config, self.plan) if self.world.is_main else None

    def run(self, first_windows, first_wait=0.0):
        """Train to the plan's last step, or until a process is asked to stop; returns the session's FitResult.
        `first_wait`: the seconds the first step's windows took to read (its data wait, before the loop)."""
        self.record()
        self.report.open(record(self.config, self.plan), self.plan.steps)
        try:
            with StopRequest() as stop:
                step, stopping = self.steps(first_windows, stop, first_wait)
        finally:
            self.report.close()
        if stopping:
            self.report.stopped(step)
            raise KeyboardInterrupt
        result = FitResult(step + 1, self.config.tokens_per_step, self.log, self.config.max_time,
                           step + 1 - self.start_step, time.perf_counter() - self.started,
                           self.trainer.history.reached(step + 1))
        self.report.done(result)
        return result

    def steps(self, first_windows, stop, first_wait):
        """The loop; returns (the last step, whether a stop was asked for). Each step is queued before the previous
        one's values are read (trainer.StepValues); a step whose evaluation, scoring, checkpoint or re-timing
        needs its weights, and the last, is read at once, before the next step changes them."""
        config, trainer = self.config, self.trainer
        prefetch = concurrent.futures.ThreadPoolExecutor(1)  # the next step's windows are read while this one runs
        pending = concurrent.futures.Future()
        pending.set_result(first_windows)
        waiting = None  # a step queued but not yet read: (its finish's arguments, its values)
        try:
            for step in itertools.count(self.start_step):  # to the plan's last step, which a re-timing may move
                t0 = time.perf_counter()
                windows, which = pending.result()
                self.seen += np.bincount(which, minlength=len(self.seen))
                data_wait = time.perf_counter() - t0 + (first_wait if step == self.start_step else 0.0)
                pending = prefetch.submit(trainer.windows, step + 1)
                lr = lr_at(step, config, self.plan)
                values = trainer.step(windows, lr, momentum_at(step, config, self.plan))
                previous = trainer.values(waiting[1], stop.requested) if waiting else None
                # A stop asked for meanwhile: this step, already taken, is the last.
                asked = bool(previous and previous[2])
                now = asked or self.needs_weights(step)
                current = trainer.values(values, stop.requested or asked) if now else None
                # This iteration's time, evaluations and checkpoints apart: on a CPU this step's; on a GPU the wait
                # for the previous one while this one is queued. Either way the seconds add up to the run's.
                entry = (step, lr, data_wait, self.seen.copy(), time.perf_counter() - t0)
                if waiting:
                    self.finish(*waiting[0], (*previous[:2], False))
                waiting = None if now else (entry, values)
                if now:
                    stopping = self.finish(*entry, current)
                    if stopping or step + 1 >= self.plan.steps:
                        return step, stopping
        finally:
            prefetch.shutdown(cancel_futures=True)

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
        return (step + 1 >= self.plan.steps or step + 1 == self.plan.retime_at or self.is_eval_step(step)
                or self.is_tasks_step(step) or self.is_checkpoint_step(step))

    def finish(self, step, lr, data_wait, seen, seconds, read):
        """Everything a step leads to once its values are `read` (trainer.values): its metrics line, evaluation,
        scoring, checkpoint and plot. Returns whether the run stops here (a process asked to)."""
        loss, grad_norm, stopping = read
        if not math.isfinite(loss):
            last = checkpoint.read_pointer(self.run_dir).get("latest")
            raise TrainingError(
                f"loss became {loss} at step {step} (lr {lr:.3g}, grad norm {grad_norm:.3g}); "
                f"try a lower --lr or --dtype fp32. Last good checkpoint: {last or 'none'} in {self.run_dir}"
            )
        self.step_seconds.append(seconds)
        if step + 1 == self.plan.retime_at:
            self.retime(step)
        log = self.step_log(step, loss, lr, grad_norm, seconds, data_wait, seen)
        done = step + 1 >= self.plan.steps or stopping
        evaluated = self.is_eval_step(step) or done
        if evaluated:
            self.evaluate(step, log)
        if self.trainer.tasks and (self.is_tasks_step(step) or done):
            self.score_tasks(step, log)
        log["elapsed_sec"] = self.elapsed()
        self.report.line(log)  # before the checkpoint: a resume from it must find this step's line
        improved = log.get("val_loss", float("inf")) < self.best_val_loss
        if improved or self.is_checkpoint_step(step) or done:
            self.best_val_loss = min(self.best_val_loss, log.get("val_loss", float("inf")))
            self.save(step, log.get("val_loss"), seen)
        if evaluated:
            self.report.plot()
        if evaluated and self.config.max_time and not done:
            self.warn_if_overrunning(step, log)
        self.report.advance(log)
        self.log = log
        return stopping

    def step_log(self, step, loss, lr, grad_norm, seconds, data_wait, seen):
        """A step's metrics line, before any evaluation; `seen`: the windows drawn from each dataset so far."""
        config = self.config
        tokens = zip(self.names, seen, self.mixture.train_tokens)
        log = {
            "step": step, "tokens": (step + 1) * config.tokens_per_step, "loss": loss, "lr": lr,
            "grad_norm": grad_norm, "tokens_per_sec": config.tokens_per_step / seconds,
            "flops_per_sec": config.tokens_per_step * self.flops_per_token / seconds, "data_wait_sec": data_wait,
            **{f"epochs/{n}": count * config.context / train_tokens for n, count, train_tokens in tokens},
            **{f"generation/{n}": g for n, g in zip(self.names, self.generations)},
        }
        if self.peak:
            log["mfu"] = log["flops_per_sec"] / (self.peak * self.world.size)
        return log

    def retime(self, step):
        """A time budget's step count fixed again from this session's steps (train/budget.py), and recorded."""
        before = self.plan.steps
        self.plan, per_step, timed, left = budget.retime(self.config, self.plan, self.world, self.mixture, step,
                                                         self.step_seconds, self.elapsed())
        self.record()
        self.report.retimed(step, per_step, timed, before, self.plan, left)

    def evaluate(self, step, log):
        """Train and val loss per dataset and their means weighted as the mixture (in a mixture of one, the
        dataset's own); samples of the model at this step."""
        weights, names = self.mixture.shares, self.names
        for split, prefix in (("train", "train_eval"), ("val", "val")):
            scores = {i: self.trainer.evaluate(splits[split]) for i, splits in enumerate(self.mixture.splits)
                      if splits[split].windows}
            for unit in ("loss", "bpb"):
                values = {i: getattr(score, unit) for i, score in scores.items()}
                if values:
                    total = sum(weights[i] for i in values)
                    log[f"{prefix}_{unit}"] = sum(weights[i] * v for i, v in values.items()) / total
                if len(names) > 1:
                    log.update({f"{prefix}_{unit}/{names[i]}": v for i, v in values.items()})
        if "val_loss" in log:
            log["val_perplexity"] = math.exp(min(log["val_loss"], 50))
        self.report.evaluation(step, log)
        # Sharded, a forward is a collective, and each process's sampling would stop at its own length.
        if self.config.samples and self.world.is_main and not self.trainer.sharded:
            self.report.samples(sample_lines(self.trainer.model, self.encoding, self.config, step))

    def score_tasks(self, step, log):
        """Downstream accuracies on the run's fixed items: hellaswag/acc, hellaswag/acc_norm, core/<task>, core."""
        figures = self.trainer.score_tasks()
        log.update(figures)
        self.report.tasks(step, figures)

    def save(self, step, val_loss, seen):
        trainer, world = self.trainer, self.world
        rng = world.gather(trainer.rng_state())  # a collective: every process calls save at the same step
        state = {
            "step": step, "elapsed": self.elapsed(), "scaler": trainer.scaler.state_dict() if trainer.scaler else {},
            "rng": rng, "data_fingerprint": self.fingerprint, "world_size": world.size,
            "windows_seen": {name: int(count) for name, count in zip(self.names, seen)},
            "history": trainer.history.eras,
        }
        if trainer.sharded:  # every process writes its shards; rank 0 publishes
            sharding.save(self.run_dir, world, trainer.model, trainer.optimizer, state, self.config_json, val_loss,
                          self.generations)
        elif world.is_main:
            state["optimizer"] = trainer.optimizer.state_dict()
            checkpoint.save(self.run_dir, trainer.model, state, self.config_json, val_loss, self.generations)

    def warn_if_overrunning(self, step, log):
        """Say once if the pace so far would overrun the time budget by more than 5%."""
        per_step = (time.perf_counter() - self.started) / (step + 1 - self.start_step)
        projected = log["elapsed_sec"] + per_step * (self.plan.steps - step - 1)
        if projected > 1.05 * self.config.max_time and not self.warned:
            self.warned = True
            self.report.overrun(per_step, projected, self.plan.steps)
