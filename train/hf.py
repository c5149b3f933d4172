"""Hugging Face formats: export a run so `transformers` loads it offline, and import such a directory.

What is the family's (the architecture, config.json's keys, the tensors' names) is in its module under
train/models/; here is what every family shares: the files, the unpadded vocabulary, and the tokenizer. The
tokenizer files of a gpt2 run are GPT-2's own BPE files (the ones prepare verifies), renamed as transformers
expects; any other tokenizer becomes a tokenizer.json that tokenizes exactly as tiktoken.
"""

import json
import os
import shutil

import torch
from safetensors.torch import load_file, save_file

from prepare.tokenizer import ENDOFTEXT, byte_characters, gpt2_files, load_encoding, oniguruma_pattern
from prepare.format import free_bytes, is_disk_full
from train.checkpoint import CheckpointError, load_weights, tensor_bytes
from train.models import FAMILIES, HF_FAMILIES


def export(model, config, out_dir, encoding):
    """Write config.json, model.safetensors and the tokenizer files of `model` (tokenized by `encoding`) to
    `out_dir`."""
    family = FAMILIES[config.family]
    if problem := family.hf_export_problem(config):
        raise CheckpointError(problem)
    tensors, hf_config = family.hf_export(model, config)
    tensors = {name: tensor.detach().to("cpu", torch.float32).contiguous() for name, tensor in tensors.items()}
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
    write_json(os.path.join(out_dir, "special_tokens_map.json"),
               {"bos_token": ENDOFTEXT, "eos_token": ENDOFTEXT, "unk_token": ENDOFTEXT})


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
            raise CheckpointError(f"special token {name} has id {token}; only special tokens right after the ranks "
                                  f"can be exported")
        tokenizer.add_special_tokens([AddedToken(name, special=True, normalized=False)])
    tokenizer.save(path)


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=1)


def read_hf_config(hf_dir):
    """Our model shape (and family) from a Hugging Face directory's config.json, of a model_type a family holds."""
    path = os.path.join(hf_dir, "config.json")
    try:
        with open(path) as f:
            config = json.load(f)
    except (OSError, ValueError, RecursionError) as e:
        raise CheckpointError(f"{path}: not a readable Hugging Face config ({e})") from None
    family = HF_FAMILIES.get(config.get("model_type"))
    if family is None:
        names = [name for known in FAMILIES.values() for name in known.HF_MODEL_TYPES.values()]
        raise CheckpointError(f"{path}: model_type {config.get('model_type')!r}; only {', '.join(names[:-1])} and "
                              f"{names[-1]} models can be loaded")
    if problem := family.hf_import_problem(config):
        raise CheckpointError(f"{path}: {problem}")
    return family.hf_shape(config)


def load_hf_weights(model, hf_dir):
    """Copy a Hugging Face checkpoint (model.safetensors) of the model's family into `model`."""
    path = os.path.join(hf_dir, "model.safetensors")
    if not os.path.exists(path):
        raise CheckpointError(f"{hf_dir}: no model.safetensors (pickled pytorch_model.bin files are not loaded, "
                              f"they can carry code)")
    shape = read_hf_config(hf_dir)
    if shape["vocab_size"] != model.config.vocab_size:
        raise CheckpointError(f"{hf_dir}: vocabulary of {shape['vocab_size']} tokens, the dataset's tokenizer has "
                              f"{model.config.vocab_size}")
    family = FAMILIES[shape["family"]]
    padded_rows = model.state_dict()[family.EMBEDDINGS[0]]
    weights = {}
    for name, tensor in load_file(path).items():
        if (ours := family.hf_weight(name, tensor)) is None:
            continue
        name, tensor = ours
        if name in family.EMBEDDINGS:
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
    """(model, tiktoken encoding) of a Hugging Face directory of a model_type a family holds, tokenized with GPT-2's
    vocabulary (GPT-2 itself, or a gpt2 run's export), on `device`, in eval mode."""
    shape = read_hf_config(hf_dir)
    try:
        with open(os.path.join(hf_dir, "vocab.json")) as f, open(gpt2_files()["encoder.json"]) as g:
            gpt2_vocabulary = json.load(f) == json.load(g)
    except (OSError, ValueError, RecursionError):
        gpt2_vocabulary = False
    if not gpt2_vocabulary:
        raise CheckpointError(f"{hf_dir}: its vocab.json is not GPT-2's; only models with GPT-2's tokenizer are scored "
                              f"from a Hugging Face directory (score a run of another tokenizer by its run directory)")
    family = FAMILIES[shape["family"]]
    model = family.build(family.SHAPE(**{k: v for k, v in shape.items() if k != "family"}, dropout=0.0))
    load_hf_weights(model, hf_dir)
    return model.to(device).eval(), load_encoding("gpt2")
