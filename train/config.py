"""The run configuration, one typed object (RunConfig) resolved from the command line (train/resolve.py), settled
for the device and the data where the run starts (train/fit.py) and not changed after; beside it its StepPlan,
what its budgets come to (train/budget.py). config.json and every checkpoint hold the two as one object.

Each setting of `train fit` is a field of RunConfig: its default, help and type make the option (train/options.py).
"""

import dataclasses
import json
import math
import os
import types
import typing

import click

from prepare.clitools import parse_duration
from prepare.format import write_atomic
from train.models import FAMILIES, PRESETS
from train.options import setting

# A run configured before a field existed goes on as it started: the field's value then (#21's schedule and
# sampling defaults; the warmdown's length, nanochat's 65% until it became a field).
WRITTEN_BEFORE = {"schedule": "cosine", "sampling": "random", "warmdown_fraction": 0.65}
DTYPES = ["auto", "fp32", "bf16", "fp16"]
CONFIG = "config.json"


class ConfigError(Exception):
    """An option that cannot take effect; the message names it."""


@dataclasses.dataclass
class DataSource:
    """One prepared dataset of the run's mixture (a single --data DIR is a mixture of one, weight 1)."""

    path: str
    weight: float = 1.0  # relative: a window comes from this dataset with probability weight / sum of weights
    max_epochs: float | None = None  # leaves the mixture once its train tokens are expected to be seen this often
    name: str = ""  # what its metrics are called: the directory's name unless the mixture file says otherwise

    def __post_init__(self):
        if not isinstance(self.path, (str, os.PathLike)) or not str(self.path):
            raise ConfigError(f"dataset path {self.path!r} is not a directory name")
        self.path = os.fspath(self.path)
        self.name = self.name or os.path.basename(os.path.normpath(self.path))
        if not (isinstance(self.weight, (int, float)) and self.weight > 0 and math.isfinite(self.weight)):
            raise ConfigError(f"{self.path}: weight {self.weight!r} is not a positive number")
        if self.max_epochs is not None and not (isinstance(self.max_epochs, (int, float)) and self.max_epochs > 0):
            raise ConfigError(f"{self.path}: max_epochs {self.max_epochs!r} is not a positive number")


def mixture_name(sources):
    """The data's name: its dataset's, or its datasets' joined by '+'."""
    return "+".join(s.name for s in sources)


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunConfig:
    """Every setting of a run, in the order `train fit --help` lists them. A field without an option is fixed by
    the preset (family, mlp, tie_embeddings), by `train cooldown` (cooldown_*) or by the data (tokenizer)."""

    data: list[DataSource] = setting(multiple=True, help="Dataset directory made by prepare; repeat as DIR=WEIGHT "
                                     "for a mixture (weights are relative).")
    out: str = setting(type=click.Path(file_okay=False), help="Run directory [default: runs/<dataset name>].")
    preset: str = setting("tiny-llama", "--model", shown=True, type=click.Choice(list(PRESETS)),
                          help="Model preset (fixed for the run): GPT-2 (tiny, gpt2...) or Llama-style (tiny-llama, "
                          "llama-...).")
    n_layer: int = setting(type=click.IntRange(1), help="Override the preset's layers.")
    n_head: int = setting(type=click.IntRange(1), help="Override the preset's attention heads.")
    n_embd: int = setting(type=click.IntRange(1), help="Override the preset's width.")
    context: int = setting(type=click.IntRange(1), help="Tokens of context [default: the preset's].")
    dropout: float = setting(0.0, shown=True, type=click.FloatRange(0, 1))
    bias: bool = setting(True, "--bias/--no-bias", help="Biases in Linear and LayerNorm layers (GPT-2 only) "
                         "[default: on].")
    family: str = "gpt2"  # the preset's: "gpt2" or "llama"
    mlp: str | None = None  # Llama-style only: "swiglu" or "relu2"
    tie_embeddings: bool | None = None  # Llama-style only (GPT-2's are always tied)
    qk_norm: bool | None = setting(None, "--qk-norm/--no-qk-norm", help="Llama-style only: RMSNorm on queries and "
                                   "keys [default: on]; without it `export` writes LlamaForCausalLM, with it "
                                   "Qwen3ForCausalLM.")
    optimizer: str = setting("adamw", type=click.Choice(["adamw", "muon"]), help="muon: Muon for the hidden "
                             "matrices, AdamW for embeddings, output layer and norms [default: the preset's].")
    # per process
    batch_size: int = setting(type=click.IntRange(1), help="Windows per micro-batch [default: the preset's].")
    # Per optimizer step, over all processes: batch_size x context x micro-batches.
    tokens_per_step: int = setting(type=click.IntRange(1), help="Tokens per optimizer step over all processes, "
                                   "rounded up to whole micro-batches (gradient accumulation) [default: one "
                                   "micro-batch per process].")
    window_start: str = setting("any", shown=True, type=click.Choice(["any", "document"]),
                                help="Where a training window starts: any token, or a document's start (and every "
                                "context tokens inside a long document).")
    # Epochs learned more per token than windows drawn anywhere (docs/log.md).
    sampling: str = setting("epochs", shown=True, type=click.Choice(["random", "epochs"]),
                            help="epochs: every window start (one each context tokens) once per epoch, in an order "
                            "drawn from the seed; random: each window drawn independently, anywhere.")
    # Why the warmdown, its momentum and half the steps of decay: docs/log.md; "open": train/schedule.py.
    schedule: str = setting("warmdown", shown=True, type=click.Choice(["warmdown", "cosine", "open"]),
                            help="warmdown: the learning rate flat after warmup, then linear to --min-lr over the "
                            "last --warmdown-fraction of the steps, Muon's momentum 0.85 to 0.97 over 400 steps and "
                            "down to 0.90 with it; cosine: a cosine decay to --min-lr, momentum 0.95; open: flat "
                            "after warmup for good, for a run that goes on night after night (`cooldown` gives the "
                            "model to release).")
    # A cool-down branch of an open run decays from the main line's rate at step cooldown_from over the
    # cooldown_steps after it (train/cooldown.py); None on a main line.
    cooldown_from: int | None = None
    cooldown_steps: int | None = None
    # Budgets as given; the smallest wins. What they come to is the run's StepPlan.
    max_steps: int | None = setting(None, type=click.IntRange(1), help="Budget: optimizer steps.")
    max_tokens: int | None = setting(None, type=click.IntRange(1), help="Budget: training tokens.")
    max_time: float | None = setting(None, callback=parse_duration, help="Budget: wall time of the whole run, e.g. "
                                     "10m, evaluations and checkpoints included (fixed as a step count by timing a "
                                     "few real steps).")
    lr: float = setting(type=float, help="Peak learning rate [default: the preset's].")
    warmdown_fraction: float = setting(0.5, shown=True, type=float, help="--schedule warmdown: the share of the steps "
                                       "over which the learning rate decays (0: none, 1: all after the warmup).")
    min_lr: float = setting(type=float, help="Learning rate at the last step, where the decay ends [default: lr/10].")
    weight_decay: float = setting(0.1, shown=True, type=float)
    beta1: float = setting(0.9, shown=True, type=float)
    beta2: float = setting(0.95, shown=True, type=float)
    grad_clip: float = setting(1.0, shown=True, type=float, help="Clip the gradient norm to this (0: no clipping).")
    eval_every: int = setting(200, shown=True, type=click.IntRange(0), help="Steps between evaluations (and at the "
                              "end).")
    eval_windows: int = setting(64, shown=True, type=click.IntRange(1), help="Fixed windows per split for "
                                "evaluation.")
    # Downstream accuracies during training (prepare/evals/), on the same first items every time.
    eval_tasks: str | None = setting(None, help="Also score downstream tasks during training: hellaswag, core, or "
                                     "both comma-separated (files downloaded once; see `score`).")
    eval_tasks_every: int | None = setting(None, type=click.IntRange(0), help="Steps between downstream scorings "
                                           "(and at the end) [default: --eval-every].")
    eval_tasks_max: int = setting(500, shown=True, type=click.IntRange(1), help="Items scored per task: the same "
                                  "first N every time.")
    ckpt_every: int = setting(500, shown=True, type=click.IntRange(0), help="Steps between checkpoints (and at the "
                              "end).")
    samples: bool = setting(True, "--samples/--no-samples", shown=True, help="Print sample continuations at each "
                            "evaluation.")
    tensorboard: bool = setting(False, "--tensorboard", help="Also log to TensorBoard (RUN/tensorboard; needs the "
                                "tensorboard package).")
    wandb_project: str | None = setting(None, help="Also log to this Weights & Biases project (needs the wandb "
                                        "package).")
    seed: int = setting(1337, shown=True, type=click.IntRange(0))
    device: str = setting("auto", shown=True, help="auto, cpu, cuda, cuda:N or mps.")
    collective_timeout: float = setting(1800.0, shown=True, callback=parse_duration, help="Under torchrun: how long "
                                        "a process waits for the others (e.g. while rank 0 writes a checkpoint) "
                                        "before the job stops; seconds or 30m, 2h.")
    shard: str = setting("none", shown=True, type=click.Choice(["none", "fsdp"]), help="Under torchrun: none keeps "
                         "the whole model, its gradients and optimizer state on every process (DDP); fsdp shards them "
                         "over the processes (FSDP2, each holds about 1/N: docs/distributed.md).")
    # "auto" and None are decided for the device where the run starts (train/fit.py), and kept.
    dtype: str = setting("auto", shown=True, type=click.Choice(DTYPES), help="auto: bf16 where the hardware has it "
                         "natively, fp16 on GPUs before Ampere, else fp32.")
    compile: bool | None = setting(None, "--compile/--no-compile", help="torch.compile the model [default: on CUDA "
                                   "only].")
    init_from: str | None = setting(None, help="Start from a Hugging Face GPT-2, Llama or Qwen3 model: a directory "
                                    "(e.g. one made by `export`) or a Hub id (hf:openai-community/gpt2).")
    # A run that follows its data (train/history.py); why 0.8 of each step is drawn as usual: docs/log.md.
    follow_data: bool = setting(False, "--follow-data/--no-follow-data", help="On --resume, move to each dataset's "
                                "generation in force, drawing the documents added since the last session first; pins "
                                "each generation trained on (`prepare unpin` releases them) [default: off].")
    replay: float = setting(0.8, type=click.FloatRange(0, 1, max_open=True), help="--follow-data: the share of each "
                            "step's windows drawn as usual (the whole live corpus) while new documents are left to "
                            "draw [default: {default}].")
    tokenizer: dict | None = None  # the datasets', decided where the run starts

    @property
    def micro_batches(self):
        """Micro-batches per optimizer step, over all processes."""
        return self.tokens_per_step // (self.batch_size * self.context)

    @property
    def tasks_every(self):
        """Steps between downstream scorings (0: at the end only)."""
        return self.eval_every if self.eval_tasks_every is None else self.eval_tasks_every

    @classmethod
    def from_dict(cls, values, where, saved=True):
        """The configuration of `values`: a saved one (config.json, a checkpoint's), whose missing fields are
        those it was written before (WRITTEN_BEFORE), or, not `saved`, a new run's options."""
        if not isinstance(values, dict):
            raise ConfigError(f"{where}: not a gptmill run configuration (a {type(values).__name__}, not an object)")
        values = {**WRITTEN_BEFORE, **values} if saved else dict(values)
        data = values.get("data")
        if isinstance(data, str):  # written before mixtures
            values["data"] = [DataSource(data)]
        elif isinstance(data, list):
            values["data"] = [DataSource(**d) if isinstance(d, dict) else d for d in data]
        config = typed(cls, values, where)
        if config.family not in FAMILIES:
            raise ConfigError(f"{where}: family is {config.family!r}, not one of {', '.join(FAMILIES)}")
        return config

    def check(self):
        """Values that no model or optimizer can run with, named by their option."""
        if self.n_embd % self.n_head:
            raise ConfigError(f"--n-embd {self.n_embd} is not a multiple of --n-head {self.n_head}: every head gets "
                              f"the same width")
        if problem := FAMILIES[self.family].shape_problem(self):
            raise ConfigError(problem)
        if self.eval_tasks:
            from prepare.evals import parse_suites

            parse_suites(self.eval_tasks)
        for name, high in (("lr", None), ("min_lr", None), ("weight_decay", None), ("beta1", 1), ("beta2", 1),
                           ("grad_clip", None), ("max_time", None), ("collective_timeout", None)):
            value = getattr(self, name)
            positive = name in ("lr", "max_time", "collective_timeout")
            if value is not None and not (math.isfinite(value) and (value > 0 if positive else value >= 0)
                                          and (high is None or value < high)):
                bounds = ("above 0" if positive else "at least 0") + (f" and below {high}" if high else "")
                raise ConfigError(f"--{name.replace('_', '-')} {value}: must be a number {bounds}")
        if not (math.isfinite(self.replay) and 0 <= self.replay < 1):
            raise ConfigError(f"--replay {self.replay}: must be a number from 0 to below 1 (the share of windows "
                              f"drawn as usual)")
        if not (math.isfinite(self.warmdown_fraction) and 0 <= self.warmdown_fraction <= 1):
            raise ConfigError(f"--warmdown-fraction {self.warmdown_fraction}: must be a number from 0 to 1")


@dataclasses.dataclass(frozen=True)
class StepPlan:
    """What a run's budgets come to (train/budget.py), recorded beside its configuration. `steps`, the only
    stopping rule, is decided before step 0 (a time budget's by timing real steps: `timing`, seconds per step,
    evaluation, checkpoint and task scoring) so that a resumed run ends where the run would have; a time budget
    is timed again at `retime_at`. None: not decided yet (a new budget redoes the plan)."""

    steps: int | None = None
    timing: list[float] | None = None
    retime_at: int | None = None
    warmup_steps: int | None = setting(None, type=click.IntRange(1), help="Linear warmup steps [default: 5% of the "
                                       "budget, at most 100].")  # decided with the first count, then kept


def typed(cls, values, where):
    """A `cls` of the fields of `values` it has, each of the type it is declared with (a hand-edited or corrupt
    config.json says so here, not as a traceback deep in the model)."""
    fields = dataclasses.fields(cls)
    try:
        made = cls(**{f.name: values[f.name] for f in fields if f.name in values})
    except TypeError as e:
        raise ConfigError(f"{where}: not a gptmill run configuration ({e})") from None
    for field in fields:
        value = getattr(made, field.name)
        union = typing.get_origin(field.type) in (typing.Union, types.UnionType)
        if not any(is_a(value, kind) for kind in (typing.get_args(field.type) if union else (field.type,))):
            raise ConfigError(f"{where}: {field.name} is {value!r}, not a {field.type}")
    return made


def is_a(value, kind):
    """isinstance for the declared types of RunConfig's fields (int is a float; a bool is not an int)."""
    kind = typing.get_origin(kind) or kind
    if kind is type(None):
        return value is None
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def record(config, plan):
    """config.json's object: the configuration's settings and its step plan's."""
    return {**dataclasses.asdict(config), **dataclasses.asdict(plan)}


def write_config(run_dir, config, plan):
    """Record the run's configuration and step plan in RUN/config.json; returns its text (each checkpoint
    keeps a copy)."""
    text = json.dumps(record(config, plan), indent=1)
    write_atomic(os.path.join(run_dir, CONFIG), (text + "\n").encode())
    return text


def read_config(folder):
    """(RunConfig, StepPlan) of a run directory's or checkpoint directory's config.json."""
    path = os.path.join(folder, CONFIG)
    try:
        with open(path) as f:
            values = json.load(f)
    except (OSError, ValueError, RecursionError) as e:
        raise ConfigError(f"{path}: unreadable ({e}); was it written by another gptmill version?") from None
    return from_record(values, path)


def from_record(values, where):
    """(RunConfig, StepPlan) of a config.json object."""
    return RunConfig.from_dict(values, where), typed(StepPlan, values, where)
