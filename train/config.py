"""The run configuration: one typed object, resolved once from the command line (or a resumed run's saved
config), written to config.json and into every checkpoint.

`resolve` is the only place options become a configuration, for a new run and for `--resume` alike:
the CLI, the torchrun entry (the same CLI) and the tests all go through it.
"""

import dataclasses
import json
import math
import os

from train.model import PRESETS

# Training defaults per model preset; every one can be overridden on the command line.
TRAIN_DEFAULTS = {
    "tiny": dict(lr=2e-3, batch_size=8),
    "gpt2": dict(lr=6e-4, batch_size=8),
    "gpt2-medium": dict(lr=3e-4, batch_size=4),
    "gpt2-large": dict(lr=2.5e-4, batch_size=2),
    "gpt2-xl": dict(lr=2e-4, batch_size=1),
}
# What a checkpoint's weights are shaped by: a resume cannot change these.
FIXED_ON_RESUME = ("preset", "n_layer", "n_head", "n_embd", "context", "bias", "init_from")


class ConfigError(Exception):
    """An option that cannot take effect; the message names it."""


@dataclasses.dataclass
class RunConfig:
    data: str
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
    # Budgets as given; the smallest wins. `steps` is what they come to, fixed before step 0 (a time budget by
    # timing real steps) and the only stopping rule, so that a resumed run ends where the original would.
    max_steps: int | None = None
    max_tokens: int | None = None
    max_time: float | None = None  # seconds of wall time for the whole run, sessions before a resume included
    steps: int | None = None
    warmup_steps: int | None = None  # None: 5% of the steps, at most 100, fixed with `steps`
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    eval_every: int = 200
    eval_windows: int = 64
    ckpt_every: int = 500
    samples: bool = True
    tensorboard: bool = False
    wandb_project: str | None = None
    seed: int = 1337
    device: str = "auto"
    dtype: str = "auto"  # resolved to fp32, bf16 or fp16 when the run starts, and kept
    compile: bool | None = None  # None: decided for the device when the run starts
    init_from: str | None = None
    tokenizer: dict | None = None  # the dataset's, filled in when the run starts

    @property
    def micro_batches(self):
        """Micro-batches per optimizer step, over all processes."""
        return self.tokens_per_step // (self.batch_size * self.context)

    def to_json(self):
        return json.dumps(dataclasses.asdict(self), indent=1)

    @classmethod
    def from_dict(cls, values, where):
        names = {f.name for f in dataclasses.fields(cls)}
        try:
            return cls(**{k: v for k, v in values.items() if k in names})
        except TypeError as e:
            raise ConfigError(f"{where}: not a gptmill run configuration ({e})") from None


BUDGETS = ("max_steps", "max_tokens", "max_time")


def resolve(options, given, previous=None, hf_shape=None):
    """The configuration of a run from CLI `options` (every option, None when unset), the names of those
    `given` on the command line, and, on --resume, the `previous` configuration. `hf_shape` is the shape
    of an --init-from model. Every given option takes effect or raises ConfigError; none is dropped."""
    options = dict(options)
    tokens_per_step = options.pop("tokens_per_step", None)
    if previous is None:
        preset = options["preset"]
        values = {**PRESETS[preset], **TRAIN_DEFAULTS[preset]}
        if hf_shape:
            clash = [k for k in ("n_layer", "n_head", "n_embd", "context") if k in given and options[k] != hf_shape[k]]
            if clash:
                raise ConfigError(f"--init-from {options['init_from']} fixes {', '.join(clash)}; drop those options")
            values.update({k: hf_shape[k] for k in ("n_layer", "n_head", "n_embd", "context")})
        values.update({k: v for k, v in options.items() if v is not None})
        values.setdefault("min_lr", values["lr"] / 10)
        # One micro-batch per process unless --tokens-per-step says otherwise (torchrun sets WORLD_SIZE).
        values["tokens_per_step"] = values["batch_size"] * values["context"] * int(os.environ.get("WORLD_SIZE", 1))
        config = RunConfig.from_dict(values, "options")
        if not any(getattr(config, k) for k in BUDGETS):
            raise ConfigError("give a budget: --max-steps, --max-tokens or --max-time")
    else:
        changed = [k for k in FIXED_ON_RESUME if k in given and options[k] != getattr(previous, k)]
        if changed:
            flags = ", ".join("--" + ("model" if k == "preset" else k.replace("_", "-")) for k in changed)
            raise ConfigError(f"--resume cannot change {flags} of {previous.out}: the checkpoint's weights are shaped by it; "
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
    return config


def step_budget(config):
    """The step count that the step and token budgets allow (None if neither is set)."""
    limits = [config.max_steps] if config.max_steps else []
    if config.max_tokens:
        limits.append(math.ceil(config.max_tokens / config.tokens_per_step))
    return min(limits, default=None)
