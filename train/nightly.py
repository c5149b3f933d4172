"""`train nightly RUN`: one night of a model that grows with its corpus (docs/continual.md): fit on for the
night's budget (a new --schedule open --follow-data run the first night), cool down, eval, [score,] export.
Each stage is the function its command calls, and its summary line is made from the values it returns. Off a
terminal (cron) each stage's output goes to RUN/nightly.log and one line says what it did; a stage that fails
ends the night with its message and a non-zero exit.
"""

import contextlib
import io
import os
import shlex
import sys
import time

import click

from train.cooldown import cool_down
from train.errors import user_errors
from train.evaluate import evaluate_run
from train.export import export_run
from train.fit import from_options
from train.resolve import parse_fit_args
from train.scoring import score_model

LOG = "nightly.log"


def warn(line):
    click.echo(line, err=True)


class Stage:
    """A stage of the night run in this process, its output kept whole in the log and, off a terminal, summed up
    in one line."""

    def __init__(self, run_dir, quiet, say):
        self.log_path, self.quiet, self.say = os.path.join(run_dir, LOG), quiet, say

    def __call__(self, name, args, work, summary):
        """The result of `work()`, the stage `train ARGS` (as the log names it); `summary(result)` its line."""
        start, out = time.perf_counter(), io.StringIO()
        code, result = 0, None
        with contextlib.redirect_stdout(out) if self.quiet else contextlib.nullcontext():
            with contextlib.redirect_stderr(out) if self.quiet else contextlib.nullcontext():
                try:
                    result = user_errors(work)()
                except SystemExit as e:  # a user error: its one line is in the output
                    code = e.code or 0
                except click.ClickException as e:  # a mistake in the options passed on to fit
                    print(f"error: {e.format_message()}", file=sys.stderr)
                    code = e.exit_code
        lines = [line for line in out.getvalue().splitlines() if line.strip()]
        os.makedirs(os.path.dirname(self.log_path) or ".", exist_ok=True)
        with open(self.log_path, "a") as f:
            f.write(f"== {time.strftime('%Y-%m-%d %H:%M:%S')} train {shlex.join(args)}\n" + out.getvalue())
        if code:
            if self.quiet:
                self.say(f"{name}: failed: {lines[-1] if lines else 'no message'} (all of it in {self.log_path})")
            sys.exit(code)
        if self.quiet:
            self.say(f"{name} ({time.perf_counter() - start:.0f} s): {summary(result)}")
        return result


def fit_night(args, own):
    """The night's fit: fit's options from `args` (the night's budget and FIT_ARGS), over them the night's `own`
    values where `args` gives none."""
    values, given = parse_fit_args(args)
    for name, value in own.items():
        if name not in given:
            values[name] = value
            given.add(name)
    return from_options(values, given, click.echo)


def fit_summary(result):
    new = result.new_documents_line()
    return result.summary() + (f"; {new}" if new else "")


def night(run_dir, data, session_time, session_steps, eval_tasks, export_dir, fit_args, quiet, say):
    stage = Stage(run_dir, quiet, say)
    budget = ((["--session-time", str(session_time)] if session_time else [])
              + (["--session-steps", str(session_steps)] if session_steps else []))
    if os.path.exists(os.path.join(run_dir, "config.json")):
        args, own = ["--out", run_dir, "--resume", "--follow-data"], dict(out=run_dir, resume=True, follow_data=True)
    else:
        args = [*(a for d in data for a in ("--data", d)), "--out", run_dir, "--schedule", "open", "--follow-data"]
        own = dict(data=tuple(data), out=run_dir, schedule="open", follow_data=True)
    stage("fit", ["fit", *args, *budget, *fit_args], lambda: fit_night([*budget, *fit_args], own), fit_summary)
    stage("cooldown", ["cooldown", run_dir], lambda: cool_down(run_dir, say=click.echo),
          lambda cooled: f"done: {cooled.fit.summary()}" if cooled.fit else "")
    stage("eval", ["eval", "--run", run_dir], lambda: evaluate_run(run_dir, say=click.echo),
          lambda scores: "; ".join(score.line() for score in scores))
    if eval_tasks:
        stage("score", ["score", run_dir, "--tasks", eval_tasks],
              lambda: score_model(run_dir, eval_tasks, say=click.echo, warn=warn),
              lambda scores: "; ".join(scores.lines() + scores.notes))
    out = export_dir or os.path.join(run_dir, "hf")
    stage("export", ["export", run_dir, out], lambda: export_run(run_dir, out, say=click.echo, warn=warn),
          lambda exported: exported.line())
