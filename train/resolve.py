"""From `train fit`'s options to the run they ask for: its RunConfig and StepPlan, for a new run and for --resume
alike (the CLI, the torchrun entry, `train nightly` and the tests all come through here). Every given option takes
effect or is refused in one line; none is dropped."""

import dataclasses
import json
import math
import os

import click

from prepare.clitools import parse_duration
from train.config import ConfigError, DataSource, RunConfig, StepPlan, mixture_name, read_config
from train.models import FAMILIES, PRESETS, TRAIN_DEFAULTS
from train.options import click_options, given_options

# What a checkpoint's weights and optimizer state are shaped by: a resume cannot change these.
FIXED_ON_RESUME = ("preset", "n_layer", "n_head", "n_embd", "context", "bias", "qk_norm", "init_from", "optimizer")
BUDGETS = ("max_steps", "max_tokens", "max_time")

# The fit command's options that are no setting of the run, after the setting each follows in --help.
NOT_SETTINGS = {
    "data": [click.Option(["--mixture"], type=click.Path(dir_okay=False),
                          help='A mixture from a JSON file: [{"path": DIR, "weight": W, "max_epochs": E}, ...].')],
    "max_time": [
        click.Option(["--session-steps"], type=click.IntRange(1), help="Budget of this session alone: optimizer "
                     "steps from where it starts (with --resume: replaces the run's budget)."),
        click.Option(["--session-time"], callback=parse_duration, help="Budget of this session alone: its wall time, "
                     "e.g. 2h (with --resume: replaces the run's budget)."),
    ],
    "init_from": [
        click.Option(["--resume"], is_flag=True, help="Continue the run in --out from its latest checkpoint; options "
                     "given with it take effect (a larger budget extends the run), those fixing the model's shape "
                     "are refused."),
        click.Option(["--allow-data-change"], is_flag=True, help="Resume even if the train data changed (the "
                     "dataset was updated since the run started)."),
    ],
}


def fit_params():
    """The options of `train fit`, in the order --help lists them."""
    return click_options(RunConfig, after={**NOT_SETTINGS, "min_lr": click_options(StepPlan)})


def parse_fit_args(args):
    """(The fit command's option values, the names given) of fit's command-line arguments `args`."""
    ctx = click.Command("fit", params=fit_params()).make_context("fit", list(args))
    return ctx.params, given_options(ctx)


def parse_data(value):
    """A --data value, `DIR` or `DIR=WEIGHT`, as a DataSource."""
    path, equals, weight = value.rpartition("=")
    if not equals or os.path.exists(value):
        return DataSource(value)
    try:
        return DataSource(path, float(weight))
    except ValueError:
        raise ConfigError(f"--data {value}: the weight after '=' must be a number, e.g. --data {path}=0.3") from None


def read_mixture(path):
    """The DataSources of a --mixture file: a JSON list of {"path", "weight", optional "max_epochs", "name"}."""
    try:
        with open(path) as f:
            entries = json.load(f)
    except OSError as e:
        raise ConfigError(f"--mixture {path}: {e.strerror}") from None
    except (ValueError, RecursionError) as e:
        raise ConfigError(f"--mixture {path}: not JSON ({e})") from None
    fields = {f.name for f in dataclasses.fields(DataSource)}
    if not isinstance(entries, list) or not entries or not all(isinstance(e, dict) and "path" in e for e in entries):
        raise ConfigError(f'--mixture {path}: expected a list like [{{"path": "data/web", "weight": 0.7}}, ...]')
    for entry in entries:
        if set(entry) - fields:
            raise ConfigError(f"--mixture {path}: unknown key {sorted(set(entry) - fields)[0]!r}; keys are "
                              f"{sorted(fields)}")
    return [DataSource(**entry) for entry in entries]


def check_mixture(sources):
    names = [s.name for s in sources]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(f"two datasets are named {twice[0]!r}; give each a \"name\" in a --mixture file")
    return sources


def request(values, given):
    """(RunConfig, StepPlan, this session's own budget) of the fit command's option `values`, those `given` on
    the command line: a new run's, or on --resume the run's in --out with the options given taking effect."""
    options = {k: v for k, v in values.items() if k not in ("resume", "allow_data_change", "mixture")}
    session = (options.pop("session_steps"), options.pop("session_time"))
    given = set(given)
    if options["data"] and values["mixture"]:
        raise ConfigError("give --data or --mixture, not both")
    if options["data"] or values["mixture"]:
        sources = read_mixture(values["mixture"]) if values["mixture"] else [parse_data(d) for d in options["data"]]
        options["data"] = check_mixture(sources)
        given.add("data")
    elif not values["resume"]:
        raise ConfigError("give the data: --data DIR (repeat as DIR=WEIGHT for a mixture) or --mixture FILE")
    else:
        options["data"] = None
    if not options["out"]:
        if not options["data"]:
            raise ConfigError("--resume needs --out, the run directory to continue")
        options["out"] = os.path.join("runs", mixture_name(options["data"]))
    if values["resume"]:
        from train import checkpoint

        return (*resolve(options, given | {"out"}, read_config(checkpoint.locate(options["out"]))), session)
    if os.path.exists(os.path.join(options["out"], "config.json")):
        raise ConfigError(f"{options['out']} already holds a run; continue it with --resume, or choose another --out")
    if any(session):  # a first session's budget is the run's so far
        options.update(max_steps=options["max_steps"] or session[0], max_time=options["max_time"] or session[1])
        given |= {"max_steps", "max_time"}
    return (*resolve(options, given, hf_shape=init_shape(options["init_from"])), (None, None))


def init_shape(init_from):
    """The shape of an --init-from model (None without one)."""
    if not init_from:
        return None
    from train.fetch import hub_model
    from train.hf import read_hf_config

    return read_hf_config(hub_model(init_from))


def resolve(options, given, previous=None, hf_shape=None):
    """(RunConfig, StepPlan) of a run from CLI `options` (every option, None when unset), the names of those
    `given` on the command line, and, on --resume, the `previous` (RunConfig, StepPlan). `hf_shape` is the
    shape of an --init-from model. Every given option takes effect or raises ConfigError; none is dropped."""
    options = dict(options)
    tokens_per_step, warmup_steps = options.pop("tokens_per_step", None), options.pop("warmup_steps", None)
    if previous is None:
        config, plan = new_config(options, given, hf_shape), StepPlan(warmup_steps=warmup_steps)
    else:
        config, plan = resumed_config(options, given, *previous)
        if "warmup_steps" in given:
            plan = dataclasses.replace(plan, warmup_steps=warmup_steps)
    if tokens_per_step is not None or "batch_size" in given:
        micro = config.batch_size * config.context
        micro_batches = max(1, math.ceil((tokens_per_step or config.tokens_per_step) / micro))
        config = dataclasses.replace(config, tokens_per_step=micro_batches * micro)
        if config.max_tokens:  # the same token budget is now another number of steps
            plan = StepPlan(warmup_steps=plan.warmup_steps)
    config.check()
    return config, plan


def new_config(options, given, hf_shape):
    """A new run's configuration: the preset's (or the --init-from model's) values, the options over them."""
    if hf_shape and "preset" not in given:  # the family of the model given
        options["preset"] = FAMILIES[hf_shape["family"]].INIT_FROM_PRESET
    preset = options["preset"]
    values = {**PRESETS[preset], **TRAIN_DEFAULTS[preset]}
    if hf_shape:
        if hf_shape["family"] != values["family"]:
            raise ConfigError(f"--init-from {options['init_from']} is a {hf_shape['family']} model, --model {preset} "
                              f"is not")
        clash = [k for k in ("n_layer", "n_head", "n_embd", "context") if k in given and options[k] != hf_shape[k]]
        if clash:
            raise ConfigError(f"--init-from {options['init_from']} fixes {', '.join(clash)}; drop those options")
        values.update({k: v for k, v in hf_shape.items() if k != "vocab_size"})
    if problem := FAMILIES[values["family"]].option_problem(preset, options, hf_shape):
        raise ConfigError(problem)
    values.update({k: v for k, v in options.items() if v is not None})
    values.setdefault("min_lr", values["lr"] / 10)
    # One micro-batch per process unless --tokens-per-step says otherwise (torchrun sets WORLD_SIZE).
    values["tokens_per_step"] = values["batch_size"] * values["context"] * int(os.environ.get("WORLD_SIZE", 1))
    config = RunConfig.from_dict(values, "options", saved=False)
    if not any(getattr(config, k) for k in BUDGETS):
        raise ConfigError("give a budget: --max-steps, --max-tokens or --max-time")
    return config


def resumed_config(options, given, previous, plan):
    """A resumed run's configuration and step plan: `previous`'s with the options given over them. A new budget
    replaces the old one, and the step count is redone."""
    changed = [k for k in FIXED_ON_RESUME if k in given and options[k] != getattr(previous, k)]
    if changed:
        flags = ", ".join("--" + ("model" if k == "preset" else k.replace("_", "-")) for k in changed)
        raise ConfigError(f"--resume cannot change {flags} of {previous.out}: the checkpoint's weights or optimizer "
                          f"state are shaped by it; start a new run with another --out")
    updates = {k: options[k] for k in given if k not in FIXED_ON_RESUME and k in options}
    if any(k in given for k in BUDGETS):
        updates.update({k: options[k] if k in given else None for k in BUDGETS})
        plan = StepPlan(warmup_steps=plan.warmup_steps)
    if "lr" in given and "min_lr" not in given:
        updates["min_lr"] = options["lr"] / 10
    return dataclasses.replace(previous, **updates), plan
