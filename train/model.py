"""GPT-2: learned positions, pre-LayerNorm blocks, causal self-attention, GELU MLP, tied embeddings."""

import contextlib
import dataclasses
import math

import torch
import torch.nn as nn
from torch.nn import functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

# PyTorch's flash attention on CPU has a high fixed cost: up to 256 positions its plain (math) kernel ran
# forward and backward 1.8x faster at the `tiny` shape (128), above that it loses (3.4x slower at 1024).
CPU_MATH_ATTENTION_MAX = 256


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
        y = causal_attention(q, k, v, self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


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
        """(logits of every position, or of the last only for decoding; None) without `targets`; with them,
        (None, mean cross-entropy), computed chunk by chunk without ever holding all the logits."""
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
        return None, output_loss(x.flatten(0, 1), self.lm_head.weight, targets.flatten())


# Rows of the output layer multiplied at once: enough for efficient matrix products, few enough that their
# logits (256 x 50304 in bf16: 26 MB) stay in a CPU's last-level cache.
CHUNK_ROWS = 256
# On a CPU the softmax takes fewer rows at a time, so its fp32 copy stays in a core's L2 cache.
CPU_SOFTMAX_ROWS = 16
# Rows whose logit gradients are kept before one product adds them to the output weight's gradient: this
# bounds the loss's memory (2048 x 50304 in bf16: 206 MB) whatever the batch, while a product per 256-row
# chunk, each reading and writing a [vocab x width] fp32 sum, cost more than the products themselves at
# the gpt2 shape.
GRAD_WEIGHT_ROWS = 2048
IGNORE = -1  # a target below 0 is not predicted: it adds nothing to the loss or its count


@torch.compiler.disable  # the chunk loop is the optimisation; compiling would trace it into one graph
def output_loss(x, weight, targets):
    """Mean cross-entropy of the output layer `x @ weight.T` against `targets` (negative ones ignored),
    computed chunk by chunk."""
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
        return ChunkedOutputLoss.apply(x, weight, targets)
    loss_sum, count, _, _ = chunked_output_loss(x, weight, targets, with_grad=False)
    return loss_sum / count.clamp(min=1)


class ChunkedOutputLoss(torch.autograd.Function):
    """The loss and its gradients in one pass: each chunk's logits become the gradient of the loss with respect
    to them while still in cache, and are folded into the gradients of x and of the weight before the buffer
    is reused. On a CPU step of `tiny` the output layer and its softmax were two thirds of the time, bound
    by memory traffic; the gradients cost memory of the input's size, not the logits'."""

    @staticmethod
    def forward(ctx, x, weight, targets):
        loss_sum, count, grad_x, grad_weight = chunked_output_loss(x, weight, targets, with_grad=True)
        count = count.clamp(min=1)
        ctx.save_for_backward(grad_x, grad_weight, count)
        ctx.dtypes = x.dtype, weight.dtype
        return loss_sum / count

    @staticmethod
    def backward(ctx, grad_loss):
        grad_x, grad_weight, count = ctx.saved_tensors
        scale = grad_loss / count
        # Scaled in place: these buffers were made for this backward and are used once.
        return tuple(g.to(dtype).mul_(scale) for g, dtype in zip((grad_x, grad_weight), ctx.dtypes)) + (None,)


def chunked_output_loss(x, weight, targets, with_grad):
    """(summed loss, targets counted, its gradients with respect to x and weight or None) over rows of x, in
    the autocast dtype if one is active: logits in that dtype, softmax and loss in fp32, as
    F.cross_entropy(logits.float(), ignore_index=-1) summed. Extra memory is bounded by GRAD_WEIGHT_ROWS."""
    device_type = x.device.type
    dtype = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else x.dtype
    softmax_rows = CPU_SOFTMAX_ROWS if device_type == "cpu" else CHUNK_ROWS
    counted = targets >= 0
    ignoring = not bool(counted.all())  # masks cost a pass over the logits: only when something is ignored
    targets = targets.clamp(min=0)
    with torch.autocast(device_type, enabled=False):
        x, w = x.to(dtype), weight.to(dtype)
        buffer_rows = min(GRAD_WEIGHT_ROWS if with_grad else CHUNK_ROWS, len(x))
        logits_buffer = torch.empty(buffer_rows, len(w), dtype=dtype, device=x.device)
        grad_x = torch.empty_like(x) if with_grad else None
        grad_weight = None
        loss_sum = torch.zeros((), device=x.device)
        minus_one = torch.full((softmax_rows, 1), -1.0, device=x.device)
        for start in range(0, len(x), CHUNK_ROWS):
            end = min(start + CHUNK_ROWS, len(x))
            offset = start % buffer_rows
            logits = logits_buffer[offset : offset + end - start]
            torch.mm(x[start:end], w.T, out=logits)
            target, keep = targets[start:end, None], counted[start:end, None]
            target_logit, top_logit = logits.gather(1, target).float(), logits.amax(dim=1, keepdim=True).float()
            top_prob = torch.empty_like(top_logit)
            for group in range(0, end - start, softmax_rows):
                rows = slice(group, group + softmax_rows)
                probs = torch.softmax(logits[rows], dim=-1, dtype=torch.float32)
                torch.amax(probs, dim=1, keepdim=True, out=top_prob[rows])
                if with_grad:  # d(loss)/d(logits) = probs - one-hot(target), written over the logits
                    probs.scatter_add_(1, target[rows], minus_one[: len(probs)])
                    logits[rows] = probs.mul_(keep[rows]) if ignoring else probs
            # log-sum-exp from the largest logit and its probability, which (>= 1/vocab) never underflows
            loss_sum += ((top_logit - top_prob.log() - target_logit) * keep).sum()
            if with_grad:
                torch.mm(logits, w, out=grad_x[start:end])
                if offset + end - start == buffer_rows or end == len(x):  # the buffer is full: fold it in
                    part = logits_buffer[: offset + end - start].T @ x[start - offset : end]
                    if grad_weight is None:
                        grad_weight = part if end == len(x) else part.float()
                    else:
                        grad_weight += part
    return loss_sum, counted.sum(), grad_x, grad_weight


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
