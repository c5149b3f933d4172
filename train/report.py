"""What a run tells as it goes: its plan before step 0, each step's metrics line (metrics.jsonl, the trackers and
the progress bar), each evaluation's line, samples and plot, a time budget's re-timings, and its end: the FitResult
that `fit` returns and whose summary `train nightly` prints. Rank 0 alone writes files."""

import dataclasses
import json
import os
import sys

from tqdm import tqdm

from prepare import format as fmt
from train.plot import plot_run
from train.tracking import open_trackers

NAN = float("nan")


@dataclasses.dataclass(frozen=True)
class FitResult:
    """What a session of a run did: the run's steps so far, its last metrics line, this session's pace, and the
    documents added to the data since the last session that it drew in full."""

    steps: int  # the run's, earlier sessions included
    tokens_per_step: int
    log: dict  # the last step's metrics line
    max_time: float | None
    session_steps: int
    session_seconds: float
    new_documents: tuple[int, int] = (0, 0)  # (drawn in full, added since the last session)

    @property
    def tokens(self):
        return self.steps * self.tokens_per_step

    def summary(self):
        """The run's steps, tokens and time, this session's pace and the last losses, in one line."""
        log, seconds = self.log, self.session_seconds
        return (f"{self.steps} steps, {self.tokens:,} tokens in {log['elapsed_sec']:.0f} s of wall time "
                + (f"(--max-time {self.max_time:.0f} s) " if self.max_time else "")
                + f"({self.session_steps * self.tokens_per_step / max(seconds, 1e-9):,.0f} tokens/s, "
                f"{seconds / self.session_steps:.3f} s per step this session, evaluations and checkpoints included); "
                f"train {log.get('train_eval_loss', NAN):.4f}, val {log.get('val_loss', NAN):.4f} "
                f"({log.get('val_bpb', NAN):.4f} bits per byte)")

    def new_documents_line(self):
        """How many of the documents added since the last session it drew in full ('' if none were added)."""
        reached, new = self.new_documents
        if not new:
            return ""
        return (f"new documents: {reached:,} of the {new:,} added since the last session drawn in full"
                + ("" if reached == new else "; the next session begins with the rest"))


def epochs_seen(names, log):
    return "epochs " + ", ".join(f"{n} {log[f'epochs/{n}']:.2f}" for n in names)


def say_plan(trainer, config, plan, say):
    """What the run is about to do: each dataset's share and expected epochs, the model, the step."""
    mixture, world = trainer.mixture, trainer.world
    for source, splits in zip(config.data, mixture.splits):
        if not splits["val"].windows:
            say(f"warning: the val split of {source.path} is shorter than the context; only its train loss is "
                f"evaluated")
    epochs = mixture.expected_epochs(plan.steps * config.tokens_per_step)
    for source, tokens, share, epoch in zip(config.data, mixture.train_tokens, mixture.shares, epochs):
        say(f"{source.path}: {tokens:,.0f} train tokens, weight {share:.3f}, {epoch:.2f} epochs expected in "
            f"{plan.steps} steps" + (f" (at most {source.max_epochs:g})" if source.max_epochs else ""))
    say(
        f"{trainer.model.num_params() / 1e6:.2f}M parameters, {config.tokens_per_step:,} tokens per step "
        f"({config.batch_size} x {config.context} x {config.micro_batches}"
        f"{f' over {world.size} processes' if world.size > 1 else ''}), {world.device.type} {config.dtype}"
        f"{', compiled' if config.compile else ''}, {plan.steps} steps"
    )


def calibrated(config, plan, tasks):
    """The line of a time budget's first count."""
    timing = plan.timing
    return (f"--max-time {config.max_time:.0f} s: calibrated {timing[0]:.3f} s per step, {timing[1]:.2f} s per "
            f"evaluation, {timing[2]:.2f} s per checkpoint" + (f", {timing[3]:.2f} s per task scoring" if tasks else "")
            + f": {plan.steps} steps, timed again at step {plan.retime_at}")


class Report:
    """A session's metrics file, trackers and progress bar (open from `with` to its end), and its lines."""

    def __init__(self, config, world, say, start_step):
        self.config, self.world, self.say, self.run_dir = config, world, say, config.out
        self.names, self.start_step = [s.name for s in config.data], start_step

    def open(self, record, steps):
        """`record`: the run's config.json object (for the trackers); `steps`: the plan's count, for the bar."""
        main = self.world.is_main
        self.trackers = open_trackers(self.config, self.run_dir, record) if main else []
        self.metrics = open(os.path.join(self.run_dir, "metrics.jsonl"), "a") if main else None
        self.bar = tqdm(total=steps, initial=self.start_step, disable=not (sys.stderr.isatty() and main),
                        dynamic_ncols=True, unit="step")

    def close(self):
        self.bar.close()
        if self.metrics:
            self.metrics.close()

    def line(self, log):
        """A step's metrics line, in metrics.jsonl and to every tracker."""
        if self.metrics:
            with fmt.naming(self.metrics.name):  # a full disk names the file
                self.metrics.write(json.dumps(log) + "\n")
                self.metrics.flush()
        for track in self.trackers:
            track(log)

    def advance(self, log):
        """The progress bar, one step on."""
        self.bar.set_postfix_str(
            f"loss {log['loss']:.3f} lr {log['lr']:.2e} {log['tokens_per_sec']:,.0f} tok/s "
            + (f"MFU {log['mfu']:.1%}" if "mfu" in log else f"{log['flops_per_sec'] / 1e9:.0f} GFLOP/s")
        )
        self.bar.update(1)

    def evaluation(self, step, log):
        """An evaluation's line: train and val loss (each dataset's in a mixture), val bits per byte, epochs."""
        val = f", val {log['val_loss']:.4f}" if "val_loss" in log else ""
        each = [f"{n} {log[f'val_loss/{n}']:.4f}" for n in self.names if f"val_loss/{n}" in log]
        bpb = f", val {log['val_bpb']:.4f} bits per byte" if "val_bpb" in log else ""
        self.say(f"step {step}: train {log['train_eval_loss']:.4f}{val}" + (f" ({', '.join(each)})" if each else "")
                 + f"{bpb}; " + epochs_seen(self.names, log))

    def samples(self, lines):
        """Sample continuations at an evaluation, appended to samples.txt and said."""
        path = os.path.join(self.run_dir, "samples.txt")
        with fmt.naming(path), open(path, "a") as f:
            f.write("\n".join(lines) + "\n")
        for line in lines:
            self.say(line)

    def tasks(self, step, figures):
        shown = [f"{name} {figures[name]:.4f}" for name in ("hellaswag/acc_norm", "core") if name in figures]
        self.say(f"step {step}: " + ", ".join(shown))

    def plot(self):
        if self.world.is_main:
            plot_run(self.run_dir)

    def retimed(self, step, per_step, timed, before, plan, left):
        self.bar.total = plan.steps
        self.say(f"--max-time: {per_step:.3f} s per step over steps {step + 1 - timed}-{step}: {plan.steps} steps "
                 f"(was {before}; {left:.3f} s left)"
                 + (f"; timed again at step {plan.retime_at}" if plan.retime_at else ""))

    def overrun(self, per_step, projected, steps):
        self.say(f"warning: at the {per_step:.3f} s per step measured so far this run will take {projected:.0f} s, "
                 f"over its --max-time of {self.config.max_time:.0f} s; it runs on to the end of its schedule "
                 f"(step {steps})")

    def stopped(self, step):
        self.say(f"stopped at step {step}; checkpoint saved, continue with --resume")

    def done(self, result):
        self.say(f"done: {result.summary()}; {epochs_seen(self.names, result.log)}")
        if result.new_documents_line():
            self.say(result.new_documents_line())
