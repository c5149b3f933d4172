"""`python -m train`: fit a GPT on a prepared dataset, and use what it learned. Each command's body is a function
of the module named in it; the fit command's options are RunConfig's settings (train/config.py). torch is imported
by the commands that run, never for --help."""

import functools
import os
import sys

import click

from prepare.clitools import fail
from train.config import DTYPES
from train.errors import user_errors
from train.options import given_options
from train.resolve import fit_params

CHECKPOINT = dict(default="cooled", show_default=True, type=click.Choice(["cooled", "best", "latest"]),
                  help="cooled: the end of the run's latest cool-down branch, or its best if it has none.")


def runs(command):
    """A command's body as every train command runs: glibc keeping freed memory for reuse (device.py), and a
    user's mistake ended in one line."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        from train.device import keep_freed_memory

        keep_freed_memory()
        return user_errors(command)(*args, **kwargs)

    return wrapper


def warn(line):
    click.echo(line, err=True)


@click.group()
def cli():
    """Train GPT models on datasets made by `python -m prepare`."""


@cli.command(params=fit_params())
@click.pass_context
@runs
def fit(ctx, **values):
    """Train a model on prepared datasets (under torchrun too: one process per GPU, or several CPU processes)."""
    from train.fit import from_options

    from_options(values, given_options(ctx), click.echo)


@cli.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--steps", type=click.IntRange(1), help="Steps of decay [default: --fraction of the steps since the "
              "previous cool-down].")
@click.option("--fraction", default=0.2, show_default=True, type=click.FloatRange(0, 1, min_open=True),
              help="The default --steps as a share of the main line's steps since the previous cool-down (or since "
              "step 0).")
@click.option("--min-lr", type=click.FloatRange(0), help="Learning rate at the branch's last step [default: the run's "
              "--min-lr].")
@runs
def cooldown(run_dir, steps, fraction, min_lr):
    """Branch RUN_DIR's latest checkpoint (a run with --schedule open) into RUN_DIR/cooldowns/step-N and decay its
    learning rate linearly to --min-lr; sample, eval, score and export then use it by default."""
    from train.cooldown import cool_down

    cool_down(run_dir, steps, fraction, min_lr, say=click.echo)


@cli.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.argument("out", type=click.Path(file_okay=False))
@runs
def replay(run_dir, out):
    """Train OUT afresh as RUN_DIR's main line trained (a run with --schedule open --follow-data): each era of its
    history on the generations it recorded (kept by its pins), up to the step it switched at, to its latest
    checkpoint. The losses are RUN_DIR's, whatever time budgets its sessions had."""
    from train.replay import replay as train_again

    train_again(run_dir, out, say=click.echo)


@cli.command(context_settings={"ignore_unknown_options": True})
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--data", multiple=True, help="Dataset directory made by prepare (repeatable as DIR=WEIGHT); the first "
              "night only, later nights follow the run's own.")
@click.option("--session-time", help="This night's training budget (fit alone), e.g. 2h.")
@click.option("--session-steps", type=click.IntRange(1), help="This night's training budget in steps.")
@click.option("--eval-tasks", help="Also score these downstream tasks (hellaswag, core) after the cool-down.")
@click.option("--export", "export_dir", type=click.Path(file_okay=False), help="Where the cooled model goes as a "
              "Hugging Face directory [default: RUN_DIR/hf].")
@click.argument("fit_args", nargs=-1, type=click.UNPROCESSED)
@runs
def nightly(run_dir, data, session_time, session_steps, eval_tasks, export_dir, fit_args):
    """One night of a run that grows with its corpus (docs/continual.md): fit on for a session's budget (a new
    --schedule open --follow-data run the first night; FIT_ARGS go to fit), cool down, eval, [score,] export.
    Off a terminal, one summary line per stage; everything in RUN_DIR/nightly.log."""
    from train.nightly import night

    if not (session_time or session_steps):
        fail("give the night's budget: --session-time (e.g. 2h) or --session-steps")
    if not data and not os.path.exists(os.path.join(run_dir, "config.json")):
        fail(f"{run_dir} holds no run yet; give its first night's --data DIR")
    night(run_dir, data, session_time, session_steps, eval_tasks, export_dir, list(fit_args), not sys.stdout.isatty(),
          click.echo)


@cli.command()
@click.argument("run_dir", type=click.Path())
@runs
def plot(run_dir):
    """Redraw RUN_DIR/loss.png from its metrics.jsonl."""
    from train.plot import redraw

    click.echo(redraw(run_dir))


@cli.command()
@click.option("--run", "run_dir", required=True, type=click.Path(), help="Run directory made by fit.")
@click.option("--prompt", "prompts", multiple=True, help="Text to continue (repeatable).")
@click.option("--prompt-file", type=click.Path(exists=True, dir_okay=False), help="Prompts separated by blank lines.")
@click.option("--checkpoint", "which", **CHECKPOINT)
@click.option("--max-new-tokens", default=200, show_default=True, type=click.IntRange(1))
@click.option("--num-samples", default=1, show_default=True, type=click.IntRange(1))
@click.option("--temperature", default=0.8, show_default=True, type=click.FloatRange(0), help="0 means greedy.")
@click.option("--top-k", default=None, type=click.IntRange(1), help="Sample among the k most likely tokens.")
@click.option("--top-p", default=None, type=click.FloatRange(0, 1, min_open=True), help="Nucleus sampling: the "
              "smallest set of tokens with this much probability.")
@click.option("--num-beams", default=1, show_default=True, type=click.IntRange(1), help="Beam search when above 1 "
              "(deterministic).")
@click.option("--length-penalty", default=1.0, show_default=True, type=float, help="Beam score = log-probability / "
              "length ** this.")
@click.option("--seed", default=1337, show_default=True, type=int)
@click.option("--device", default="auto", show_default=True)
@click.option("--dtype", default="fp32", show_default=True, type=click.Choice(DTYPES))
@click.option("--cache/--no-cache", default=True, show_default=True, help="Key/value cache: one position per new "
              "token.")
@runs
def sample(run_dir, prompts, prompt_file, **options):
    """Continue prompts with a trained model, streaming the text as it is produced."""
    from train.sample import continue_prompts, read_prompts

    prompts = read_prompts(prompts, prompt_file)
    continue_prompts(run_dir, prompts, **options, write=lambda text: click.echo(text, nl=False), warn=warn)


@cli.command("eval")
@click.option("--run", "run_dir", required=True, type=click.Path(), help="Run directory made by fit.")
@click.option("--data", "data_dirs", multiple=True, type=click.Path(), help="Dataset directory made by prepare, with "
              "the run's tokenizer (repeatable) [default: the run's datasets].")
@click.option("--split", default="val", show_default=True, type=click.Choice(["val", "train"]))
@click.option("--checkpoint", "which", **CHECKPOINT)
@click.option("--windows", default=None, type=click.IntRange(1), help="Score this many fixed random windows instead "
              "of every token.")
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(1))
@click.option("--device", default="auto", show_default=True)
@click.option("--dtype", default="fp32", show_default=True, type=click.Choice(DTYPES))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per dataset.")
@runs
def evaluate(**options):
    """Loss, perplexity and bits per byte of a checkpoint on a split of each dataset, one line each."""
    from train.evaluate import evaluate_run

    evaluate_run(**options, say=click.echo)


@cli.command()
@click.argument("model_name", metavar="MODEL")
@click.option("--tasks", default="hellaswag,core", show_default=True, help="hellaswag, core, or both, "
              "comma-separated.")
@click.option("--max-per-task", type=click.IntRange(1), help="Score only the first N items of each task (the same N "
              "every time).")
@click.option("--checkpoint", "which", **CHECKPOINT)
@click.option("--batch-size", default=16, show_default=True, type=click.IntRange(1), help="Sequences (options) per "
              "forward pass.")
@click.option("--device", default="auto", show_default=True)
@click.option("--dtype", default="fp32", show_default=True, type=click.Choice(DTYPES))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per task, then one for CORE.")
@runs
def score(**options):
    """Accuracy of MODEL on HellaSwag and the CORE suite. MODEL: a run directory made by fit (or one of its
    checkpoint directories), or a Hugging Face model with GPT-2's tokenizer, as a directory or a Hub id
    (hf:openai-community/gpt2). The task files are downloaded once into $GPTMILL_CACHE (default
    ~/.cache/gptmill); under torchrun the items are shared out over the processes."""
    from train.scoring import score_model

    score_model(**options, say=click.echo, warn=warn)


@cli.command()
@click.argument("run_dir", type=click.Path())
@click.argument("out", type=click.Path())
@click.option("--format", "kind", default="hf", show_default=True, type=click.Choice(["hf", "gguf"]),
              help="hf: a Hugging Face directory OUT; gguf: one file OUT (e.g. model.gguf) for llama.cpp, Ollama and "
              "LM Studio.")
@click.option("--type", "tensor_type", type=click.Choice(["f32", "f16", "bf16", "q8_0"]), help="gguf only: how the "
              "matrices are stored (4, 2, 2 and about 1.06 bytes a weight) [default: f16].")
@click.option("--pre-tokenizer", help="gguf only: write this llama.cpp pre-tokenizer name even though the run's split "
              "pattern has no equal among them (with a warning).")
@click.option("--checkpoint", "which", **CHECKPOINT)
@runs
def export(**options):
    """Write RUN_DIR's model as a Hugging Face directory OUT (GPT2LMHeadModel, LlamaForCausalLM or Qwen3ForCausalLM:
    config, safetensors, tokenizer files), or with --format gguf as the GGUF file OUT (architecture gpt2, llama or
    qwen3, with its tokenizer)."""
    from train.export import export_run

    export_run(**options, say=click.echo, warn=warn)
