"""The Llama-style family as the rest of gptmill knows it, without torch: its presets (GPT-2's shapes),
training defaults and shape, the options it cannot take, and its names in Hugging Face's transformers and
llama.cpp's GGUF. With QK-norm it is Qwen3 there (Llama with exactly that per-head RMSNorm, and our rotary
layout: halves), without it Llama, whose GGUF graph rotates neighbouring pairs of dimensions, so the export
permutes the query and key rows as llama.cpp's converter does. Our layer names are Hugging Face's under
`model.`. Its network is train/models/llama.py."""

import dataclasses

from train.models.gpt2_family import SHAPES as GPT2_SHAPES
from train.models.shape import Shape

SHAPES = {
    "tiny-llama": GPT2_SHAPES["tiny"],
    "llama-small": GPT2_SHAPES["gpt2"],
    "llama-medium": GPT2_SHAPES["gpt2-medium"],
    "llama-large": GPT2_SHAPES["gpt2-large"],
}
PRESETS = {name: dict(shape, family="llama", bias=False, mlp="swiglu", qk_norm=True, tie_embeddings=True)
           for name, shape in SHAPES.items()}
# Training defaults per preset; every one can be overridden on the command line. tiny-llama's 16 windows a step
# and 3e-3 won their comparisons (docs/log.md).
TRAIN_DEFAULTS = {
    "tiny-llama": dict(lr=3e-3, batch_size=16, optimizer="muon"),
    "llama-small": dict(lr=1.5e-3, batch_size=8, optimizer="muon"),
    "llama-medium": dict(lr=1e-3, batch_size=4, optimizer="muon"),
    "llama-large": dict(lr=8e-4, batch_size=2, optimizer="muon"),
}
INIT_FROM_PRESET = "tiny-llama"  # whose training defaults a Llama given by --init-from trains with
# RMSNorm's epsilon and RoPE's base, as Llama 2 and Hugging Face's LlamaConfig default them.
NORM_EPS, ROPE_THETA = 1e-6, 10000.0


@dataclasses.dataclass
class LlamaConfig(Shape):
    mlp: str = "swiglu"  # or "relu2": squared ReLU, 4x wide, as in the modded-nanogpt speedrun
    qk_norm: bool = True
    tie_embeddings: bool = True
    norm_eps, rope_theta = NORM_EPS, ROPE_THETA  # not fields: the only values export and import know

    @property
    def hidden(self):
        """The MLP's width: SwiGLU's 8/3 x n_embd (rounded up to 32) has the parameters of a 4x plain MLP."""
        return 4 * self.n_embd if self.mlp == "relu2" else -(-8 * self.n_embd // 3 // 32) * 32


SHAPE = LlamaConfig


def shape(config, **common):
    """The Llama-style shape of run configuration `config`, given the fields every family's shape has."""
    return LlamaConfig(**common, mlp=config.mlp, qk_norm=config.qk_norm, tie_embeddings=config.tie_embeddings)


def build(shape):
    """A freshly initialised Llama-style model (torch is imported here, when a model is built)."""
    from train.models.llama import Llama

    return Llama(shape)


def option_problem(preset, options, hf_shape):
    """Why a new run of this family cannot take `options`, or None."""
    if options.get("bias"):
        return f"--model {preset} is Llama-style, which has no biases; drop --bias"
    if hf_shape and options.get("qk_norm") is not None and options["qk_norm"] != hf_shape.get("qk_norm"):
        return f"--init-from {options['init_from']} fixes the QK-norm; drop --qk-norm/--no-qk-norm"
    return None


def shape_problem(config):
    """Why no Llama-style model has the shape of `config`, or None."""
    head_size = config.n_embd // config.n_head
    if head_size % 2:
        return (f"--n-embd {config.n_embd} / --n-head {config.n_head} is a head size of {head_size}; rotary positions "
                f"need an even one")
    return None


# Hugging Face: model_type -> its name in messages, and the architecture it is.
HF_MODEL_TYPES = {"llama": "Llama", "qwen3": "Qwen3"}
HF_ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen3": "Qwen3ForCausalLM"}
EMBEDDINGS = ("embed_tokens.weight", "lm_head.weight")  # padded to our vocabulary's multiple of 64


def hf_export_problem(config):
    if config.mlp != "swiglu":
        return f"Hugging Face's Llama has a SwiGLU MLP; a model trained with the {config.mlp} MLP cannot be exported"
    return None


def hf_export(model, config):
    """(tensors, config.json's keys of the architecture) of a LlamaForCausalLM, or a Qwen3ForCausalLM for a
    model with QK-norm."""
    vocab = config.tokenizer["vocab_size"]
    tensors = {}
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight" and config.tie_embeddings:
            continue  # tied to the embedding
        if name in EMBEDDINGS:
            tensor = tensor[:vocab]  # drop the padding rows
        tensors[name if name == "lm_head.weight" else "model." + name] = tensor
    model_type = "qwen3" if config.qk_norm else "llama"
    return tensors, {
        "architectures": [HF_ARCHITECTURES[model_type]], "model_type": model_type,
        "hidden_size": config.n_embd, "intermediate_size": model.config.hidden, "num_hidden_layers": config.n_layer,
        "num_attention_heads": config.n_head, "num_key_value_heads": config.n_head,
        "head_dim": config.n_embd // config.n_head, "max_position_embeddings": config.context, "hidden_act": "silu",
        "rms_norm_eps": NORM_EPS, "rope_theta": ROPE_THETA,
        "rope_parameters": {"rope_type": "default", "rope_theta": ROPE_THETA},
        "attention_bias": False, "mlp_bias": False, "attention_dropout": config.dropout,
        "tie_word_embeddings": config.tie_embeddings, "use_sliding_window": False,
    }


def hf_import_problem(hf):
    """The first thing in a Hugging Face Llama's or Qwen3's config.json `hf` our model cannot hold, or None."""
    width, heads = hf["hidden_size"], hf["num_attention_heads"]
    theta = hf.get("rope_theta") or hf.get("rope_parameters", {}).get("rope_theta", ROPE_THETA)
    scaling = hf.get("rope_scaling") or hf.get("rope_parameters", {}).get("rope_type", "default")
    key_value_heads = hf.get("num_key_value_heads", heads)
    unlike = [
        what for what, differs in (
            (f"{key_value_heads} key/value heads for {heads} query heads (grouped-query attention)",
             key_value_heads != heads),
            (f"head_dim {hf.get('head_dim')}", hf.get("head_dim", width // heads) != width // heads),
            (f"activation {hf.get('hidden_act')!r}", hf.get("hidden_act", "silu") != "silu"),
            (f"rope_theta {theta}", theta != ROPE_THETA),
            (f"RoPE scaling {scaling!r}", scaling not in ("default", None)),
            ("biases", hf.get("attention_bias") or hf.get("mlp_bias")),
            (f"rms_norm_eps {hf.get('rms_norm_eps')}", hf.get("rms_norm_eps", NORM_EPS) != NORM_EPS),
        ) if differs
    ]
    if unlike:
        return f"{unlike[0]}; gptmill's Llama-style model cannot hold it"
    ours = LlamaConfig(n_embd=width, mlp="swiglu").hidden
    if ours != hf["intermediate_size"]:
        return f"intermediate_size {hf['intermediate_size']}; gptmill's SwiGLU width for hidden_size {width} is {ours}"
    return None


def hf_shape(hf):
    """Our shape (and family) of a Hugging Face Llama's or Qwen3's config.json `hf`."""
    return {"family": "llama", "n_layer": hf["num_hidden_layers"], "n_head": hf["num_attention_heads"],
            "n_embd": hf["hidden_size"], "context": hf["max_position_embeddings"], "vocab_size": hf["vocab_size"],
            "mlp": "swiglu", "qk_norm": hf["model_type"] == "qwen3",
            "tie_embeddings": bool(hf.get("tie_word_embeddings", False))}


def hf_weight(name, tensor):
    """(our name, tensor) of a Hugging Face Llama's or Qwen3's tensor."""
    return name.removeprefix("model."), tensor


# GGUF: our layer's name -> llama.cpp's.
GGUF_NAMES = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
              "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "self_attn.q_norm": "attn_q_norm",
              "self_attn.k_norm": "attn_k_norm", "post_attention_layernorm": "ffn_norm", "mlp.gate_proj": "ffn_gate",
              "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}


def gguf_export_problem(config):
    if config.mlp != "swiglu":
        return (f"llama.cpp's qwen3 and llama graphs have a SwiGLU MLP; a model trained with the {config.mlp} MLP "
                f"cannot be exported")
    return None


def gguf_export(model, config, vocab):
    """(GGUF name -> tensor, architecture) of a Llama-style model."""
    arch = "qwen3" if config.qk_norm else "llama"
    tensors = {}
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight" and config.tie_embeddings:
            continue  # tied: llama.cpp uses token_embd when there is no output.weight
        if name in EMBEDDINGS:
            tensors["token_embd.weight" if name == "embed_tokens.weight" else "output.weight"] = tensor[:vocab]
        elif name == "norm.weight":
            tensors["output_norm.weight"] = tensor
        else:
            _, layer, rest = name.split(".", 2)
            module, kind = rest.rsplit(".", 1)
            if arch == "llama" and module in ("self_attn.q_proj", "self_attn.k_proj"):
                tensor = halves_to_pairs(tensor, config.n_head)
            tensors[f"blk.{layer}.{GGUF_NAMES[module]}.{kind}"] = tensor
    return tensors, arch


def halves_to_pairs(weight, heads):
    """The rows of a query or key projection reordered so that rotating neighbouring pairs of dimensions
    (llama.cpp's llama) equals our rotation of the two halves of each head (convert_hf_to_gguf's permute)."""
    return weight.reshape(heads, 2, weight.size(0) // heads // 2, weight.size(1)).transpose(1, 2).reshape(weight.shape)


def gguf_hyperparameters(writer, model, config):
    """The keys of the qwen3 and llama architectures beyond those every family writes."""
    head_dim = config.n_embd // config.n_head
    writer.add_feed_forward_length(model.config.hidden)
    writer.add_layer_norm_rms_eps(NORM_EPS)
    writer.add_rope_freq_base(ROPE_THETA)
    writer.add_rope_dimension_count(head_dim)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
