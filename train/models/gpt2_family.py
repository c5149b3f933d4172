"""The GPT-2 family as the rest of gptmill knows it, without torch: its presets, training defaults and shape,
the options it cannot take, and its names in Hugging Face's transformers (GPT2LMHeadModel, which stores its
Linear layers as Conv1D, i.e. transposed) and in llama.cpp's GGUF (gpt2, whose query, key and value are one
fused matrix like ours). Its network is train/models/gpt2.py."""

import dataclasses

from train.models.shape import Shape

SHAPES = {
    "tiny": dict(n_layer=4, n_head=4, n_embd=128, context=128),
    "gpt2": dict(n_layer=12, n_head=12, n_embd=768, context=1024),
    "gpt2-medium": dict(n_layer=24, n_head=16, n_embd=1024, context=1024),
    "gpt2-large": dict(n_layer=36, n_head=20, n_embd=1280, context=1024),
    "gpt2-xl": dict(n_layer=48, n_head=25, n_embd=1600, context=1024),
}
PRESETS = {name: dict(shape, family="gpt2", bias=True) for name, shape in SHAPES.items()}
# Training defaults per preset; every one can be overridden on the command line.
TRAIN_DEFAULTS = {
    "tiny": dict(lr=2e-3, batch_size=8, optimizer="adamw"),
    "gpt2": dict(lr=6e-4, batch_size=8, optimizer="adamw"),
    "gpt2-medium": dict(lr=3e-4, batch_size=4, optimizer="adamw"),
    "gpt2-large": dict(lr=2.5e-4, batch_size=2, optimizer="adamw"),
    "gpt2-xl": dict(lr=2e-4, batch_size=1, optimizer="adamw"),
}
INIT_FROM_PRESET = "tiny"  # whose training defaults a GPT-2 given by --init-from trains with
LAYER_NORM_EPS = 1e-5  # torch's LayerNorm default, which the network keeps


@dataclasses.dataclass
class GPTConfig(Shape):
    bias: bool = True


SHAPE = GPTConfig


def shape(config, **common):
    """The GPT-2 shape of run configuration `config`, given the fields every family's shape has."""
    return GPTConfig(**common, bias=config.bias)


def build(shape):
    """A freshly initialised GPT-2 (torch is imported here, when a model is built)."""
    from train.models.gpt2 import GPT

    return GPT(shape)


def option_problem(preset, options, hf_shape):
    """Why a new run of this family cannot take `options`, or None."""
    if options.get("qk_norm") is not None:
        return f"--model {preset} is GPT-2, which has no QK-norm; drop --qk-norm/--no-qk-norm"
    return None


def shape_problem(config):
    """Why no GPT-2 has the shape of `config`, or None: any shape will do."""
    return None


# Hugging Face: model_type -> its name in messages; the tensors stored transposed; our padded embeddings.
HF_MODEL_TYPES = {"gpt2": "GPT-2"}
CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
EMBEDDINGS = ("transformer.wte.weight", "lm_head.weight")


def hf_export_problem(config):
    if not config.bias:
        return "GPT-2 in transformers always has biases; a model trained with --no-bias cannot be exported"
    return None


def hf_export(model, config):
    """(tensors, config.json's keys of the architecture) of a GPT2LMHeadModel."""
    vocab = config.tokenizer["vocab_size"]
    tensors = {}
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight":
            continue  # tied to transformer.wte.weight
        if name == "transformer.wte.weight":
            tensor = tensor[:vocab]  # drop the padding rows
        tensors[name] = tensor.t() if name.endswith(CONV1D) else tensor
    return tensors, {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
        "n_positions": config.context, "n_ctx": config.context, "n_embd": config.n_embd, "n_layer": config.n_layer,
        "n_head": config.n_head, "activation_function": "gelu_new", "layer_norm_epsilon": LAYER_NORM_EPS,
        "resid_pdrop": config.dropout, "embd_pdrop": config.dropout, "attn_pdrop": config.dropout,
        "tie_word_embeddings": True,
    }


def hf_import_problem(hf):
    """What in a Hugging Face config.json `hf` our GPT-2 cannot hold, or None."""
    if hf.get("activation_function", "gelu_new") not in ("gelu_new", "gelu_pytorch_tanh"):
        return f"activation {hf['activation_function']!r} is not the GPT-2 GELU this model uses"
    return None


def hf_shape(hf):
    """Our shape (and family) of a Hugging Face GPT-2's config.json `hf`."""
    return {"family": "gpt2", "n_layer": hf["n_layer"], "n_head": hf["n_head"], "n_embd": hf["n_embd"],
            "context": hf["n_positions"], "vocab_size": hf["vocab_size"]}


def hf_weight(name, tensor):
    """(our name, tensor) of a Hugging Face GPT-2's tensor, or None for one we do not keep."""
    if name.endswith((".attn.bias", ".attn.masked_bias")):
        return None  # causal-mask buffers of older transformers versions
    name = name if name.startswith(("transformer.", "lm_head.")) else "transformer." + name
    return name, tensor.t() if name.endswith(CONV1D) else tensor


# GGUF: our layer's name -> llama.cpp's.
GGUF_NAMES = {"ln_1": "attn_norm", "attn.c_attn": "attn_qkv", "attn.c_proj": "attn_output", "ln_2": "ffn_norm",
              "mlp.c_fc": "ffn_up", "mlp.c_proj": "ffn_down"}


def gguf_export_problem(config):
    return None  # a model trained --no-bias gets zero biases (gguf_export)


def gguf_export(model, config, vocab):
    """(GGUF name -> tensor, architecture) of a GPT-2. A model trained --no-bias gets zero biases: llama.cpp's
    gpt2 requires them, and adding zero is the same operation."""
    state = model.state_dict()
    tensors = {"token_embd.weight": state["transformer.wte.weight"][:vocab],
               "position_embd.weight": state["transformer.wpe.weight"]}
    for layer in range(config.n_layer):
        for ours, theirs in GGUF_NAMES.items():
            weight = state[f"transformer.h.{layer}.{ours}.weight"]
            tensors[f"blk.{layer}.{theirs}.weight"] = weight
            bias = state.get(f"transformer.h.{layer}.{ours}.bias")
            tensors[f"blk.{layer}.{theirs}.bias"] = weight.new_zeros(weight.size(0)) if bias is None else bias
    weight = state["transformer.ln_f.weight"]
    tensors["output_norm.weight"] = weight
    bias = state.get("transformer.ln_f.bias")
    tensors["output_norm.bias"] = weight.new_zeros(config.n_embd) if bias is None else bias
    return tensors, "gpt2"


def gguf_hyperparameters(writer, model, config):
    """The keys of the gpt2 architecture beyond those every family writes."""
    writer.add_feed_forward_length(4 * config.n_embd)
    writer.add_layer_norm_eps(LAYER_NORM_EPS)
