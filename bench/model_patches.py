"""Patches of the Llama-style network that bench/learning_bench.py applies in the child processes of a row:
nanochat's differences in its model (initialisation, embedding norm, QK scale, value embeddings), measured one
at a time, not options. Each wraps train/models/llama.py's classes, so scoring sees the model the run trained."""


def nanochat_init():
    """nanochat's initialisation of the blocks: queries, keys and values uniform with std 1/sqrt(width), the MLP's
    input matrices 0.4 times that, the attention's and the MLP's output projections zero (ours: normal 0.02, the
    output projections 0.02/sqrt(2 x layers)). The embeddings keep ours."""
    import torch.nn as nn

    from train.models import llama

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

    from train.models import llama

    init = llama.Llama.__init__

    def patched(self, config):
        init(self, config)
        self.embed_tokens.register_forward_hook(lambda module, inputs, output: F.rms_norm(output, (output.size(-1),)))

    llama.Llama.__init__ = patched


def embedding_init():
    """nanochat's initialisation of untied embeddings: the token embedding normal(0, 0.8), the output layer
    normal(0, 0.001)."""
    import torch.nn as nn

    from train.models import llama

    init = llama.Llama.__init__

    def patched(self, config):
        init(self, config)
        nn.init.normal_(self.embed_tokens.weight, std=0.8)
        nn.init.normal_(self.lm_head.weight, std=0.001)

    llama.Llama.__init__ = patched


def qk_scale():
    """Queries and keys scaled by 1.2 after their norm, as nanochat does ("sharper attention"): here the norms'
    gains start at 1.2 instead of 1."""
    from train.models import llama

    init = llama.Llama.__init__

    def patched(self, config):
        init(self, config)
        for layer in self.layers:
            layer.self_attn.q_norm.weight.data.fill_(1.2)
            layer.self_attn.k_norm.weight.data.fill_(1.2)

    llama.Llama.__init__ = patched


def value_embeddings():
    """nanochat's value embeddings (ResFormer): in alternate layers, the last included, a second token embedding
    is added to the attention's values, per head through a gate 3 * sigmoid(W x[:12]) that starts near 1.5.
    The tables go to AdamW with the other embeddings, the gates to Muon (as nanochat's)."""
    import torch
    import torch.nn as nn

    from train.models import llama

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
