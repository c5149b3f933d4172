"""The run configuration: one typed object, resolved once from the command line (or a resumed run's saved
config), written to config.json and into every checkpoint.

`resolve` is the only place options become a configuration, for a new run and for `--resume` alike:
the CLI, the torchrun entry (the same CLI) and the tests all go through it.
"""

import dataclasses
import json
import math
import os
import types
import typing

# Model presets of both families: GPT-2 (train/model.py) and Llama-style (train/llama.py) with GPT-2's shapes.
# Plain data, so that the command line lists them without importing torch.
GPT2_SHAPES = {
    "tiny": dict(n_layer=4, n_head=4, n_embd=128, context=128),
    "gpt2": dict(n_layer=12, n_head=12, n_embd=768, context=1024),
    "gpt2-medium": dict(n_layer=24, n_head=16, n_embd=1024, context=1024),
    "gpt2-large": dict(n_layer=36, n_head=20, n_embd=1280, context=1024),
    "gpt2-xl": dict(n_layer=48, n_head=25, n_embd=1600, context=1024),
}
LLAMA_SHAPES = {
    "tiny-llama": GPT2_SHAPES["tiny"],
    "llama-small": GPT2_SHAPES["gpt2"],
    "llama-medium": GPT2_SHAPES["gpt2-medium"],
    "llama-large": GPT2_SHAPES["gpt2-large"],
}
PRESETS = {
    **{name: dict(shape, family="gpt2", bias=True) for name, shape in GPT2_SHAPES.items()},
    **{name: dict(shape, family="llama", bias=False, mlp="swiglu", qk_norm=True, tie_embeddings=True)
       for name, shape in LLAMA_SHAPES.items()},
}
# Training defaults per model preset; every one can be overridden on the command line.
TRAIN_DEFAULTS = {
    "tiny": dict(lr=2e-3, batch_size=8, optimizer="adamw"),
    "gpt2": dict(lr=6e-4, batch_size=8, optimizer="adamw"),
    "gpt2-medium": dict(lr=3e-4, batch_size=4, optimizer="adamw"),
    "gpt2-large": dict(lr=2.5e-4, batch_size=2, optimizer="adamw"),
    "gpt2-xl": dict(lr=2e-4, batch_size=1, optimizer="adamw"),
    # 16 windows a step: more per token than 8 or 32 at 1M tokens (a tie or worse at 0.5M), 20% more tokens/s than 8;
    # 3e-3 beat 4e-3 (docs/log.md)
    "tiny-llama": dict(lr=3e-3, batch_size=16, optimizer="muon"),
    "llama-small": dict(lr=1.5e-3, batch_size=8, optimizer="muon"),
    "llama-medium": dict(lr=1e-3, batch_size=4, optimizer="muon"),
    "llama-large": dict(lr=8e-4, batch_size=2, optimizer="muon"),
}
# What a checkpoint's weights and optimizer state are shaped by: a resume cannot change these.
FIXED_ON_RESUME = ("preset", "n_layer", "n_head", "n_embd", "context", "bias", "qk_norm", "init_from", "optimizer")


# A run configured before a field existed goes on as it started: the field's value then (#21's schedule and
# sampling defaults; the warmdown's length, nanochat's 65% until it became a field).
WRITTEN_BEFORE = {"schedule": "cosine", "sampling": "random", "warmdown_fraction": 0.65}


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
            raise ConfigError(f"--mixture {path}: unknown key {sorted(set(entry) - fields)[0]!r}; keys are {sorted(fields)}")
    return [DataSource(**entry) for entry in entries]


def mixture_name(sources):
    """The data's name: its dataset's, or its datasets' joined by '+'."""
    return "+".join(s.name for s in sources)


def check_mixture(sources):
    names = [s.name for s in sources]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(f"two datasets are named {twice[0]!r}; give each a \"name\" in a --mixture file")
    return sources


@dataclasses.dataclass
class RunConfig:
    data: list[DataSource]
    out: str
    preset: str
    n_layer: int
    n_head: int
    n_embd: int
    context: int
    batch_size: int  # windows per micro-batch, per process
    tokens_per_step: int  # per optimizer step, over all processes: batch_size x context x micro_batches
    lr: float
    min_lr: float
    dropout: float = 0.0
    bias: bool = True
    family: str = "gpt2"  # the preset's: "gpt2" or "llama"
    mlp: str | None = None  # Llama-style only: "swiglu" or "relu2"
    qk_norm: bool | None = None  # Llama-style only
    tie_embeddings: bool | None = None  # Llama-style only (GPT-2's are always tied)
    optimizer: str = "adamw"  # or "muon": Muon for the hidden matrices, AdamW for the rest (train/optim.py)
    # Budgets as given; the smallest wins. `steps` is what they come to, fixed before step 0 (a time budget by
    # timing real steps) and the only stopping rule, so that a resumed run ends where the original would.
    max_steps: int | None = None
    max_tokens: int | None = None
    max_time: float | None = None  # seconds of wall time for the whole run, sessions before a resume included
    steps: int | None = None
    # A time budget's step count is decided from a short calibration before step 0 (`timing`: seconds per step,
    # evaluation and checkpoint), then again at `retime_at` from the seconds of the run's own steps: after the
    # warmup and, with the warmdown schedule, in the middle of its flat rate (the learning rate so far does not
    # depend on the count; train/budget.py); None once decided.
    timing: list[float] | None = None
    retime_at: int | None = None
    warmup_steps: int | None = None  # None: 5% of the steps, at most 100, fixed with `steps`
    # Where a training window may start ("any" token, or a "document"'s start and every `context` tokens inside
    # it), and whether windows are drawn independently ("random") or in "epochs" that visit each start once: at
    # equal tokens epochs learned 0.051 nats more at one epoch of TinyStories and 0.087 at three (docs/log.md).
    window_start: str = "any"
    sampling: str = "epochs"
    # "warmdown": the learning rate flat after warmup, then linear over the last `warmdown_fraction` of the steps,
    # and Muon's momentum warmed from 0.85 to 0.97 (docs/log.md); "cosine": a cosine decay and momentum 0.95
    # throughout. Half the steps learned as much as nanochat's 65% on stdlib and 0.011 more on TinyStories.
    # "open": flat after warmup for good (train/schedule.py); `train cooldown` branches it.
    schedule: str = "warmdown"
    warmdown_fraction: float = 0.5
    # A cool-down branch of an open run: the rate decays from the main line's at step `cooldown_from` to min_lr
    # over the `cooldown_steps` steps after it. None on a main line.
    cooldown_from: int | None = None
    cooldown_steps: int | None = None
    # --follow-data: a resumed run moves to each dataset's generation in force (train/history.py), and while the
    # documents added since the previous session are not all drawn, a `replay` share of each step's windows is
    # drawn as usual (from the whole live corpus) and the rest from the new documents. 0.8 learned 0.066 bits per
    # byte more than 0.5 over two seeds, 0.2 0.07 less, 0.95 0.016 more on one (docs/log.md): a fifth of each
    # step is still 20 times the share of a night that adds 1% of the corpus.
    follow_data: bool = False
    replay: float = 0.8
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    eval_every: int = 200
    eval_windows: int = 64
    ckpt_every: int = 500
    # Downstream accuracies during training (prepare/evals/): "hellaswag", "core" or both, scored on the
    # same first `eval_tasks_max` items of each task every `eval_tasks_every` steps (None: at each evaluation).
    eval_tasks: str | None = None
    eval_tasks_every: int | None = None
    eval_tasks_max: int = 500
    samples: bool = True
    tensorboard: bool = False
    wandb_project: str | None = None
    seed: int = 1337
    device: str = "auto"
    collective_timeout: float = 1800.0  # seconds a process of a torchrun job waits for the others in a collective
    dtype: str = "auto"  # resolved to fp32, bf16 or fp16 when the run starts, and kept
    compile: bool | None = None  # None: decided for the device when the run starts
    init_from: str | None = None
    tokenizer: dict | None = None  # the dataset's, filled in when the run starts

    @property
    def micro_batches(self):
        """Micro-batches per optimizer step, over all processes."""
        return self.tokens_per_step // (self.batch_size * self.context)

    @property
    def tasks_every(self):
        """Steps between downstream scorings (0: at the end only)."""
        return self.eval_every if self.eval_tasks_every is None else self.eval_tasks_every

    def to_json(self):
        return json.dumps(dataclasses.asdict(self), indent=1)

    @classmethod
    def from_dict(cls, values, where, saved=True):
        """The configuration of `values`: a saved one (config.json, a checkpoint's), whose missing fields are
        those it was written before (WRITTEN_BEFORE), or, not `saved`, a new run's options."""
        if not isinstance(values, dict):
            raise ConfigError(f"{where}: not a gptmill run configuration (a {type(values).__name__}, not an object)")
        names = {f.name for f in dataclasses.fields(cls)}
        values = {**WRITTEN_BEFORE, **values} if saved else dict(values)
        data = values.get("data")
        if isinstance(data, str):  # written before mixtures
            values["data"] = [DataSource(data)]
        elif isinstance(data, list):
            values["data"] = [DataSource(**d) if isinstance(d, dict) else d for d in data]
        try:
            config = cls(**{k: v for k, v in values.items() if k in names})
        except TypeError as e:
            raise ConfigError(f"{where}: not a gptmill run configuration ({e})") from None
        config.check_types(where)
        return config

    def check_types(self, where):
        """Every field of the type it is declared with (a hand-edited or corrupt config.json says so here, not
        as a traceback deep in the model)."""
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            union = typing.get_origin(field.type) in (typing.Union, types.UnionType)
            if not any(is_a(value, kind) for kind in (typing.get_args(field.type) if union else (field.type,))):
                raise ConfigError(f"{where}: {field.name} is {value!r}, not a {field.type}")

    def check(self):
        """Values that no model or optimizer can run with, named by their option."""
        head_size, odd = divmod(self.n_embd, self.n_head)
        if odd:
            raise ConfigError(f"--n-embd {self.n_embd} is not a multiple of --n-head {self.n_head}: every head gets the same width")
        if self.family == "llama" and head_size % 2:
            raise ConfigError(f"--n-embd {self.n_embd} / --n-head {self.n_head} is a head size of {head_size}; rotary positions "
                              f"need an even one")
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
            raise ConfigError(f"--replay {self.replay}: must be a number from 0 to below 1 (the share of windows drawn as usual)")
        if not (math.isfinite(self.warmdown_fraction) and 0 <= self.warmdown_fraction <= 1):
            raise ConfigError(f"--warmdown-fraction {self.warmdown_fraction}: must be a number from 0 to 1")


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


BUDGETS = ("max_steps", "max_tokens", "max_time")


def resolve(options, given, previous=None, hf_shape=None):
    """The configuration of a run from CLI `options` (every option, None when unset), the names of those
    `given` on the command line, and, on --resume, the `previous` configuration. `hf_shape` is the shape
    of an --init-from model. Every given option takes effect or raises ConfigError; none is dropped."""
    options = dict(options)
    tokens_per_step = options.pop("tokens_per_step", None)
    if previous is None:
        if hf_shape and "preset" not in given:  # the family of the model given
            options["preset"] = {"gpt2": "tiny", "llama": "tiny-llama"}[hf_shape["family"]]
        preset = options["preset"]
        values = {**PRESETS[preset], **TRAIN_DEFAULTS[preset]}
        if hf_shape:
            if hf_shape["family"] != values["family"]:
                raise ConfigError(f"--init-from {options['init_from']} is a {hf_shape['family']} model, --model {preset} is not")
            clash = [k for k in ("n_layer", "n_head", "n_embd", "context") if k in given and options[k] != hf_shape[k]]
            if clash:
                raise ConfigError(f"--init-from {options['init_from']} fixes {', '.join(clash)}; drop those options")
            values.update({k: v for k, v in hf_shape.items() if k != "vocab_size"})
        if values["family"] == "llama" and options.get("bias"):
            raise ConfigError(f"--model {preset} is Llama-style, which has no biases; drop --bias")
        if values["family"] == "gpt2" and options.get("qk_norm") is not None:
            raise ConfigError(f"--model {preset} is GPT-2, which has no QK-norm; drop --qk-norm/--no-qk-norm")
        if hf_shape and options.get("qk_norm") is not None and options["qk_norm"] != hf_shape.get("qk_norm"):
            raise ConfigError(f"--init-from {options['init_from']} fixes the QK-norm; drop --qk-norm/--no-qk-norm")
        values.update({k: v for k, v in options.items() if v is not None})
        values.setdefault("min_lr", values["lr"] / 10)
        # One micro-batch per process unless --tokens-per-step says otherwise (torchrun sets WORLD_SIZE).
        values["tokens_per_step"] = values["batch_size"] * values["context"] * int(os.environ.get("WORLD_SIZE", 1))
        config = RunConfig.from_dict(values, "options", saved=False)
        if not any(getattr(config, k) for k in BUDGETS):
            raise ConfigError("give a budget: --max-steps, --max-tokens or --max-time")
    else:
        changed = [k for k in FIXED_ON_RESUME if k in given and options[k] != getattr(previous, k)]
        if changed:
            flags = ", ".join("--" + ("model" if k == "preset" else k.replace("_", "-")) for k in changed)
            raise ConfigError(f"--resume cannot change {flags} of {previous.out}: the checkpoint's weights or optimizer state are shaped by it; "
                              f"start a new run with another --out")
        updates = {k: options[k] for k in given if k not in FIXED_ON_RESUME and k in options}
        if any(k in given for k in BUDGETS):  # a new budget replaces the old one, and the step count is redone
            updates.update({k: options[k] if k in given else None for k in BUDGETS}, steps=None)
        if "lr" in given and "min_lr" not in given:
            updates["min_lr"] = options["lr"] / 10
        config = dataclasses.replace(previous, **updates)
    if tokens_per_step is not None or "batch_size" in given:
        micro = config.batch_size * config.context
        config.tokens_per_step = max(1, math.ceil((tokens_per_step or config.tokens_per_step) / micro)) * micro
        if config.max_tokens:
            config.steps = None  # the same token budget is now another number of steps
    config.check()
    return config


def step_budget(config):
    """The step count that the step and token budgets allow (None if neither is set)."""
    limits = [config.max_steps] if config.max_steps else []
    if config.max_tokens:
        limits.append(math.ceil(config.max_tokens / config.tokens_per_step))
    return min(limits, default=None)
