"""Learning at equal wall time: recipes trained for the same minutes on the same data, each scored by
`python -m train eval` on every val token of that data.

    make bench BENCH=learning                                  # tiny + AdamW against tiny-llama + Muon, 10 min each
    LEARNING_STEPS=470 LEARNING_RECIPES=before-21,tiny-llama,cosine,documents make bench BENCH=learning   # equal tokens
    LEARNING_MINUTES=3 LEARNING_RECIPES=tiny-llama,relu2,untied,no-qk-norm,adamw LEARNING_DATA=tinystories make bench BENCH=learning
    LEARNING_RECIPES=tiny-llama LEARNING_TOKENIZERS=gpt2,8192 make bench BENCH=learning   # gpt2 against a trained vocabulary
    LEARNING_RECIPES=tiny-llama:--lr=6e-3,tiny-llama:--lr=8e-3 make bench BENCH=learning     # a row with fit options added

    LEARNING_STEPS=470 LEARNING_NANOCHAT=~/nanochat LEARNING_RECIPES=nanochat,tiny-llama make bench BENCH=learning

`nanochat` and `nanochat-epochs` are karpathy/nanochat's own base recipe (bench/nanochat_row.py) on the same
windows (random, as its anchor in ../shared/anchors ran, or our epochs), scored the same way;
`nanochat-without-FEATURE` takes one feature out of its model (value-embeddings, smear, backout, lambdas,
softcap, embedding-norm). nanochat is not part of gptmill, so these rows are skipped unless LEARNING_NANOCHAT
names a checkout of it.

A tokenizer other than gpt2 is a vocabulary of that size trained (`prepare tokenizer`) on the train split's
documents only; val is the same documents whatever the tokenizer (a document's split hashes its text), and
runs of different tokenizers compare in val bits per byte, not in loss per token.

Datasets: the TinyStories sample in ../shared/data and CPython's standard library (`stdlib`). Variants of the
Llama-style recipe (MLP, tied embeddings, QK-norm; nanochat's differences) change the preset or patch the code
in the child processes that train and score them: they are measurements, not options. A row `NAME:--opt=value`
is row NAME with fit options added.
"""

import json
import os
import subprocess
import sys
import tempfile

import numpy as np

import nanochat_row  # bench/, beside this file

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
TINYSTORIES = os.path.join(REPO, "..", "shared", "data", "tinystories", "tinystories_sample.txt")
DATASETS = {
    "tinystories": [TINYSTORIES, "--doc-sep", "<|endoftext|>", "--val-fraction", "0.05"],
    "stdlib": ["stdlib"],
}
MINUTES = float(os.environ.get("LEARNING_MINUTES", 10))
STEPS = os.environ.get("LEARNING_STEPS")  # equal tokens instead of equal time: every recipe runs this many steps
# name: (fit options, changes to the tiny-llama preset[, a patch of the training code: a measurement, not an option])
RECIPES = {
    "tiny": (["--model", "tiny"], {}),  # GPT-2 + AdamW, `make train`'s recipe before the Llama-style one
    "tiny-llama": (["--model", "tiny-llama"], {}),  # RoPE, RMSNorm, QK-norm, SwiGLU, tied, Muon
    "relu2": (["--model", "tiny-llama"], {"mlp": "relu2"}),
    "untied": (["--model", "tiny-llama"], {"tie_embeddings": False}),  # more per token at 470 steps, less at 10 minutes on stdlib
    "no-qk-norm": (["--model", "tiny-llama"], {"qk_norm": False}),
    "adamw": (["--model", "tiny-llama", "--optimizer", "adamw", "--lr", "2e-3"], {}),
    "nanogpt": (["--n-layer", "4", "--n-head", "4", "--n-embd", "128", "--context", "64", "--batch-size", "12",
                 "--lr", "1e-3", "--dropout", "0", "--dtype", "fp32", "--no-compile"], {}),  # nanoGPT's README CPU recipe
    "fp32": (["--model", "tiny-llama", "--dtype", "fp32"], {}),  # nanochat runs fp32 on a CPU
    "seed-1": (["--model", "tiny-llama", "--seed", "1"], {}),  # the same recipe on other windows: the noise between runs
    "seed-2": (["--model", "tiny-llama", "--seed", "2"], {}),
    "documents": (["--model", "tiny-llama", "--window-start", "document"], {}),
    "epochs": (["--model", "tiny-llama", "--sampling", "epochs"], {}),
    "documents+epochs": (["--model", "tiny-llama", "--window-start", "document", "--sampling", "epochs"], {}),
    # nanochat's recipe, one difference at a time (#21; docs/log.md), measured by patching the child process. Its
    # warmdown schedule and Muon momentum schedule won and are the default: these rows put back what they replaced.
    "cosine": (["--model", "tiny-llama"], {}, "cosine"),
    "fixed-momentum": (["--model", "tiny-llama"], {}, "fixed_momentum"),
    "before-21": (["--model", "tiny-llama", "--schedule", "cosine", "--sampling", "random", "--lr", "4e-3", "--batch-size", "8"], {"tie_embeddings": True},
                  "embedding_lr_1x"),
    "untied-lrs": (["--model", "tiny-llama"], {"tie_embeddings": False}, "untied_lrs"),
    "untied-embedding-lr-10x": (["--model", "tiny-llama"], {"tie_embeddings": False}, "untied_embedding_lr_10x"),
    "untied-embedding-lr-30x": (["--model", "tiny-llama"], {"tie_embeddings": False}, "untied_embedding_lr_30x"),
    "embedding-lr-1x": (["--model", "tiny-llama"], {}, "embedding_lr_1x"),
    "embedding-lr-6x": (["--model", "tiny-llama"], {}, "embedding_lr_6x"),
    "embedding-lr-10x": (["--model", "tiny-llama"], {}, "embedding_lr_10x"),
    "nanochat-init": (["--model", "tiny-llama"], {}, "nanochat_init"),
    "embedding-norm": (["--model", "tiny-llama"], {}, "embedding_norm"),
    "untied-lrs+norm": (["--model", "tiny-llama"], {"tie_embeddings": False}, "untied_lrs,embedding_norm"),
    "momentum-hold": (["--model", "tiny-llama"], {}, "momentum_hold"),
    "qk-scale": (["--model", "tiny-llama"], {}, "qk_scale"),
    "polar-express": (["--model", "tiny-llama"], {}, "polar_express"),
    "nanochat-muon": (["--model", "tiny-llama"], {}, "nanochat_muon"),
    "value-embeddings": (["--model", "tiny-llama"], {}, "value_embeddings"),
    "wd-cosine": (["--model", "tiny-llama"], {}, "wd_cosine"),
    "warmdown-65": (["--model", "tiny-llama", "--warmdown-fraction", "0.65"], {}),  # nanochat's, the default until stop 32
    "warmdown-100": (["--model", "tiny-llama", "--warmdown-fraction", "1"], {}),  # every step after the warmup
    "momentum-warmup-200": (["--model", "tiny-llama"], {}, "momentum_warmup_200"),
    # half the batch early on (8 windows a step, which learned as much per token as 16 up to ~0.5M tokens)
    "batch-ramp-120": (["--model", "tiny-llama"], {}, "batch_ramp_120"),
    "batch-ramp-250": (["--model", "tiny-llama"], {}, "batch_ramp_250"),
    "z-loss": (["--model", "tiny-llama"], {}, "z_loss"),  # PaLM's 1e-4 x log(Z)^2: a loss term only, exportable
    # nanochat's embeddings whole: untied, at its rates, normalised, initialised as its init_weights
    "nanochat-embeddings": (["--model", "tiny-llama"], {"tie_embeddings": False}, "untied_lrs,embedding_norm,embedding_init,nanochat_betas"),
}
# karpathy/nanochat's own recipe (bench/nanochat_row.py) on random windows as its anchor ran, or on our epochs,
# and on random windows without one feature of its model (`nanochat-without-smear`): (sampling, features out).
NANOCHAT_ROWS = {"nanochat": ("random", ""), "nanochat-epochs": ("epochs", ""),
                 **{f"nanochat-without-{feature}": ("random", feature) for feature in nanochat_row.FEATURES}}
NANOCHAT = os.environ.get("LEARNING_NANOCHAT")  # a checkout of github.com/karpathy/nanochat; without it those rows are skipped


def cosine():
    """The learning rate of `--schedule cosine` with the Muon momentum schedule of warmdown's."""
    import dataclasses

    from train import fit, schedule

    fit.lr_at = lambda step, config: schedule.lr_at(step, dataclasses.replace(config, schedule="cosine"))


def fixed_momentum():
    """Muon's momentum before #21: 0.95 at every step."""
    from train import fit

    fit.momentum_at = lambda step, config: 0.95


def momentum_warmup_200():
    """Muon's momentum warmed from 0.85 to 0.97 over 200 steps instead of 400: the same tokens as before the
    batch doubled in stop 30."""
    from train import schedule

    schedule.MOMENTUM_WARMUP = (0.85, 0.97, 200)


def half_batch_until(steps):
    """Each step before `steps` trains on the first half of its windows only, on one process (a run that sets
    --max-steps to hold the same tokens as another compares with it at equal tokens; its metrics still count
    every step's tokens as whole)."""
    from train import trainer

    windows = trainer.Trainer.windows

    def ramped(self, step):
        drawn, datasets = windows(self, step)
        return (drawn[: len(drawn) // 2], datasets[: len(datasets) // 2]) if step < steps else (drawn, datasets)

    trainer.Trainer.windows = ramped


def batch_ramp_120():
    half_batch_until(120)


def batch_ramp_250():
    half_batch_until(250)


def z_loss():
    """PaLM's z-loss, 1e-4 x the mean squared log-sum-exp of the logits, added to the training loss (only a loss
    term: the model stays exportable). The output layer's loss is computed here without the chunked kernel
    (slower, the same value); evaluation scores the cross-entropy alone."""
    import torch
    from torch.nn import functional as F

    from train import layers

    chunked = layers.output_loss

    def output_loss(x, weight, targets):
        if not torch.is_grad_enabled():
            return chunked(x, weight, targets)
        logits = (x @ weight.T).float()
        kept = targets >= 0
        return F.cross_entropy(logits, targets, ignore_index=-1) + 1e-4 * torch.logsumexp(logits[kept], dim=-1).square().mean()

    layers.output_loss = output_loss


def embedding_rates(embedding, output):
    """AdamW rates of their own for the token embedding and the output layer, as multiples of the run's --lr
    (the group's `lr_scale`, which Trainer.step applies; a tied matrix is the output layer's and takes `output`)."""
    from train import optim

    groups = optim.param_groups

    def split(model, use_muon):
        out = []
        for group in groups(model, use_muon):
            if group.get("decay") and not group.get("use_muon"):  # the embedding and the output layer
                head = [p for p in group["params"] if p is model.lm_head.weight]
                rest = [p for p in group["params"] if p is not model.lm_head.weight]
                out += [dict(group, params=rest, lr_scale=embedding), dict(group, params=head, lr_scale=output)]
            else:
                out.append(group)
        return [g for g in out if g["params"]]

    optim.param_groups = split


def untied_lrs():
    """Untied embeddings at nanochat's AdamW rates, 0.3 and 0.008 scaled by 1/sqrt(width/768): 0.73 for the
    token embedding and 0.0196 for the output layer at width 128, as multiples of the run's --lr."""
    from train.config import TRAIN_DEFAULTS

    lr = TRAIN_DEFAULTS["tiny-llama"]["lr"]  # the rows run at the preset's rate
    embedding_rates(0.3 * (768 / 128) ** 0.5 / lr, 0.008 * (768 / 128) ** 0.5 / lr)


def untied_embedding_lr_10x():
    """Untied, the token embedding's AdamW rate 10 times the run's, the output layer's the run's."""
    embedding_rates(10, 1)


def untied_embedding_lr_30x():
    """Untied, the token embedding's AdamW rate 30 times the run's (0.12), the output layer's the run's."""
    embedding_rates(30, 1)


def tied_embedding_rate(scale):
    """A patch: the embeddings' AdamW rate beside Muon `scale` times the run's (EMBEDDING_LR_SCALE, 3 since
    stop 27 of #21)."""
    def patch():
        from train import optim

        optim.EMBEDDING_LR_SCALE = scale

    return patch


embedding_lr_1x, embedding_lr_6x, embedding_lr_10x = (tied_embedding_rate(s) for s in (1.0, 6.0, 10.0))


def nanochat_init():
    """nanochat's initialisation of the blocks: queries, keys and values uniform with std 1/sqrt(width), the MLP's
    input matrices 0.4 times that, the attention's and the MLP's output projections zero (ours: normal 0.02, the
    output projections 0.02/sqrt(2 x layers)). The embeddings keep ours."""
    import torch.nn as nn

    from train import llama

    init = llama.Llama.__init__

    def patched(self, config):
        init(self, config)
        bound = 3**0.5 * config.n_embd**-0.5  # a uniform's bound for that std
        for block in self.layers:
            for matrix in (block.self_attn.q_proj, block.self_attn.k_proj, block.self_attn.v_proj):
                nn.init.uniform_(matrix.weight, -bound, bound)
            for matrix in (block.mlp.up_proj, getattr(block.mlp, "gate_proj", None)):
                if matrix is not None:
                    nn.init.uniform_(matrix.weight, -0.4 * bound, 0.4 * bound)
            nn.init.zeros_(block.self_attn.o_proj.weight)
            nn.init.zeros_(block.mlp.down_proj.weight)

    llama.Llama.__init__ = patched


def embedding_norm():
    """An RMSNorm without gains on the token embedding, as nanochat normalises it before the first block."""
    import torch.nn.functional as F

    from train import llama

    init = llama.Llama.__init__

    def patched(self, config):
        init(self, config)
        self.embed_tokens.register_forward_hook(lambda module, inputs, output: F.rms_norm(output, (output.size(-1),)))

    llama.Llama.__init__ = patched


def embedding_init():
    """nanochat's initialisation of untied embeddings: the token embedding normal(0, 0.8), the output layer
    normal(0, 0.001)."""
    import torch.nn as nn

    from train import llama

    init = llama.Llama.__init__

    def patched(self, config):
        init(self, config)
        nn.init.normal_(self.embed_tokens.weight, std=0.8)
        nn.init.normal_(self.lm_head.weight, std=0.001)

    llama.Llama.__init__ = patched


def nanochat_betas():
    """nanochat's AdamW betas and epsilon for the embeddings: (0.8, 0.995) for the token embedding, (0.8, 0.96) for
    the output layer, eps 1e-10 (ours: --beta1/--beta2, 0.9 and 0.95, eps 1e-8). After untied_lrs."""
    from train import trainer

    make = trainer.make_optimizer

    def made(model, config, device):
        optimizer = make(model, config, device)
        for group in optimizer.param_groups:
            if group.get("decay") and not group.get("use_muon"):
                head = any(p is model.lm_head.weight for p in group["params"])
                group["betas"], group["eps"] = ((0.8, 0.96) if head else (0.8, 0.995)), 1e-10
        return optimizer

    trainer.make_optimizer = made


def momentum_hold():
    """Muon's momentum before it came down over the warmdown: warmed up to 0.97, then held."""
    from train import fit, optim, schedule

    def at(step, config):
        start, end, steps = schedule.MOMENTUM_WARMUP
        return optim.MUON_MOMENTUM if config.schedule == "cosine" else start + (end - start) * min(1.0, step / steps)

    fit.momentum_at = at


def wd_cosine():
    """The Muon matrices' weight decay decayed to 0 by a cosine over the run, as nanochat's (ours: --weight-decay
    throughout)."""
    import math

    from train import fit, schedule, trainer

    progress = {"at": 0.0}

    def lr_at(step, config):  # the loop asks for each step's learning rate before the step: note where it is
        progress["at"] = step / config.steps
        return schedule.lr_at(step, config)

    step = trainer.Trainer.step

    def patched(self, windows, lr, momentum=None):
        for group in self.optimizer.param_groups:
            if group.get("use_muon"):
                group["weight_decay"] = self.config.weight_decay * 0.5 * (1 + math.cos(math.pi * progress["at"]))
        return step(self, windows, lr, momentum)

    fit.lr_at, trainer.Trainer.step = lr_at, patched


def qk_scale():
    """Queries and keys scaled by 1.2 after their norm, as nanochat does ("sharper attention"): here the norms'
    gains start at 1.2 instead of 1."""
    from train import llama

    init = llama.Llama.__init__

    def patched(self, config):
        init(self, config)
        for layer in self.layers:
            layer.self_attn.q_norm.weight.data.fill_(1.2)
            layer.self_attn.k_norm.weight.data.fill_(1.2)

    llama.Llama.__init__ = patched


# Polar Express's coefficients for 5 iterations (arXiv 2505.16932), as nanochat's optim.py has them.
POLAR_EXPRESS = [
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
]


def polar_orthogonalize(x):
    """U V^T of each matrix of x (n, rows, columns) by Polar Express's five iterations, as nanochat computes it."""
    tall = x.size(-2) > x.size(-1)
    if tall:
        x = x.mT
    x = x / (x.norm(dim=(-2, -1), keepdim=True) * 1.01 + 1e-6)
    for a, b, c in POLAR_EXPRESS:
        gram = x @ x.mT
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.mT if tall else x


def polar_express():
    """Muon's Newton-Schulz iteration with Polar Express's coefficients, one set per iteration."""
    from train import optim

    optim.orthogonalize = lambda matrices, dtype, steps=5: polar_orthogonalize(matrices.to(dtype))


def nanochat_muon():
    """nanochat's Muon update (its optim.py's muon_step_fused) at our learning-rate scale: rows equilibrated
    (MuonEq), Polar Express, the norm snapped to sqrt(min(rows, columns)), NorMuon's variance reduction (a
    second moment per row or column, beta2 0.9) and cautious weight decay. One process only."""
    import math

    import torch

    from train import optim

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            if not group["use_muon"]:
                self.adamw(group)
                continue
            for p in group["params"]:
                state = self.state[p]
                reduce = -1 if p.size(-2) >= p.size(-1) else -2
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                    state["second_momentum_buffer"] = torch.zeros_like(p.float().mean(dim=reduce, keepdim=True))
                buffer, second = state["momentum_buffer"], state["second_momentum_buffer"]
                buffer.lerp_(p.grad, 1 - group["momentum"])
                x = p.grad.lerp(buffer, group["momentum"]).float()
                x = x * (x.norm() / x.size(-2) ** 0.5 / x.norm(dim=-1, keepdim=True).clamp_min(1e-6))  # MuonEq
                g = polar_orthogonalize(x[None])[0]
                g = g * (min(g.shape) ** 0.5 / g.norm().clamp_min(1e-6))
                v_mean = g.square().mean(dim=reduce, keepdim=True)
                v_norm = (v_mean.sum() * g.size(reduce)).sqrt()
                second.lerp_(v_mean, 1 - 0.9)
                step_size = second.clamp_min(1e-10).rsqrt()
                v_norm_new = ((v_mean * g.size(reduce)) * step_size.square()).sum().sqrt()
                g = g * step_size * (v_norm / v_norm_new.clamp_min(1e-10))
                lr = group["lr"] * 0.2 * math.sqrt(max(p.shape))
                mask = (g * p) >= 0
                p.sub_(lr * g.to(p.dtype) + group["lr"] * group["weight_decay"] * p * mask)

    optim.Muon.step = step


def value_embeddings():
    """nanochat's value embeddings (ResFormer): in alternate layers, the last included, a second token embedding
    is added to the attention's values, per head through a gate 3 * sigmoid(W x[:12]) that starts near 1.5.
    The tables go to AdamW with the other embeddings, the gates to Muon (as nanochat's)."""
    import torch
    import torch.nn as nn

    from train import llama

    init, body = llama.Llama.__init__, llama.Llama.body

    def patched_init(self, config):
        init(self, config)
        bound = 3**0.5 * config.n_embd**-0.5  # nanochat's: uniform, the standard deviation of its value projection
        self.value_embeds = nn.ModuleDict()
        for i, layer in enumerate(self.layers):
            if i % 2 == (config.n_layer - 1) % 2:
                self.value_embeds[str(i)] = nn.Embedding(config.padded_vocab, config.n_embd)
                nn.init.uniform_(self.value_embeds[str(i)].weight, -bound, bound)
                layer.self_attn.ve_gate = nn.Linear(12, config.n_head, bias=False)
                nn.init.uniform_(layer.self_attn.ve_gate.weight, 0.0, 0.02)

    def patched_body(self, idx, caches=None):
        for i, layer in enumerate(self.layers):
            layer.self_attn.ve = self.value_embeds[str(i)](idx) if str(i) in self.value_embeds else None
        return body(self, idx, caches)

    def attention(self, x, cos, sin, cache=None):
        B, T, C = x.shape
        shape = (B, T, self.n_head, self.head_dim)
        q = llama.rotate(self.q_norm(self.q_proj(x).view(shape)).transpose(1, 2), cos, sin)
        k = llama.rotate(self.k_norm(self.k_proj(x).view(shape)).transpose(1, 2), cos, sin)
        v = self.v_proj(x).view(shape)
        if getattr(self, "ve", None) is not None:
            gate = 3 * torch.sigmoid(self.ve_gate(x[..., :12]))
            v = v + gate.unsqueeze(-1) * self.ve.view(shape).to(v.dtype)
        v = v.transpose(1, 2)
        if cache is not None:
            k, v = cache.update(k, v)
        y = llama.causal_attention(q, k, v, self.dropout if self.training else 0.0)
        return self.resid_dropout(self.o_proj(y.transpose(1, 2).reshape(B, T, C)))

    llama.Llama.__init__, llama.Llama.body, llama.Attention.forward = patched_init, patched_body, attention


CHOSEN = os.environ.get("LEARNING_RECIPES", "tiny,tiny-llama").split(",")
DATA = os.environ.get("LEARNING_DATA", "tinystories,stdlib").split(",")
TOKENIZERS = os.environ.get("LEARNING_TOKENIZERS", "gpt2").split(",")


def python(*args):
    return subprocess.run([sys.executable, *args], cwd=REPO, check=True, capture_output=True, text=True).stdout


def child(changes, patches, args):
    """`python -m train ARGS` (fit, then eval) with the tiny-llama preset changed, and the code patched, as a
    variant asks: the score must see the model the run trained (an embedding norm, value embeddings)."""
    sys.path.insert(0, REPO)
    from train import config
    from train.cli import cli

    config.PRESETS["tiny-llama"].update(changes)
    for patch in filter(None, patches.split(",")):
        globals()[patch]()
    cli(args)


def trained_dataset(work, data_name, gpt2_data, vocab_size):
    """The corpus of `gpt2_data` tokenized by a vocabulary of `vocab_size` trained on its train split."""
    sys.path.insert(0, REPO)
    from prepare import format as fmt
    from prepare.tokenizer import load_encoding

    manifest = fmt.read_manifest(gpt2_data)
    encoding, eot = load_encoding("gpt2"), manifest.tokenizer.eot_token
    train_docs = os.path.join(work, f"{data_name}-train.jsonl")
    with open(train_docs, "w") as f:
        for extent in manifest.extents["train"]:
            tokens = np.fromfile(fmt.token_path(gpt2_data, extent.file), manifest.dtype)[extent.start : extent.end]
            for piece in np.split(tokens, np.flatnonzero(tokens == eot))[1:]:
                f.write(json.dumps({"text": encoding.decode(piece[1:].tolist())}) + "\n")
    tokenizer = os.path.join(work, "tokenizers", f"{data_name}-{vocab_size}")
    out = python("-m", "prepare", "tokenizer", train_docs, "--vocab-size", str(vocab_size), "--out", tokenizer)
    print(f"{data_name:12s} {out.strip()}", flush=True)
    data = os.path.join(work, f"{data_name}-{vocab_size}")
    python("-m", "prepare", "build", *DATASETS[data_name], "--encoding", tokenizer, "--out", data)
    return data


def nanochat_row(name, label, data, data_name):
    """nanochat's recipe on `data` (bench/nanochat_row.py), or None, said, without LEARNING_NANOCHAT."""
    if not NANOCHAT:
        print(f"{data_name:12s} {label:17s} skipped: give a checkout of github.com/karpathy/nanochat as LEARNING_NANOCHAT=DIR", flush=True)
        return None
    budget = ["--steps", STEPS] if STEPS else ["--minutes", str(MINUTES)]
    sampling, without = NANOCHAT_ROWS[name]
    result = json.loads(python(os.path.join(HERE, "nanochat_row.py"), NANOCHAT, data, *budget,
                               "--sampling", sampling, "--without", without).splitlines()[-1])
    print(f"{data_name:12s} {label:17s} val {result['val_bpb']:.4f} bits per byte (loss {result['val_loss']:.4f} over "
          f"{result['val_tokens']:,} tokens, {result['val_bytes']:,} bytes); {result['steps']} steps, {result['train_tokens']:,} "
          f"tokens in {result['seconds']:.0f} s, median {result['median_tokens_per_sec']:,.0f} tokens/s ({result['dtype']})", flush=True)
    return result


def main():
    if "tinystories" in DATA and not os.path.exists(TINYSTORIES):
        sys.exit(f"learning bench: {TINYSTORIES} not found (it needs ../shared/data)")
    work = tempfile.mkdtemp(prefix="gptmill-learning-")
    results = {}
    for data_name in DATA:
        gpt2_data = os.path.join(work, data_name)
        python("-m", "prepare", "build", *DATASETS[data_name], "--out", gpt2_data)
        for tokenizer in TOKENIZERS:
            data = gpt2_data if tokenizer == "gpt2" else trained_dataset(work, data_name, gpt2_data, int(tokenizer))
            for name in CHOSEN:
                label = name if tokenizer == "gpt2" else f"{name}+{tokenizer}"
                if name in NANOCHAT_ROWS:
                    results[f"{data_name}/{label}"] = nanochat_row(name, label, data, data_name)
                    continue
                base, *extra = name.split(":")  # "tiny-llama:--lr=6e-3": a row with fit options added
                args, changes, *patches = RECIPES[base]
                args = [*args, *extra]
                run = os.path.join(work, f"{data_name}-{label}")
                budget = ["--max-steps", STEPS] if STEPS else ["--max-time", f"{MINUTES}m"]
                variant = [__file__, "--child", json.dumps(changes), ",".join(patches)]
                python(*variant, "fit", "--data", data, "--out", run, *budget,
                       "--device", "cpu", "--no-samples", "--eval-every", "0", *args)
                score = json.loads(python(*variant, "eval", "--run", run, "--checkpoint", "latest", "--json"))
                steps = [json.loads(line) for line in open(os.path.join(run, "metrics.jsonl"))]
                config = json.load(open(os.path.join(run, "config.json")))
                rate = sorted(m["tokens_per_sec"] for m in steps)[len(steps) // 2]
                results[f"{data_name}/{label}"] = {
                    "val_loss": score["loss"], "val_bpb": score["bpb"], "val_tokens": score["tokens"], "val_bytes": score["bytes"],
                    "steps": len(steps), "train_tokens": steps[-1]["tokens"], "seconds": steps[-1]["elapsed_sec"],
                    "median_tokens_per_sec": rate, "dtype": config["dtype"], "vocab_size": config["tokenizer"]["vocab_size"],
                }
                print(f"{data_name:12s} {label:17s} val {score['bpb']:.4f} bits per byte (loss {score['loss']:.4f} over "
                      f"{score['tokens']:,} tokens, {score['bytes']:,} bytes); {len(steps)} steps, {steps[-1]['tokens']:,} tokens "
                      f"in {steps[-1]['elapsed_sec']:.0f} s, median {rate:,.0f} tokens/s ({config['dtype']})", flush=True)
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "learning.json"), "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(json.loads(sys.argv[2]), sys.argv[3], sys.argv[4:])
    else:
        main()
