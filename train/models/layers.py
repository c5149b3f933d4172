"""What the model families' networks share: causal attention and its key/value cache, and the language-model
head around the blocks (the context check, logits or the chunked loss, parameter and FLOP counts), so that
training, evaluation and generation do not know which family they run."""

import contextlib
import hashlib
import math

import torch
import torch.nn as nn
from torch.nn import functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from train.models.loss import output_loss, output_token_losses

# PyTorch's flash attention on CPU has a high fixed cost: up to 256 positions its plain (math) kernel ran
# forward and backward 1.8x faster at the `tiny` shape (128), above that it loses (3.4x slower at 1024).
CPU_MATH_ATTENTION_MAX = 256


def causal_attention(q, k, v, dropout_p):
    """Causal attention of the queries over the keys, which may begin with cached positions: then each new
    query attends to every cached key plus the causal part of its own."""
    T, S = q.size(2), k.size(2)
    if T == S:
        short_on_cpu = q.device.type == "cpu" and T <= CPU_MATH_ATTENTION_MAX
        with sdpa_kernel(SDPBackend.MATH) if short_on_cpu else contextlib.nullcontext():
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout_p)
    mask = torch.ones(T, S, dtype=torch.bool, device=q.device).tril(diagonal=S - T)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


class LanguageModel(nn.Module):
    """What every family's network does alike around its blocks. A family sets `config` and `lm_head`,
    computes `body(idx, caches)` (the final normalised hidden state of each position), and says which of its
    parameters are read by index rather than multiplied."""

    RESIDUAL_PROJECTIONS = ()  # names' endings of the matrices that write into the residual stream

    def blocks(self):
        """The repeated transformer blocks, each one unit of sharding (train/sharding.py); None if the family
        has none to name."""
        return None

    def initial_value(self, name, shape, seed):
        """Parameter `name`'s initial value: matrices drawn from a generator of their own, seeded by (seed,
        name), so that a model materialised one parameter at a time (sharded: train/sharding.py) holds the
        values of one built whole. Residual projections are scaled so that the stream does not grow with depth;
        biases start at 0, norms' gains at 1."""
        if len(shape) >= 2:
            residual = name.endswith(self.RESIDUAL_PROJECTIONS)
            std = 0.02 / math.sqrt(2 * self.config.n_layer) if residual else 0.02
            digest = hashlib.sha256(f"{seed}/{name}".encode()).digest()
            generator = torch.Generator().manual_seed(int.from_bytes(digest[:7], "little"))
            return torch.empty(shape).normal_(0.0, std, generator=generator)
        return torch.zeros(shape) if name.endswith("bias") else torch.ones(shape)

    @torch.no_grad()
    def init_weights(self, seed):
        """Every parameter at its initial value (none on the meta device: train/sharding.py materialises those)."""
        for name, p in self.named_parameters():
            if not p.is_meta:
                p.copy_(self.initial_value(name, p.shape, seed))

    def reset_buffers(self):
        """Computed buffers, recomputed on the parameters' device once a model built on the meta device is
        materialised."""

    def num_params(self):
        """Parameters, counting tied embeddings once."""
        return sum(p.numel() for p in self.parameters())

    def lookup_params(self):
        """Parameters read by index, not multiplied (a learned position table, an untied input embedding)."""
        return 0

    def flops_per_token(self):
        """Training FLOPs per token: 6 per weight use (forward + backward) plus attention scores."""
        c = self.config
        return 6 * (self.num_params() - self.lookup_params()) + 12 * c.n_layer * c.n_embd * c.context

    def first_position(self, idx, caches):
        """The position of idx's first token (after the cached ones); a sequence past the context is refused."""
        start = caches[0].length if caches else 0
        if start + idx.size(1) > self.config.context:
            raise ValueError(f"sequence of {start + idx.size(1)} tokens is longer than the model's context of "
                             f"{self.config.context}")
        return start

    def forward(self, idx, targets=None, caches=None, last_only=False, per_token=False):
        """(logits of every position, or of the last only for decoding; None) without `targets`; with them,
        (None, mean cross-entropy, or each position's with `per_token`): see `head`. `caches` hold the keys and
        values of earlier positions (generation)."""
        return self.head(self.body(idx, caches), targets, last_only, per_token)

    def head(self, x, targets, last_only, per_token=False):
        """(logits of every position, or of the last only for decoding; None) without `targets`; with them,
        (None, mean cross-entropy, or each position's with `per_token`), computed chunk by chunk without ever
        holding all the logits."""
        if targets is None:
            return self.lm_head(x[:, -1:] if last_only else x), None
        if per_token:
            losses = output_token_losses(x.flatten(0, 1), self.lm_head.weight, targets.flatten())
            return None, losses.view_as(targets)
        return None, output_loss(x.flatten(0, 1), self.lm_head.weight, targets.flatten())


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
        """Keep the cache rows of the surviving beams, gathering only the filled positions."""
        if len(rows) != self.k.size(0):  # the batch changes size (the prompt's one row becomes the beams)
            self.k, self.v = self.k[rows], self.v[rows]
            return
        self.k[:, :, : self.length] = self.k[rows, :, : self.length]
        self.v[:, :, : self.length] = self.v[rows, :, : self.length]


def make_caches(model, batch, device, dtype):
    return [KVCache(batch, model.config, device, dtype) for _ in range(model.config.n_layer)]
