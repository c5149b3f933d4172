"""`train nightly RUN`: one night of a model that grows with its corpus, after `prepare build` has published
the night's generation: continue the run on it for a budget of its own, cool down, evaluate, export.

1. fit: a new run (--schedule open --follow-data) the first night, else --resume of the main line, which moves
   to the generations in force and draws the documents added since the last session first; --session-time
   or --session-steps is this stage's budget alone.
2. cooldown: a branch of the main line's last checkpoint, decayed over a fifth of the night's steps (outside
   the night's budget, as are the stages after it).
3. eval: val loss and bits per byte of the cooled model on each dataset's generation in force; score: the
   --eval-tasks, if asked.
4. export: the cooled model as a Hugging Face directory.

On a terminal every stage shows its own output; otherwise (cron) each writes it to RUN/nightly.log and says
one summary line. A stage that fails ends the night with its message and a non-zero exit.
"""

import contextlib
import io
import os
import shlex
import sys
import time

import click

LOG = "nightly.log"


class Stage:
    """A subcommand of `train` run in-process, its output kept whole in the log and, off a terminal, summed up
    in one line."""

    def __init__(self, run_dir, quiet, say):
        self.log_path, self.quiet, self.say = os.path.join(run_dir, LOG), quiet, say

    def __call__(self, name, args, summary):
        from train.cli import cli

        start, out = time.perf_counter(), io.StringIO()
        code = 0
        with contextlib.redirect_stdout(out) if self.quiet else contextlib.nullcontext():
            with contextlib.redirect_stderr(out) if self.quiet else contextlib.nullcontext():
                try:
                    cli.main(args, prog_name="train", standalone_mode=False)
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
            self.say(f"{name} ({time.perf_counter() - start:.0f} s): {summary(lines)}")


def found(lines, prefix, default=""):
    return next((line for line in reversed(lines) if line.startswith(prefix)), default)


def fit_summary(lines):
    done = found(lines, "done: ")
    return done[len("done: "):].split("; epochs")[0] + ("; " + found(lines, "new documents: ") if found(lines, "new documents: ") else "")


def night(run_dir, data, session_time, session_steps, eval_tasks, export_dir, fit_args, quiet, say):
    stage = Stage(run_dir, quiet, say)
    budget = (["--session-time", str(session_time)] if session_time else []) + (["--session-steps", str(session_steps)] if session_steps else [])
    if os.path.exists(os.path.join(run_dir, "config.json")):
        stage("fit", ["fit", "--out", run_dir, "--resume", "--follow-data", *budget, *fit_args], fit_summary)
    else:
        sources = [a for d in data for a in ("--data", d)]
        stage("fit", ["fit", *sources, "--out", run_dir, "--schedule", "open", "--follow-data", *budget, *fit_args], fit_summary)
    stage("cooldown", ["cooldown", run_dir], lambda lines: found(lines, "done: ").split("; epochs")[0])
    stage("eval", ["eval", "--run", run_dir], lambda lines: "; ".join(line for line in lines if " val loss " in line))
    if eval_tasks:
        stage("score", ["score", run_dir, "--tasks", eval_tasks], lambda lines: "; ".join(lines))
    stage("export", ["export", run_dir, export_dir or os.path.join(run_dir, "hf")], lambda lines: lines[-1])
