"""Hugging Face formats: export a run so `transformers` loads it offline, and import such a directory.

GPT-2 runs become GPT2LMHeadModel, which stores its Linear layers as Conv1D, i.e. transposed. Llama-style
runs become LlamaForCausalLM, or Qwen3ForCausalLM when they normalise queries and keys (Qwen3 is Llama with
exactly that per-head RMSNorm); our layer names are theirs under `model.`. The vocabulary is stored
unpadded. The tokenizer files of a gpt2 run are GPT-2's own BPE files (the ones prepare verifies), renamed
as transformers expects; any other tokenizer becomes a tokenizer.json that tokenizes exactly as tiktoken.
"""

import json
import os
import shutil

import torch
from safetensors.torch import load_file, save_file

from prepare.tokenizer import ENDOFTEXT, byte_characters, gpt2_files, load_encoding, oniguruma_pattern
from prepare.format import free_bytes, is_disk_full
from train.checkpoint import CheckpointError, load_weights, tensor_bytes
from train.llama import NORM_EPS, ROPE_THETA, LlamaConfig
from train.model import GPTConfig
from train.models import build_model

CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
LLAMA_TYPES = {"llama": "LlamaForCausalLM", "qwen3": "Qwen3ForCausalLM"}


def export(model, config, out_dir, encoding):
    """Write config.json, model.safetensors and the tokenizer files of `model` (tokenized by `encoding`) to
    `out_dir`."""
    tensors, hf_config = (export_llama if config.family == "llama" else export_gpt2)(model, config)
    hf_config.update(vocab_size=config.tokenizer["vocab_size"], bos_token_id=config.tokenizer["eot_token"],
                     eos_token_id=config.tokenizer["eot_token"], torch_dtype="float32")
    os.makedirs(out_dir, exist_ok=True)
    try:
        write_files(tensors, hf_config, config, out_dir, encoding)
    except Exception as e:  # safetensors reports a full disk in an exception of its own
        needed = tensor_bytes(tensors)
        if is_disk_full(e, out_dir, needed):
            raise CheckpointError(f"{out_dir}: no space left on device (it needs about {needed / 1e6:,.0f} MB, "
                                  f"{free_bytes(out_dir) / 1e6:,.0f} MB are free)") from None
        raise


def write_files(tensors, hf_config, config, out_dir, encoding):
    save_file(tensors, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
    write_json(os.path.join(out_dir, "config.json"), hf_config)
    if config.tokenizer["name"] != "gpt2" or config.tokenizer.get("trained"):
        write_tokenizer_json(encoding, os.path.join(out_dir, "tokenizer.json"))
        special = {"bos_token": ENDOFTEXT, "eos_token": ENDOFTEXT}
        write_json(os.path.join(out_dir, "tokenizer_config.json"), {
            "tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": config.context,
            "clean_up_tokenization_spaces": False, **special,
        })
        write_json(os.path.join(out_dir, "special_tokens_map.json"), special)
        return
    files = gpt2_files()
    shutil.copyfile(files["encoder.json"], os.path.join(out_dir, "vocab.json"))
    shutil.copyfile(files["vocab.bpe"], os.path.join(out_dir, "merges.txt"))
    write_json(os.path.join(out_dir, "tokenizer_config.json"), {
        "tokenizer_class": "GPT2Tokenizer", "model_max_length": config.context, "add_prefix_space": False,
        "bos_token": ENDOFTEXT, "eos_token": ENDOFTEXT, "unk_token": ENDOFTEXT,
    })
    write_json(os.path.join(out_dir, "special_tokens_map.json"), {"bos_token": ENDOFTEXT, "eos_token": ENDOFTEXT, "unk_token": ENDOFTEXT})


def merge_parts(ranks, token, rank):
    """The two tokens that `token` is merged from: tiktoken's own merging of its bytes with the ranks below
    its rank stops at exactly two parts."""
    parts = [bytes([b]) for b in token]
    while len(parts) > 2:
        pairs = [(ranks.get(a + b, rank), i) for i, (a, b) in enumerate(zip(parts, parts[1:]))]
        best, i = min(pairs)
        if best >= rank:
            break
        parts[i : i + 2] = [parts[i] + parts[i + 1]]
    return parts


def token_text():
    """A function from token bytes to the token as tokenizer files write it, in GPT-2's printable byte alphabet."""
    chars = byte_characters()
    return lambda token: "".join(chars[b] for b in token)


def bpe_merges(encoding):
    """The merges of a tiktoken `encoding`, in rank order, as (left, right) pairs of token texts: each token
    of two bytes or more is one merge, of the two parts its bytes merge into (as transformers converts
    tiktoken files)."""
    text, ranks = token_text(), encoding._mergeable_ranks
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda item: item[1]):
        if len(token) > 1:
            left, right = merge_parts(ranks, token, rank)
            merges.append((text(left), text(right)))
    return merges


def write_tokenizer_json(encoding, path):
    """A Hugging Face tokenizer.json that tokenizes as the tiktoken `encoding` does: its split pattern, then
    byte-level BPE whose merges are read back from the ranks (as transformers converts tiktoken files), and
    its special tokens at their ids."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

    text = token_text()
    vocab = {text(token): rank for token, rank in encoding._mergeable_ranks.items()}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=bpe_merges(encoding), fuse_unk=False, byte_fallback=False))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(oniguruma_pattern(encoding._pat_str)), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tokenizer.decoder = decoders.ByteLevel()
    for name, token in sorted(encoding._special_tokens.items(), key=lambda item: item[1]):
        if token != tokenizer.get_vocab_size(with_added_tokens=True):
            raise CheckpointError(f"special token {name} has id {token}; only special tokens right after the ranks can be exported")
        tokenizer.add_special_tokens([AddedToken(name, special=True, normalized=False)])
    tokenizer.save(path)


def export_gpt2(model, config):
    """(tensors, config.json) of a GPT2LMHeadModel."""
    if not config.bias:
        raise CheckpointError("GPT-2 in transformers always has biases; a model trained with --no-bias cannot be exported")
    vocab = config.tokenizer["vocab_size"]
    tensors = {}
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight":
            continue  # tied to transformer.wte.weight
        if name == "transformer.wte.weight":
            tensor = tensor[:vocab]  # drop the padding rows
        if name.endswith(CONV1D):
            tensor = tensor.t()
        tensors[name] = tensor.detach().to("cpu", torch.float32).contiguous()
    return tensors, {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2",
        "n_positions": config.context, "n_ctx": config.context, "n_embd": config.n_embd, "n_layer": config.n_layer,
        "n_head": config.n_head, "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5,
        "resid_pdrop": config.dropout, "embd_pdrop": config.dropout, "attn_pdrop": config.dropout,
        "tie_word_embeddings": True,
    }


def export_llama(model, config):
    """(tensors, config.json) of a LlamaForCausalLM, or a Qwen3ForCausalLM for a model with QK-norm."""
    if config.mlp != "swiglu":
        raise CheckpointError(f"Hugging Face's Llama has a SwiGLU MLP; a model trained with the {config.mlp} MLP cannot be exported")
    vocab = config.tokenizer["vocab_size"]
    tensors = {}
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight" and config.tie_embeddings:
            continue  # tied to the embedding
        if name in ("embed_tokens.weight", "lm_head.weight"):
            tensor = tensor[:vocab]  # drop the padding rows
        tensors[name if name == "lm_head.weight" else "model." + name] = tensor.detach().to("cpu", torch.float32).contiguous()
    model_type = "qwen3" if config.qk_norm else "llama"
    return tensors, {
        "architectures": [LLAMA_TYPES[model_type]], "model_type": model_type,
        "hidden_size": config.n_embd, "intermediate_size": model.config.hidden, "num_hidden_layers": config.n_layer,
        "num_attention_heads": config.n_head, "num_key_value_heads": config.n_head, "head_dim": config.n_embd // config.n_head,
        "max_position_embeddings": config.context, "hidden_act": "silu", "rms_norm_eps": NORM_EPS,
        "rope_theta": ROPE_THETA, "rope_parameters": {"rope_type": "default", "rope_theta": ROPE_THETA},
        "attention_bias": False, "mlp_bias": False, "attention_dropout": config.dropout,
        "tie_word_embeddings": config.tie_embeddings, "use_sliding_window": False,
    }


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=1)


def read_hf_config(hf_dir):
    """Our model shape (and family) from a Hugging Face GPT-2, Llama or Qwen3 directory's config.json."""
    path = os.path.join(hf_dir, "config.json")
    try:
        with open(path) as f:
            config = json.load(f)
    except (OSError, ValueError, RecursionError) as e:
        raise CheckpointError(f"{path}: not a readable Hugging Face config ({e})") from None
    model_type = config.get("model_type")
    if model_type == "gpt2":
        if config.get("activation_function", "gelu_new") not in ("gelu_new", "gelu_pytorch_tanh"):
            raise CheckpointError(f"{path}: activation {config['activation_function']!r} is not the GPT-2 GELU this model uses")
        return {"family": "gpt2", "n_layer": config["n_layer"], "n_head": config["n_head"], "n_embd": config["n_embd"],
                "context": config["n_positions"], "vocab_size": config["vocab_size"]}
    if model_type not in LLAMA_TYPES:
        raise CheckpointError(f"{path}: model_type {model_type!r}; only GPT-2, Llama and Qwen3 models can be loaded")
    width, heads = config["hidden_size"], config["num_attention_heads"]
    theta = config.get("rope_theta") or config.get("rope_parameters", {}).get("rope_theta", ROPE_THETA)
    scaling = config.get("rope_scaling") or config.get("rope_parameters", {}).get("rope_type", "default")
    unlike = [
        what for what, differs in (
            (f"{config.get('num_key_value_heads', heads)} key/value heads for {heads} query heads (grouped-query attention)",
             config.get("num_key_value_heads", heads) != heads),
            (f"head_dim {config.get('head_dim')}", config.get("head_dim", width // heads) != width // heads),
            (f"activation {config.get('hidden_act')!r}", config.get("hidden_act", "silu") != "silu"),
            (f"rope_theta {theta}", theta != ROPE_THETA),
            (f"RoPE scaling {scaling!r}", scaling not in ("default", None)),
            ("biases", config.get("attention_bias") or config.get("mlp_bias")),
            (f"rms_norm_eps {config.get('rms_norm_eps')}", config.get("rms_norm_eps", NORM_EPS) != NORM_EPS),
        ) if differs
    ]
    if unlike:
        raise CheckpointError(f"{path}: {unlike[0]}; gptmill's Llama-style model cannot hold it")
    shape = {"family": "llama", "n_layer": config["num_hidden_layers"], "n_head": heads, "n_embd": width,
             "context": config["max_position_embeddings"], "vocab_size": config["vocab_size"], "mlp": "swiglu",
             "qk_norm": model_type == "qwen3", "tie_embeddings": bool(config.get("tie_word_embeddings", False))}
    ours = LlamaConfig(**{k: v for k, v in shape.items() if k != "family"}).hidden
    if ours != config["intermediate_size"]:
        raise CheckpointError(f"{path}: intermediate_size {config['intermediate_size']}; gptmill's SwiGLU width for "
                              f"hidden_size {width} is {ours}")
    return shape


def load_hf_weights(model, hf_dir):
    """Copy a Hugging Face checkpoint (model.safetensors) of the model's family into `model`."""
    path = os.path.join(hf_dir, "model.safetensors")
    if not os.path.exists(path):
        raise CheckpointError(f"{hf_dir}: no model.safetensors (pickled pytorch_model.bin files are not loaded, they can carry code)")
    shape = read_hf_config(hf_dir)
    if shape["vocab_size"] != model.config.vocab_size:
        raise CheckpointError(f"{hf_dir}: vocabulary of {shape['vocab_size']} tokens, the dataset's tokenizer has {model.config.vocab_size}")
    llama = shape["family"] == "llama"
    embeddings = ("embed_tokens.weight", "lm_head.weight") if llama else ("transformer.wte.weight", "lm_head.weight")
    padded_rows = model.state_dict()[embeddings[0]]
    weights = {}
    for name, tensor in load_file(path).items():
        if name.endswith((".attn.bias", ".attn.masked_bias")):
            continue  # causal-mask buffers of older transformers versions
        if llama:
            name = name.removeprefix("model.")
        else:
            name = name if name.startswith(("transformer.", "lm_head.")) else "transformer." + name
            if name.endswith(CONV1D):
                tensor = tensor.t()
        if name in embeddings:
            padded = padded_rows.detach().clone()  # keep the padding rows as initialised
            padded[: tensor.size(0)] = tensor
            tensor = padded
        weights[name] = tensor.contiguous()
    load_weights(model, weights, hf_dir)


def is_hf_directory(path):
    """Whether `path` holds a Hugging Face model (its config.json names a model_type; a run's does not)."""
    try:
        with open(os.path.join(path, "config.json")) as f:
            return "model_type" in json.load(f)
    except (OSError, ValueError, TypeError, RecursionError):
        return False


def load_hf_model(hf_dir, device):
    """(model, tiktoken encoding) of a Hugging Face GPT-2, Llama or Qwen3 directory tokenized with GPT-2's
    vocabulary (GPT-2 itself, or a gpt2 run's export), on `device`, in eval mode."""
    shape = read_hf_config(hf_dir)
    try:
        with open(os.path.join(hf_dir, "vocab.json")) as f, open(gpt2_files()["encoder.json"]) as g:
            gpt2_vocabulary = json.load(f) == json.load(g)
    except (OSError, ValueError, RecursionError):
        gpt2_vocabulary = False
    if not gpt2_vocabulary:
        raise CheckpointError(f"{hf_dir}: its vocab.json is not GPT-2's; only models with GPT-2's tokenizer are scored from a "
                              f"Hugging Face directory (score a run of another tokenizer by its run directory)")
    family, values = shape["family"], {k: v for k, v in shape.items() if k != "family"}
    model = build_model(GPTConfig(**values, dropout=0.0, bias=True) if family == "gpt2" else LlamaConfig(**values, dropout=0.0))
    load_hf_weights(model, hf_dir)
    return model.to(device).eval(), load_encoding("gpt2")
