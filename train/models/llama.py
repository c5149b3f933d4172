"""The Llama-style network: rotary positions, RMSNorm (pre-norm, and on queries and keys), a SwiGLU or
squared-ReLU MLP, no biases, tied or untied embeddings. Its layer names are Hugging Face's Llama's, so that
export is a renaming (llama_family.py, which holds what else gptmill knows of the family)."""

import torch
import torch.nn as nn
from torch.nn import functional as F

from train.models.layers import LanguageModel, causal_attention


class RMSNorm(nn.RMSNorm):
    """RMSNorm computed in fp32 whatever the input's dtype, as Hugging Face's Llama computes it, and returned in
    the input's dtype. (Under bf16 autocast the queries and keys are bf16 and the gains fp32, which torch's
    fused kernel refuses with a warning at every run; sharded under bf16, the gains are bf16 themselves.)"""

    def forward(self, x):
        weight = None if self.weight is None else self.weight.float()
        return F.rms_norm(x.float(), self.normalized_shape, weight, self.eps).to(x.dtype)


def rope_tables(config, device):
    """cos and sin of every position's rotation angles, (context, head_dim), halves repeated as Llama's
    rotate_half convention lays them out."""
    half = torch.arange(0, config.head_dim, 2, dtype=torch.float32, device=device)
    inv_freq = 1.0 / config.rope_theta ** (half / config.head_dim)
    angles = torch.outer(torch.arange(config.context, dtype=torch.float32, device=device), inv_freq)
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos(), angles.sin()


def rotate(x, cos, sin):
    """Rotary position embedding of x (batch, heads, positions, head_dim)."""
    half = x.size(-1) // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return (x * cos + rotated * sin).to(x.dtype)


class Attention(nn.Module):
    def __init__(self, config):
        super().__init__()
        assert config.n_embd % config.n_head == 0, "n_embd must be a multiple of n_head"
        self.n_head, self.head_dim, self.dropout = config.n_head, config.head_dim, config.dropout
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = (
            nn.Linear(config.n_embd, config.n_embd, bias=False) for _ in range(4)
        )
        # Normalised queries and keys keep attention logits bounded, which lets the learning rate be high.
        self.q_norm = RMSNorm(config.head_dim, eps=config.norm_eps) if config.qk_norm else nn.Identity()
        self.k_norm = RMSNorm(config.head_dim, eps=config.norm_eps) if config.qk_norm else nn.Identity()
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x, cos, sin, cache=None):
        B, T, C = x.shape
        shape = (B, T, self.n_head, self.head_dim)
        q = rotate(self.q_norm(self.q_proj(x).view(shape)).transpose(1, 2), cos, sin)
        k = rotate(self.k_norm(self.k_proj(x).view(shape)).transpose(1, 2), cos, sin)
        v = self.v_proj(x).view(shape).transpose(1, 2)
        if cache is not None:
            k, v = cache.update(k, v)
        y = causal_attention(q, k, v, self.dropout if self.training else 0.0)
        return self.resid_dropout(self.o_proj(y.transpose(1, 2).reshape(B, T, C)))


class MLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.kind = config.mlp
        if config.mlp == "swiglu":
            self.gate_proj = nn.Linear(config.n_embd, config.hidden, bias=False)
        self.up_proj = nn.Linear(config.n_embd, config.hidden, bias=False)
        self.down_proj = nn.Linear(config.hidden, config.n_embd, bias=False)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        if self.kind == "swiglu":
            h = F.silu(self.gate_proj(x)) * self.up_proj(x)
        else:
            h = F.relu(self.up_proj(x)).square()
        return self.dropout(self.down_proj(h))


class Block(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.input_layernorm = RMSNorm(config.n_embd, eps=config.norm_eps)
        self.self_attn = Attention(config)
        self.post_attention_layernorm = RMSNorm(config.n_embd, eps=config.norm_eps)
        self.mlp = MLP(config)

    def forward(self, x, cos, sin, cache=None):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, cache)
        return x + self.mlp(self.post_attention_layernorm(x))


class Llama(LanguageModel):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.padded_vocab, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList([Block(config) for _ in range(config.n_layer)])
        self.norm = RMSNorm(config.n_embd, eps=config.norm_eps)
        self.lm_head = nn.Linear(config.n_embd, config.padded_vocab, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        self.init_weights(torch.initial_seed())  # the seed train/fit.py set from --seed
        cos, sin = rope_tables(config, None)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    RESIDUAL_PROJECTIONS = ("o_proj.weight", "down_proj.weight")

    def blocks(self):
        return self.layers

    def reset_buffers(self):
        self.rope_cos, self.rope_sin = rope_tables(self.config, self.embed_tokens.weight.device)

    def lookup_params(self):
        return 0 if self.config.tie_embeddings else self.embed_tokens.weight.numel()  # an untied input is no matmul

    def body(self, idx, caches=None):
        """As GPT.body: the final hidden state of each position (after the last RMSNorm)."""
        start = self.first_position(idx, caches)
        cos, sin = self.rope_cos[start : start + idx.size(1)], self.rope_sin[start : start + idx.size(1)]
        x = self.drop(self.embed_tokens(idx))
        for i, block in enumerate(self.layers):
            x = block(x, cos, sin, caches[i] if caches else None)
        return self.norm(x)
