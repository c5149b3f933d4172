"""GPT-2: learned positions, pre-LayerNorm blocks, causal self-attention, GELU MLP, tied embeddings."""

import dataclasses
import math

import torch
import torch.nn as nn
from torch.nn import functional as F


@dataclasses.dataclass
class GPTConfig:
    vocab_size: int = 50257  # the tokenizer's; the embedding is padded to a multiple of 64 for speed
    context: int = 1024
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True

    @property
    def padded_vocab(self):
        return -(-self.vocab_size // 64) * 64


PRESETS = {
    "tiny": dict(n_layer=4, n_head=4, n_embd=128, context=128),
    "gpt2": dict(n_layer=12, n_head=12, n_embd=768, context=1024),
    "gpt2-medium": dict(n_layer=24, n_head=16, n_embd=1024, context=1024),
    "gpt2-large": dict(n_layer=36, n_head=20, n_embd=1280, context=1024),
    "gpt2-xl": dict(n_layer=48, n_head=25, n_embd=1600, context=1024),
}


class CausalSelfAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        assert config.n_embd % config.n_head == 0, "n_embd must be a multiple of n_head"
        self.n_head, self.dropout = config.n_head, config.dropout
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x, cache=None):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        if cache is not None:
            k, v = cache.update(k, v)
        # With a cache, T new queries attend to every cached key plus the causal part of their own.
        if cache is None or T == k.size(2):
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0)
        else:
            past = k.size(2) - T
            mask = torch.ones(T, k.size(2), dtype=torch.bool, device=x.device).tril(diagonal=past)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate="tanh")))


class Block(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x, cache=None):
        x = x + self.attn(self.ln_1(x), cache)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.padded_vocab, config.n_embd),
                wpe=nn.Embedding(config.context, config.n_embd),
                drop=nn.Dropout(config.dropout),
                h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
                ln_f=nn.LayerNorm(config.n_embd, bias=config.bias),
            )
        )
        self.lm_head = nn.Linear(config.n_embd, config.padded_vocab, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # tied input and output embeddings
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):  # residual projections, so the residual stream does not grow with depth
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self):
        """Parameters, counting the tied embedding once."""
        return sum(p.numel() for p in self.parameters())

    def flops_per_token(self):
        """Training FLOPs per token: 6 per weight use (forward + backward) plus attention scores."""
        c = self.config
        matmul_params = self.num_params() - self.transformer.wpe.weight.numel()
        return 6 * matmul_params + 12 * c.n_layer * c.n_embd * c.context

    def forward(self, idx, targets=None, caches=None, last_only=False):
        """Logits for every position (the last only, for decoding), and the mean cross-entropy against
        `targets` if given."""
        B, T = idx.shape
        start = caches[0].length if caches else 0
        if start + T > self.config.context:
            raise ValueError(f"sequence of {start + T} tokens is longer than the model's context of {self.config.context}")
        pos = torch.arange(start, start + T, device=idx.device)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        for i, block in enumerate(self.transformer.h):
            x = block(x, caches[i] if caches else None)
        x = self.transformer.ln_f(x)
        if targets is None:
            return self.lm_head(x[:, -1:] if last_only else x), None
        logits = self.lm_head(x)
        loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss


class KVCache:
    """Keys and values of the positions seen so far, for one layer: each new token costs one position."""

    def __init__(self, batch, config, device, dtype):
        shape = (batch, config.n_head, config.context, config.n_embd // config.n_head)
        self.k = torch.empty(shape, device=device, dtype=dtype)
        self.v = torch.empty(shape, device=device, dtype=dtype)
        self.length = 0

    def update(self, k, v):
        end = self.length + k.size(2)
        self.k[:, :, self.length : end] = k
        self.v[:, :, self.length : end] = v
        self.length = end
        return self.k[:, :, :end], self.v[:, :, :end]

    def reorder(self, rows):
        """Keep the cache rows of the surviving beams."""
        self.k, self.v = self.k[rows], self.v[rows]


def make_caches(model, batch, device, dtype):
    return [KVCache(batch, model.config, device, dtype) for _ in range(model.config.n_layer)]
