"""karpathy/nanochat's base recipe trained on a prepared dataset: the `nanochat` rows of `make bench
BENCH=learning`, so that gptmill's recipe is measured against it on the same windows, shape and val tokens.

nanochat's own code does the learning (its GPT and initialisation, MuonAdamW, base_train.py's schedules and
weight-decay scaling); the windows and the score are ours. What is left out of base_train and why, and the
features `--without` takes out: docs/benchmarks.md, Learning. It prints one JSON object: val loss and bits per
byte, steps, train tokens, seconds, tokens per second.

    python bench/nanochat_row.py NANOCHAT_DIR DATA_DIR (--steps N | --minutes M) [--sampling random|epochs]
                                 [--without FEATURE,...]
"""

import argparse
import dataclasses
import inspect
import json
import math
import os
import sys
import textwrap
import time

STARTED = time.time()

import numpy as np
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from prepare import format as fmt  # noqa: E402
from prepare.tokenizer import open_encoding, token_bytes  # noqa: E402
from train.config import DataSource  # noqa: E402
from train.data import Mixture, Split, step_windows  # noqa: E402
from train.evaluate import all_windows  # noqa: E402
from train.models import PRESETS, TRAIN_DEFAULTS  # noqa: E402

# base_train.py's defaults (nanochat 92d63d4).
EMBEDDING_LR, UNEMBEDDING_LR, MATRIX_LR, SCALAR_LR, WEIGHT_DECAY = 0.3, 0.008, 0.02, 0.5, 0.28
WARMUP_STEPS, WARMDOWN_RATIO, FINAL_LR_FRAC, TARGET_PARAM_DATA_RATIO = 40, 0.65, 0.05, 12
REFERENCE_BATCH = 2**19  # base_train's B_REF: the d12 model's batch, where its rates were tuned


def lr_multiplier(step, steps):
    warmdown = round(WARMDOWN_RATIO * steps)
    if step < WARMUP_STEPS:
        return (step + 1) / WARMUP_STEPS
    if step <= steps - warmdown:
        return 1.0
    progress = (steps - step) / warmdown
    return progress + (1 - progress) * FINAL_LR_FRAC


def muon_momentum(step, steps):
    warmdown = round(WARMDOWN_RATIO * steps)
    if step < 400:
        return 0.85 + (0.97 - 0.85) * step / 400
    if step >= steps - warmdown:
        progress = (step - (steps - warmdown)) / warmdown
        return 0.97 * (1 - progress) + 0.90 * progress
    return 0.97


def build(nanochat, shape, vocab_size, depth=None, width=None):
    """nanochat's GPT at our shape (or another depth and width, for its scaling reference), on the meta device."""
    config = nanochat.GPTConfig(sequence_len=shape["context"], vocab_size=vocab_size, n_layer=depth or shape["n_layer"],
                                n_head=shape["n_head"], n_kv_head=shape["n_head"], n_embd=width or shape["n_embd"],
                                window_pattern="L")
    with torch.device("meta"):
        return nanochat.GPT(config)


FEATURES = ("value-embeddings", "smear", "backout", "lambdas", "softcap", "embedding-norm")
# The lines of nanochat's GPT.forward that two features are (their first occurrence: the embedding's norm
# comes before the final one); `without_in_code` checks they are still there.
FORWARD_LINES = {"softcap": "logits = softcap * torch.tanh(logits / softcap)", "embedding-norm": "x = norm(x)"}


def without_in_code(gpt, features):
    """Before the model is built: the features that are lines of nanochat's code, taken out of it."""
    if "value-embeddings" in features:
        gpt.has_ve = lambda layer_idx, n_layer: False
    source = textwrap.dedent(inspect.getsource(gpt.GPT.forward))
    for feature in features & FORWARD_LINES.keys():
        line = FORWARD_LINES[feature]
        if line not in source:
            sys.exit(f"nanochat row: --without {feature}: nanochat's GPT.forward no longer has `{line}`")
        source = source.replace(line, "pass", 1)
    namespace = {}
    exec(source, vars(gpt), namespace)
    gpt.GPT.forward = namespace["forward"]


def without_in_weights(model, optimizer, features):
    """After init: the features that are learned scalars, held at the value that turns them off (their
    gradients zeroed, so AdamW leaves them; the residual scalars' weight decay off)."""
    held = []
    if "smear" in features:
        held += [(model.smear_lambda, 0.0)]
    if "backout" in features:
        held += [(model.backout_lambda, 0.0)]
    if "lambdas" in features:
        held += [(model.x0_lambdas, 0.0), (model.resid_lambdas, 1.0)]
    for parameter, value in held:
        parameter.data.fill_(value)
        parameter.register_hook(torch.zeros_like)
    for group in optimizer.param_groups:
        if any(p is parameter for p in group["params"] for parameter, _ in held):
            group["weight_decay"] = 0.0


def scaling_params(model):
    counts = model.num_scaling_params()
    return counts["transformer_matrices"] + counts["lm_head"]


def val_score(model, split, windows, batch_size, lengths):
    """(nats, targets, nats of targets that stand for text, their bytes) over `windows` of the split: every
    val target once with all_windows, the windows `train eval` scores. nanochat's forward needs two positions:
    a last window of one target takes the token before it as context."""
    model.eval()
    totals = np.zeros(4)
    with torch.no_grad():
        for i in range(0, len(windows), batch_size):
            group = windows[i : i + batch_size]
            for length in sorted({len(w) for w in group}):
                same = np.stack([w for w in group if len(w) == length])
                lead = 0
                if length == 2:  # one target
                    same = np.stack([split.span(split.tokens - 3, split.tokens, {})])
                    lead = 1
                x, y = torch.from_numpy(same[:, :-1].copy()), torch.from_numpy(same[:, 1:].copy())
                losses = model(x, y, loss_reduction="none").view(y.shape)[:, lead:].double()
                y = y[:, lead:]
                sizes = lengths[y]
                totals += [losses.sum().item(), y.numel(), (losses * (sizes > 0)).sum().item(), sizes.sum().item()]
    model.train()
    return totals


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("nanochat", help="a checkout of github.com/karpathy/nanochat")
    parser.add_argument("data", help="a prepared dataset")
    budget = parser.add_mutually_exclusive_group(required=True)
    budget.add_argument("--steps", type=int)
    budget.add_argument("--minutes", type=float, help="the whole run, from process start to the end of the score")
    parser.add_argument("--sampling", choices=["random", "epochs"], default="random")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--without", default="",
                        help=f"features of nanochat's model to take out: {', '.join(FEATURES)}")
    args = parser.parse_args()
    args.without = set(filter(None, args.without.split(",")))
    if args.without - set(FEATURES):
        sys.exit(f"nanochat row: --without {','.join(sorted(args.without - set(FEATURES)))}: not one of "
                 f"{', '.join(FEATURES)}")
    if not os.path.isfile(os.path.join(args.nanochat, "nanochat", "gpt.py")):
        sys.exit(f"nanochat row: {args.nanochat} is not a checkout of karpathy/nanochat (no nanochat/gpt.py)")
    return args


def import_nanochat(path, without):
    """nanochat's modules from the checkout at `path`, eager, with the features `without` out of its code."""
    sys.path.insert(0, path)
    import nanochat.common
    import nanochat.gpt
    import nanochat.optim

    # Eager: base_train's torch.compile is left out, and so are the optimizer's compiled kernels (same math).
    for kernel in ("adamw_step_fused", "muon_step_fused"):
        fused = getattr(nanochat.optim, kernel)
        setattr(nanochat.optim, kernel, getattr(fused, "__wrapped__", fused))
    without_in_code(nanochat.gpt, without)
    return nanochat


class Recipe:
    """nanochat's model and base_train's optimizer and schedules on our windows: its steps, and its score."""

    def __init__(self, nanochat, args):
        self.args, self.nanochat = args, nanochat
        shape, self.batch_size = PRESETS["tiny-llama"], TRAIN_DEFAULTS["tiny-llama"]["batch_size"]
        self.tokens_per_step = self.batch_size * shape["context"]
        self.mixture = Mixture([DataSource(args.data)], shape["context"], sampling=args.sampling)
        tokenizer = self.mixture.manifest.tokenizer
        self.vocab_size = tokenizer.vocab_size
        encoding = open_encoding(dataclasses.asdict(tokenizer), os.path.join(args.data, fmt.TOKENIZER))
        self.lengths = torch.tensor(token_bytes(encoding))
        torch.manual_seed(args.seed)
        self.model = build(nanochat.gpt, shape, self.vocab_size)
        self.model.to_empty(device="cpu")
        self.model.init_weights()
        target_tokens = TARGET_PARAM_DATA_RATIO * scaling_params(self.model)
        reference = build(nanochat.gpt, shape, self.vocab_size, 12, 768)
        reference_tokens = TARGET_PARAM_DATA_RATIO * scaling_params(reference)
        self.weight_decay = (WEIGHT_DECAY * math.sqrt(self.tokens_per_step / REFERENCE_BATCH) * reference_tokens
                             / target_tokens)
        self.val = Split(self.mixture.snapshots[0], "val", shape["context"])
        self.windows = list(all_windows(self.val))

    def optimizer(self):
        optimizer = self.model.setup_optimizer(unembedding_lr=UNEMBEDDING_LR, embedding_lr=EMBEDDING_LR,
                                               scalar_lr=SCALAR_LR, matrix_lr=MATRIX_LR,
                                               weight_decay=self.weight_decay)
        without_in_weights(self.model, optimizer, self.args.without)
        return optimizer

    def step(self, optimizer, step, steps):
        """(loss, seconds) of one step of `steps`."""
        windows, _ = step_windows(self.mixture, self.args.seed, step, self.batch_size)
        windows = torch.from_numpy(windows)
        clock = time.time()
        loss = self.model(windows[:, :-1].contiguous(), windows[:, 1:].contiguous())
        loss.backward()
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"] * lr_multiplier(step, steps)
            if group["kind"] == "muon":
                group["momentum"] = muon_momentum(step, steps)
                group["weight_decay"] = self.weight_decay * 0.5 * (1 + math.cos(math.pi * step / steps))
        optimizer.step()
        self.model.zero_grad(set_to_none=True)
        return loss.item(), time.time() - clock

    def score(self, windows):
        return val_score(self.model, self.val, windows, self.batch_size, self.lengths)

    def steps_in(self, minutes):
        """As base_train sizes a run: the steps that a timing of a few leaves time for, the score included.
        The model is put back as it was."""
        initial = {k: v.clone() for k, v in self.model.state_dict().items()}
        optimizer = self.optimizer()
        self.step(optimizer, 0, 1000)
        clock = time.time()
        for step in range(1, 6):
            self.step(optimizer, step, 1000)
        seconds_per_step = (time.time() - clock) / 5
        clock = time.time()
        self.score(self.windows[: 2 * self.batch_size])
        score_seconds = (time.time() - clock) * len(self.windows) / min(len(self.windows), 2 * self.batch_size)
        self.model.load_state_dict(initial)
        left = minutes * 60 - (time.time() - STARTED) - 1.2 * score_seconds - 2
        return max(1, math.floor(left / seconds_per_step))


def main():
    args = parse_args()
    nanochat = import_nanochat(args.nanochat, args.without)
    recipe = Recipe(nanochat, args)
    steps = args.steps if args.steps is not None else recipe.steps_in(args.minutes)
    optimizer = recipe.optimizer()
    losses, step_seconds = zip(*[recipe.step(optimizer, step, steps) for step in range(steps)])
    nats, targets, text_nats, size = recipe.score(recipe.windows)
    recipe.mixture.close()
    print(json.dumps({
        "val_loss": nats / targets, "val_bpb": text_nats / math.log(2) / size, "val_tokens": int(targets),
        "val_bytes": int(size), "steps": steps, "train_tokens": steps * recipe.tokens_per_step,
        "seconds": time.time() - STARTED,
        "median_tokens_per_sec": recipe.tokens_per_step / float(np.median(step_seconds)), "last_train_loss": losses[-1],
        "dtype": str(nanochat.common.COMPUTE_DTYPE).removeprefix("torch."),
        "vocab_size": recipe.vocab_size,
    }))


if __name__ == "__main__":
    main()
