"""`python -m train`: fit a GPT on a prepared dataset, and use what it learned."""

import dataclasses
import functools
import json
import os
import sys

import click

from prepare import clitools
from prepare.evals import TaskError
from prepare.evals.cache import FetchError
from prepare.format import DatasetError
from prepare.tokenizer import TokenizerError, same_identity
from train.config import PRESETS, ConfigError, RunConfig
from train.tracking import TrackerError

fail = clitools.fail

USER_ERRORS = (DatasetError, TokenizerError, ConfigError, TrackerError, TaskError, FetchError)


def user_errors(command):
    """A mistake the user can fix ends as one line on stderr and a non-zero exit, never a traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        # torch's modules are imported only by the commands that use them: `--help` starts in a second, not five
        from train.checkpoint import CheckpointError
        from train.cooldown import CooldownError
        from train.device import DeviceError
        from train.distributed import JobError
        from train.fit import TrainingError
        from train.memory import StepDoesNotFit
        from train.plot import MetricsError

        errors = (*USER_ERRORS, CheckpointError, CooldownError, DeviceError, StepDoesNotFit, TrainingError, MetricsError)
        try:
            return clitools.user_errors(errors)(command)(*args, **kwargs)
        except JobError as e:  # every process of the job raised it: rank 0 says it once
            if os.environ.get("RANK", "0") != "0":
                sys.exit(1)
            fail(str(e))

    return wrapper


@click.group()
def cli():
    """Train GPT models on datasets made by `python -m prepare`."""
    from train.device import keep_freed_memory

    keep_freed_memory()


@cli.command()
@click.option("--data", multiple=True, help="Dataset directory made by prepare; repeat as DIR=WEIGHT for a mixture (weights are relative).")
@click.option("--mixture", type=click.Path(dir_okay=False), help="A mixture from a JSON file: [{\"path\": DIR, \"weight\": W, \"max_epochs\": E}, ...].")
@click.option("--out", type=click.Path(file_okay=False), help="Run directory [default: runs/<dataset name>].")
@click.option("--model", "preset", default="tiny-llama", show_default=True, type=click.Choice(list(PRESETS)), help="Model preset (fixed for the run): GPT-2 (tiny, gpt2...) or Llama-style (tiny-llama, llama-...).")
@click.option("--n-layer", type=click.IntRange(1), help="Override the preset's layers.")
@click.option("--n-head", type=click.IntRange(1), help="Override the preset's attention heads.")
@click.option("--n-embd", type=click.IntRange(1), help="Override the preset's width.")
@click.option("--context", type=click.IntRange(1), help="Tokens of context [default: the preset's].")
@click.option("--dropout", default=RunConfig.dropout, show_default=True, type=click.FloatRange(0, 1))
@click.option("--bias/--no-bias", default=None, help="Biases in Linear and LayerNorm layers (GPT-2 only) [default: on].")
@click.option("--qk-norm/--no-qk-norm", default=None, help="Llama-style only: RMSNorm on queries and keys [default: on]; without it `export` writes LlamaForCausalLM, with it Qwen3ForCausalLM.")
@click.option("--optimizer", type=click.Choice(["adamw", "muon"]), help="muon: Muon for the hidden matrices, AdamW for embeddings, output layer and norms [default: the preset's].")
@click.option("--batch-size", type=click.IntRange(1), help="Windows per micro-batch [default: the preset's].")
@click.option("--tokens-per-step", type=click.IntRange(1), help="Tokens per optimizer step over all processes, rounded up to whole micro-batches (gradient accumulation) [default: one micro-batch per process].")
@click.option("--window-start", default=RunConfig.window_start, show_default=True, type=click.Choice(["any", "document"]), help="Where a training window starts: any token, or a document's start (and every context tokens inside a long document).")
@click.option("--sampling", default=RunConfig.sampling, show_default=True, type=click.Choice(["random", "epochs"]), help="epochs: every window start (one each context tokens) once per epoch, in an order drawn from the seed; random: each window drawn independently, anywhere.")
@click.option("--schedule", default=RunConfig.schedule, show_default=True, type=click.Choice(["warmdown", "cosine", "open"]), help="warmdown: the learning rate flat after warmup, then linear to --min-lr over the last --warmdown-fraction of the steps, Muon's momentum 0.85 to 0.97 over 400 steps and down to 0.90 with it; cosine: a cosine decay to --min-lr, momentum 0.95; open: flat after warmup for good, for a run that goes on night after night (`cooldown` gives the model to release).")
@click.option("--max-steps", type=click.IntRange(1), help="Budget: optimizer steps.")
@click.option("--max-tokens", type=click.IntRange(1), help="Budget: training tokens.")
@click.option("--max-time", callback=clitools.parse_duration, help="Budget: wall time of the whole run, e.g. 10m, evaluations and checkpoints included (fixed as a step count by timing a few real steps).")
@click.option("--session-steps", type=click.IntRange(1), help="Budget of this session alone: optimizer steps from where it starts (with --resume: replaces the run's budget).")
@click.option("--session-time", callback=clitools.parse_duration, help="Budget of this session alone: its wall time, e.g. 2h (with --resume: replaces the run's budget).")
@click.option("--lr", type=float, help="Peak learning rate [default: the preset's].")
@click.option("--warmdown-fraction", default=RunConfig.warmdown_fraction, show_default=True, type=float, help="--schedule warmdown: the share of the steps over which the learning rate decays (0: none, 1: all after the warmup).")
@click.option("--min-lr", type=float, help="Learning rate at the last step, where the decay ends [default: lr/10].")
@click.option("--warmup-steps", type=click.IntRange(1), help="Linear warmup steps [default: 5% of the budget, at most 100].")
@click.option("--weight-decay", default=RunConfig.weight_decay, show_default=True, type=float)
@click.option("--beta1", default=RunConfig.beta1, show_default=True, type=float)
@click.option("--beta2", default=RunConfig.beta2, show_default=True, type=float)
@click.option("--grad-clip", default=RunConfig.grad_clip, show_default=True, type=float, help="Clip the gradient norm to this (0: no clipping).")
@click.option("--eval-every", default=RunConfig.eval_every, show_default=True, type=click.IntRange(0), help="Steps between evaluations (and at the end).")
@click.option("--eval-windows", default=RunConfig.eval_windows, show_default=True, type=click.IntRange(1), help="Fixed windows per split for evaluation.")
@click.option("--eval-tasks", help="Also score downstream tasks during training: hellaswag, core, or both comma-separated (files downloaded once; see `score`).")
@click.option("--eval-tasks-every", type=click.IntRange(0), help="Steps between downstream scorings (and at the end) [default: --eval-every].")
@click.option("--eval-tasks-max", default=RunConfig.eval_tasks_max, show_default=True, type=click.IntRange(1), help="Items scored per task: the same first N every time.")
@click.option("--ckpt-every", default=RunConfig.ckpt_every, show_default=True, type=click.IntRange(0), help="Steps between checkpoints (and at the end).")
@click.option("--samples/--no-samples", default=RunConfig.samples, show_default=True, help="Print sample continuations at each evaluation.")
@click.option("--tensorboard", is_flag=True, help="Also log to TensorBoard (RUN/tensorboard; needs the tensorboard package).")
@click.option("--wandb-project", help="Also log to this Weights & Biases project (needs the wandb package).")
@click.option("--seed", default=RunConfig.seed, show_default=True, type=click.IntRange(0))
@click.option("--device", default=RunConfig.device, show_default=True, help="auto, cpu, cuda, cuda:N or mps.")
@click.option("--collective-timeout", default=RunConfig.collective_timeout, show_default=True, callback=clitools.parse_duration, help="Under torchrun: how long a process waits for the others (e.g. while rank 0 writes a checkpoint) before the job stops; seconds or 30m, 2h.")
@click.option("--dtype", default=RunConfig.dtype, show_default=True, type=click.Choice(["auto", "fp32", "bf16", "fp16"]), help="auto: bf16 where the hardware has it natively, fp16 on GPUs before Ampere, else fp32.")
@click.option("--compile/--no-compile", "compile", default=None, help="torch.compile the model [default: on CUDA only].")
@click.option("--init-from", help="Start from a Hugging Face GPT-2, Llama or Qwen3 model: a directory (e.g. one made by `export`) or a Hub id (hf:openai-community/gpt2).")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its latest checkpoint; options given with it take effect (a larger budget extends the run), those fixing the model's shape are refused.")
@click.option("--allow-data-change", is_flag=True, help="Resume even if the train data changed (the dataset was updated since the run started).")
@click.option("--follow-data/--no-follow-data", default=None, help="On --resume, move to each dataset's generation in force, drawing the documents added since the last session first; pins each generation trained on (`prepare unpin` releases them) [default: off].")
@click.option("--replay", type=click.FloatRange(0, 1, max_open=True), help=f"--follow-data: the share of each step's windows drawn as usual (the whole live corpus) while new documents are left to draw [default: {RunConfig.replay}].")
@click.pass_context
@user_errors
def fit(ctx, resume, allow_data_change, mixture, session_steps, session_time, **options):
    """Train a model on prepared datasets (under torchrun too: one process per GPU, or several CPU processes)."""
    from train import checkpoint
    from train.config import check_mixture, mixture_name, parse_data, read_mixture, resolve
    from train.fit import fit as run_fit

    given = {k for k in options if ctx.get_parameter_source(k) == click.core.ParameterSource.COMMANDLINE}
    if options["data"] and mixture:
        fail("give --data or --mixture, not both")
    if options["data"] or mixture:
        options["data"] = check_mixture(read_mixture(mixture) if mixture else [parse_data(d) for d in options["data"]])
        given.add("data")
    elif not resume:
        fail("give the data: --data DIR (repeat as DIR=WEIGHT for a mixture) or --mixture FILE")
    else:
        options["data"] = None
    if not options["out"]:
        if not options["data"]:
            fail("--resume needs --out, the run directory to continue")
        options["out"] = os.path.join("runs", mixture_name(options["data"]))
    if resume:
        previous = checkpoint.read_config(checkpoint.locate(options["out"]))
        config = resolve(options, given | {"out"}, previous)
    else:
        if os.path.exists(os.path.join(options["out"], "config.json")):
            fail(f"{options['out']} already holds a run; continue it with --resume, or choose another --out")
        hf_shape = None
        if options["init_from"]:
            from train.fetch import hub_model
            from train.hf import read_hf_config

            hf_shape = read_hf_config(hub_model(options["init_from"]))
        if session_steps or session_time:  # a first session's budget is the run's so far
            options.update(max_steps=options["max_steps"] or session_steps, max_time=options["max_time"] or session_time)
            given |= {"max_steps", "max_time"}
        config = resolve(options, given, hf_shape=hf_shape)
    run_fit(config, resume=resume, allow_data_change=allow_data_change, say=click.echo,
            session=(session_steps, session_time) if resume else (None, None))


@cli.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--steps", type=click.IntRange(1), help="Steps of decay [default: --fraction of the steps since the previous cool-down].")
@click.option("--fraction", default=0.2, show_default=True, type=click.FloatRange(0, 1, min_open=True), help="The default --steps as a share of the main line's steps since the previous cool-down (or since step 0).")
@click.option("--min-lr", type=click.FloatRange(0), help="Learning rate at the branch's last step [default: the run's --min-lr].")
@user_errors
def cooldown(run_dir, steps, fraction, min_lr):
    """Branch RUN_DIR's latest checkpoint (a run with --schedule open) into RUN_DIR/cooldowns/step-N and decay its
    learning rate linearly to --min-lr; sample, eval, score and export then use it by default."""
    from train import checkpoint, cooldown as branch
    from train.fit import fit as run_fit

    config, main, started = branch.plan(run_dir, steps, fraction, min_lr)
    if not started:
        branch.begin(config, main)
    if checkpoint.read_pointer(config.out).get("latest") != f"step-{config.steps - 1:07d}":  # else it ended before being named
        click.echo(f"{config.out}: cooling down from step {config.cooldown_from} over {config.cooldown_steps} steps to lr {config.min_lr:.2e}")
        run_fit(config, resume=True, say=click.echo)
    branch.finish(run_dir, config)


@cli.command()
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.argument("out", type=click.Path(file_okay=False))
@user_errors
def replay(run_dir, out):
    """Train OUT afresh as RUN_DIR's main line trained (a run with --schedule open --follow-data): each era of its
    history on the generations it recorded (kept by its pins), up to the step it switched at, to its latest
    checkpoint. The losses are RUN_DIR's, whatever time budgets its sessions had."""
    import dataclasses

    from train import checkpoint
    from train.fit import fit as run_fit

    folder = checkpoint.locate(run_dir)
    config, (_, state) = checkpoint.read_config(folder), checkpoint.load(folder)
    if config.schedule != "open" or not state.get("history"):
        fail(f"{run_dir}: a replay follows a run with --schedule open --follow-data (another schedule depends on each session's budget)")
    if os.path.exists(os.path.join(out, "config.json")):
        fail(f"{out} already holds a run; choose another directory")
    eras = state["history"]
    for number, era in enumerate(eras):
        stop = eras[number + 1]["step"] if number + 1 < len(eras) else state["step"] + 1
        leg = dataclasses.replace(config, out=out, max_steps=stop, max_tokens=None, max_time=None, steps=stop, timing=None, retime_at=None)
        run_fit(leg, resume=number > 0, say=click.echo, generations=era["generations"])


@cli.command(context_settings={"ignore_unknown_options": True})
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--data", multiple=True, help="Dataset directory made by prepare (repeatable as DIR=WEIGHT); the first night only, later nights follow the run's own.")
@click.option("--session-time", help="This night's training budget (fit alone), e.g. 2h.")
@click.option("--session-steps", type=click.IntRange(1), help="This night's training budget in steps.")
@click.option("--eval-tasks", help="Also score these downstream tasks (hellaswag, core) after the cool-down.")
@click.option("--export", "export_dir", type=click.Path(file_okay=False), help="Where the cooled model goes as a Hugging Face directory [default: RUN_DIR/hf].")
@click.argument("fit_args", nargs=-1, type=click.UNPROCESSED)
@user_errors
def nightly(run_dir, data, session_time, session_steps, eval_tasks, export_dir, fit_args):
    """One night of a run that grows with its corpus (docs/continual.md): fit on for a session's budget (a new
    --schedule open --follow-data run the first night; FIT_ARGS go to fit), cool down, eval, [score,] export.
    Off a terminal, one summary line per stage; everything in RUN_DIR/nightly.log."""
    from train.nightly import night

    if not (session_time or session_steps):
        fail("give the night's budget: --session-time (e.g. 2h) or --session-steps")
    if not data and not os.path.exists(os.path.join(run_dir, "config.json")):
        fail(f"{run_dir} holds no run yet; give its first night's --data DIR")
    night(run_dir, data, session_time, session_steps, eval_tasks, export_dir, list(fit_args), not sys.stdout.isatty(), click.echo)


@cli.command()
@click.argument("run_dir", type=click.Path())
@user_errors
def plot(run_dir):
    """Redraw RUN_DIR/loss.png from its metrics.jsonl."""
    from train.plot import plot_run

    if not os.path.exists(os.path.join(run_dir, "metrics.jsonl")):
        fail(f"{run_dir}: no metrics.jsonl; is it a run directory?")
    plot_run(run_dir)
    click.echo(os.path.join(run_dir, "loss.png"))


def read_prompts(prompts, prompt_file):
    prompts = list(prompts)
    if prompt_file:
        with open(prompt_file) as f:
            prompts += [p for p in f.read().split("\n\n") if p.strip()]  # prompts separated by blank lines
    if not prompts:
        fail("no prompt; give --prompt TEXT or --prompt-file FILE")
    if any(not p.strip() for p in prompts):
        fail("empty prompt; give some text to continue")
    return prompts


@cli.command()
@click.option("--run", "run_dir", required=True, type=click.Path(), help="Run directory made by fit.")
@click.option("--prompt", "prompts", multiple=True, help="Text to continue (repeatable).")
@click.option("--prompt-file", type=click.Path(exists=True, dir_okay=False), help="Prompts separated by blank lines.")
@click.option("--checkpoint", "which", default="cooled", show_default=True, type=click.Choice(["cooled", "best", "latest"]), help="cooled: the end of the run's latest cool-down branch, or its best if it has none.")
@click.option("--max-new-tokens", default=200, show_default=True, type=click.IntRange(1))
@click.option("--num-samples", default=1, show_default=True, type=click.IntRange(1))
@click.option("--temperature", default=0.8, show_default=True, type=click.FloatRange(0), help="0 means greedy.")
@click.option("--top-k", default=None, type=click.IntRange(1), help="Sample among the k most likely tokens.")
@click.option("--top-p", default=None, type=click.FloatRange(0, 1, min_open=True), help="Nucleus sampling: the smallest set of tokens with this much probability.")
@click.option("--num-beams", default=1, show_default=True, type=click.IntRange(1), help="Beam search when above 1 (deterministic).")
@click.option("--length-penalty", default=1.0, show_default=True, type=float, help="Beam score = log-probability / length ** this.")
@click.option("--seed", default=1337, show_default=True, type=int)
@click.option("--device", default="auto", show_default=True)
@click.option("--dtype", default="fp32", show_default=True, type=click.Choice(["auto", "fp32", "bf16", "fp16"]))
@click.option("--cache/--no-cache", default=True, show_default=True, help="Key/value cache: one position per new token.")
@user_errors
def sample(run_dir, prompts, prompt_file, which, max_new_tokens, num_samples, temperature, top_k, top_p, num_beams,
           length_penalty, seed, device, dtype, cache):
    """Continue prompts with a trained model, streaming the text as it is produced."""
    import codecs

    import torch

    from train.checkpoint import load_encoding, load_model
    from train.device import autocast, pick_device, pick_dtype
    from train.generate import beam_search, is_text, prompt_ids, sample as sample_tokens

    prompts = read_prompts(prompts, prompt_file)
    device = pick_device(device)
    dtype = pick_dtype(dtype, device)
    model, config = load_model(run_dir, which, device)
    encoding = load_encoding(run_dir, which, config)
    eot = config.tokenizer["eot_token"]
    generator = torch.Generator(device=device).manual_seed(seed)
    for number, prompt in enumerate(prompts, 1):
        ids = prompt_ids(encoding, prompt)
        if len(ids) > config.context:
            click.echo(f"warning: prompt of {len(ids)} tokens cropped to the last {config.context} (the context)", err=True)
            ids = ids[-config.context :]
        for index in range(num_samples):
            if num_samples > 1 or len(prompts) > 1:
                click.echo(f"--- sample {index + 1}" if len(prompts) == 1 else f"--- prompt {number}, sample {index + 1}")
            click.echo(prompt, nl=False)
            text = codecs.getincrementaldecoder("utf-8")(errors="replace")  # a token can end mid-character
            with autocast(device, dtype):
                if num_beams > 1:
                    tokens = beam_search(model, ids, max_new_tokens, num_beams, length_penalty, eot=eot, use_cache=cache)
                else:
                    tokens = sample_tokens(model, ids, max_new_tokens, temperature, top_k, top_p, generator, eot, cache)
                for token in tokens:
                    if is_text(encoding, token):
                        click.echo(text.decode(encoding.decode_single_token_bytes(token)), nl=False)
                        sys.stdout.flush()
            click.echo(text.decode(b"", final=True))


@cli.command("eval")
@click.option("--run", "run_dir", required=True, type=click.Path(), help="Run directory made by fit.")
@click.option("--data", "data_dirs", multiple=True, type=click.Path(), help="Dataset directory made by prepare, with the run's tokenizer (repeatable) [default: the run's datasets].")
@click.option("--split", default="val", show_default=True, type=click.Choice(["val", "train"]))
@click.option("--checkpoint", "which", default="cooled", show_default=True, type=click.Choice(["cooled", "best", "latest"]), help="cooled: the end of the run's latest cool-down branch, or its best if it has none.")
@click.option("--windows", default=None, type=click.IntRange(1), help="Score this many fixed random windows instead of every token.")
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(1))
@click.option("--device", default="auto", show_default=True)
@click.option("--dtype", default="fp32", show_default=True, type=click.Choice(["auto", "fp32", "bf16", "fp16"]))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per dataset.")
@user_errors
def evaluate(run_dir, data_dirs, split, which, windows, batch_size, device, dtype, as_json):
    """Loss, perplexity and bits per byte of a checkpoint on a split of each dataset, one line each."""
    import math

    import torch

    from prepare import format as fmt
    from prepare.tokenizer import token_bytes
    from train.checkpoint import load_encoding, load_model
    from train.data import Split
    from train.device import pick_device, pick_dtype
    from train.evaluate import split_score

    device = pick_device(device)
    model, config = load_model(run_dir, which, device)
    lengths = torch.tensor(token_bytes(load_encoding(run_dir, which, config)), device=device)
    for data in data_dirs or [s.path for s in config.data]:
        snapshot = fmt.open_snapshot(data)
        try:
            manifest = snapshot.manifest
            fmt.check_files(data, manifest)
            if not same_identity(dataclasses.asdict(manifest.tokenizer), config.tokenizer):
                fail(f"{data} uses tokenizer {manifest.tokenizer.name}, the model of {run_dir} was trained on {config.tokenizer['name']}")
            target = Split(snapshot, split, config.context)
            if not manifest.tokens(split) or (windows and not target.windows):
                fail(f"{data}: the {split} split is {'empty' if not manifest.tokens(split) else 'shorter than the context'}")
            score = split_score(model, target, windows, batch_size, device, pick_dtype(dtype, device), lengths)
        finally:
            snapshot.close()
        result = {"run": run_dir, "data": data, "split": split, "loss": score.loss, "perplexity": math.exp(min(score.loss, 50)),
                  "bpb": score.bpb, "tokens": score.tokens, "bytes": score.bytes}
        click.echo(json.dumps(result) if as_json else f"{data}: {split} loss {score.loss:.4f}, perplexity {result['perplexity']:.2f}, "
                   f"{score.bpb:.4f} bits per byte over {score.tokens:,} tokens ({score.bytes:,} bytes)")


@cli.command()
@click.argument("model_name", metavar="MODEL")
@click.option("--tasks", default="hellaswag,core", show_default=True, help="hellaswag, core, or both, comma-separated.")
@click.option("--max-per-task", type=click.IntRange(1), help="Score only the first N items of each task (the same N every time).")
@click.option("--checkpoint", "which", default="cooled", show_default=True, type=click.Choice(["cooled", "best", "latest"]), help="cooled: the end of the run's latest cool-down branch, or its best if it has none.")
@click.option("--batch-size", default=16, show_default=True, type=click.IntRange(1), help="Sequences (options) per forward pass.")
@click.option("--device", default="auto", show_default=True)
@click.option("--dtype", default="fp32", show_default=True, type=click.Choice(["auto", "fp32", "bf16", "fp16"]))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per task, then one for CORE.")
@user_errors
def score(model_name, tasks, max_per_task, which, batch_size, device, dtype, as_json):
    """Accuracy of MODEL on HellaSwag and the CORE suite. MODEL: a run directory made by fit (or one of its
    checkpoint directories), or a Hugging Face model with GPT-2's tokenizer, as a directory or a Hub id
    (hf:openai-community/gpt2). The task files are downloaded once into $GPTMILL_CACHE (default
    ~/.cache/gptmill); under torchrun the items are shared out over the processes."""
    from train.checkpoint import load_encoding, load_model
    from train.device import pick_dtype
    from train.distributed import init_world
    from prepare.evals import load_suites, parse_suites
    from train.downstream import decontamination_notes
    from train.fetch import hub_model
    from train.hf import is_hf_directory, load_hf_model
    from train.scoring import score_tasks, summary

    suites = parse_suites(tasks)
    world = init_world(device, RunConfig.collective_timeout)
    notes = []
    try:
        if os.path.isdir(model_name) and not is_hf_directory(model_name):
            model, config = load_model(model_name, which, world.device)
            encoding = load_encoding(model_name, which, config)
            notes = decontamination_notes([source.path for source in config.data], suites)
        else:
            model, encoding = load_hf_model(hub_model(model_name), world.device)
        scores = score_tasks(model, load_suites(suites, encoding, max_per_task), batch_size, world.device,
                             pick_dtype(dtype, world.device), world, progress=world.is_main and sys.stderr.isatty())
        if world.is_main:
            for s in scores:
                figures = {"acc": s.acc, "acc_norm": s.acc_norm} if s.kind == "hellaswag" else {"acc": s.acc, "centered": s.centered}
                click.echo(json.dumps({"task": s.name, "kind": s.kind, "items": s.items, **figures}) if as_json else
                           f"{s.name}: " + ", ".join(f"{k} {v:.4f}" for k, v in figures.items()) + f" ({s.items:,} items)")
            if any(s.kind != "hellaswag" for s in scores):
                core = summary(scores)["core"]
                click.echo(json.dumps({"task": "core", "core": core}) if as_json else f"CORE {core:.4f}")
            for note in notes:  # after the scores it qualifies
                click.echo(note, err=True)
        world.finish()
    finally:
        world.close()


@cli.command()
@click.argument("run_dir", type=click.Path())
@click.argument("out", type=click.Path())
@click.option("--format", "kind", default="hf", show_default=True, type=click.Choice(["hf", "gguf"]), help="hf: a Hugging Face directory OUT; gguf: one file OUT (e.g. model.gguf) for llama.cpp, Ollama and LM Studio.")
@click.option("--type", "tensor_type", type=click.Choice(["f32", "f16", "bf16", "q8_0"]), help="gguf only: how the matrices are stored (4, 2, 2 and about 1.06 bytes a weight) [default: f16].")
@click.option("--pre-tokenizer", help="gguf only: write this llama.cpp pre-tokenizer name even though the run's split pattern has no equal among them (with a warning).")
@click.option("--checkpoint", "which", default="cooled", show_default=True, type=click.Choice(["cooled", "best", "latest"]), help="cooled: the end of the run's latest cool-down branch, or its best if it has none.")
@user_errors
def export(run_dir, out, kind, tensor_type, pre_tokenizer, which):
    """Write RUN_DIR's model as a Hugging Face directory OUT (GPT2LMHeadModel, LlamaForCausalLM or Qwen3ForCausalLM: config,
    safetensors, tokenizer files), or with --format gguf as the GGUF file OUT (architecture gpt2, llama or qwen3, with its tokenizer)."""
    import torch

    from train.checkpoint import load_encoding, load_model

    if kind == "hf" and (tensor_type or pre_tokenizer):
        fail("--type and --pre-tokenizer are for --format gguf")
    if os.path.isdir(out) if kind == "gguf" else os.path.isfile(out):
        fail(f"{out} is a {'directory' if kind == 'gguf' else 'file'}; --format {kind} writes {'one file' if kind == 'gguf' else 'a directory'}")
    model, config = load_model(run_dir, which, torch.device("cpu"))
    encoding = load_encoding(run_dir, which, config)
    if kind == "gguf":
        from train.gguf import export as export_gguf

        export_gguf(model, config, encoding, out, tensor_type or "f16", pre_tokenizer, name=os.path.basename(os.path.normpath(run_dir)),
                    warn=lambda line: click.echo(line, err=True))
        click.echo(f"{out}: {os.path.getsize(out):,} bytes; runs in llama.cpp (llama-completion -m {out}, llama-server -m {out}), "
                   f"Ollama and LM Studio (docs/gguf.md)")
        return
    from train.hf import export as export_hf

    export_hf(model, config, out, encoding)
    click.echo(f"{out}: loads with transformers' AutoModelForCausalLM.from_pretrained and AutoTokenizer.from_pretrained")
