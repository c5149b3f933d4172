"""GGUF export: one file that llama.cpp runs, and with it Ollama, LM Studio and the tools built on them.

Written with `gguf`, llama.cpp's own Python writer, laid out as llama.cpp's convert_hf_to_gguf.py lays out the
Hugging Face export. The architecture, its tensors and hyperparameters are the family's (train/models/); here
are the file, how each tensor is stored, and the tokenizer: byte-level BPE, and the name of the llama.cpp
pre-tokenizer that splits text as the run's pattern does (llama.cpp reads no pattern), or a refusal
(docs/gguf.md).
"""

import os

import gguf
import torch
from tiktoken_ext.openai_public import r50k_pat_str

from prepare.tokenizer import ENDOFTEXT, GPT4_PATTERN, gpt2_files
from train.checkpoint import CheckpointError
from train.hf import bpe_merges, token_text
from train.models import FAMILIES

# Our split patterns -> the llama.cpp pre-tokenizer (src/llama-vocab.cpp; its splitting code is in
# src/unicode.cpp) that splits text as they do. "gpt-2" is GPT-2's pattern, to the letter. "llama-bpe" (Llama
# 3's) is GPT-4's pattern but for two places, see llama_bpe_difference.
PRE_TOKENIZERS = {r50k_pat_str: "gpt-2", GPT4_PATTERN: "llama-bpe"}
# --type -> (how matrices are stored, the file type GGUF records)
TYPES = {
    "f32": (gguf.GGMLQuantizationType.F32, gguf.LlamaFileType.ALL_F32),
    "f16": (gguf.GGMLQuantizationType.F16, gguf.LlamaFileType.MOSTLY_F16),
    "bf16": (gguf.GGMLQuantizationType.BF16, gguf.LlamaFileType.MOSTLY_BF16),
    "q8_0": (gguf.GGMLQuantizationType.Q8_0, gguf.LlamaFileType.MOSTLY_Q8_0),
}
LONG_S = "ſ".encode()


def export(model, config, encoding, path, tensor_type="f16", pre_tokenizer=None, name=None, warn=print):
    """Write `model` (of run configuration `config`, tokenized by `encoding`) as the GGUF file `path`, its
    matrices in `tensor_type`. `pre_tokenizer` names the llama.cpp pre-tokenizer to write when the run's
    split pattern has no equal (with a warning); without it such a run is refused."""
    vocab = config.tokenizer["vocab_size"]
    if encoding.n_vocab != vocab:
        raise CheckpointError(f"the tokenizer has {encoding.n_vocab} ids, the model was trained on {vocab}")
    pre = choose_pre_tokenizer(encoding, pre_tokenizer, warn)
    family = FAMILIES[config.family]
    if problem := family.gguf_export_problem(config):
        raise CheckpointError(problem)
    tensors, arch = family.gguf_export(model, config, vocab)
    tmp = f"{path}.tmp-{os.getpid()}"
    writer = gguf.GGUFWriter(tmp, arch)
    try:
        writer.add_name(name or os.path.basename(str(path)).removesuffix(".gguf"))
        writer.add_file_type(TYPES[tensor_type][1])
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        write_hyperparameters(writer, model, config, family, vocab)
        write_tokenizer(writer, encoding, config, pre)
        for tensor_name, tensor in tensors.items():
            data = tensor.detach().to("cpu", torch.float32).numpy()
            kind = storage_type(tensor_name, data, tensor_type)
            writer.add_tensor(tensor_name, gguf.quants.quantize(data, kind), raw_dtype=kind)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, path)
    finally:
        writer.close()
        if os.path.exists(tmp):
            os.remove(tmp)


def storage_type(name, data, tensor_type):
    """How a tensor is stored: matrices in the chosen type, except GPT-2's position table, and vectors in f32
    (as llama.cpp's converter keeps them); q8_0 needs rows in whole blocks of 32, else they are f16 (as the
    converter falls back)."""
    if data.ndim < 2 or name == "position_embd.weight":
        return gguf.GGMLQuantizationType.F32
    if tensor_type == "q8_0" and data.shape[-1] % gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q8_0][0]:
        return gguf.GGMLQuantizationType.F16
    return TYPES[tensor_type][0]


def write_hyperparameters(writer, model, config, family, vocab):
    """The keys every family writes, then its own."""
    writer.add_vocab_size(vocab)
    writer.add_context_length(config.context)
    writer.add_embedding_length(config.n_embd)
    writer.add_block_count(config.n_layer)
    writer.add_head_count(config.n_head)
    writer.add_head_count_kv(config.n_head)
    family.gguf_hyperparameters(writer, model, config)


def write_tokenizer(writer, encoding, config, pre):
    """Byte-level BPE: every id's token (special ones as control tokens, ids without a token as unused
    placeholders), the merges, and end-of-text as BOS (prepended, as `train sample` starts a prompt) and EOS."""
    text = token_text()
    special = {token: name for name, token in encoding._special_tokens.items()}
    tokens, types = [], []
    for token in range(encoding.n_vocab):
        if token in special:
            tokens.append(special[token])
            types.append(gguf.TokenType.CONTROL)
            continue
        try:
            tokens.append(text(encoding.decode_single_token_bytes(token)))
            types.append(gguf.TokenType.NORMAL)
        except KeyError:  # a gap in the ids (tiktoken's cl100k_base has some)
            tokens.append(f"[PAD{token}]")
            types.append(gguf.TokenType.UNUSED)
    if config.tokenizer["name"] == "gpt2" and not config.tokenizer.get("trained"):
        # GPT-2's own merges, as its tokenizer files have them
        with open(gpt2_files()["vocab.bpe"], encoding="utf-8") as f:
            merges = [line.rstrip("\n") for line in f if line.strip() and not line.startswith("#version")]
    else:
        merges = [f"{left} {right}" for left, right in bpe_merges(encoding)]
    eot = config.tokenizer["eot_token"]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(eot)
    writer.add_eos_token_id(eot)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)


def choose_pre_tokenizer(encoding, given, warn):
    """The llama.cpp pre-tokenizer that splits as `encoding`; `given` (a name) writes another, with a warning."""
    pre = PRE_TOKENIZERS.get(encoding._pat_str)
    problem = None
    if pre is None:
        problem = f"tokenizer {encoding.name!r} splits text with a pattern that no llama.cpp pre-tokenizer equals"
    elif pre == "llama-bpe" and (token := llama_bpe_difference(encoding)) is not None:
        problem = (f"tokenizer {encoding.name!r} has the token {token!r}, across a place where llama.cpp's llama-bpe "
                   f"pre-tokenizer splits text and its GPT-4 pattern does not")
    if given and (problem or given != pre):
        warn(f"warning: {problem or f'llama.cpp splits this tokenizer as {pre!r}'}; writing pre-tokenizer {given!r} "
             f"as asked: llama.cpp may tokenize some texts differently from training")
        return given
    if problem:
        raise CheckpointError(f"{problem}, so llama.cpp would tokenize some texts differently; --pre-tokenizer NAME "
                              f"writes one of llama.cpp's anyway")
    return pre


def llama_bpe_difference(encoding):
    """A token that would make llama.cpp's llama-bpe tokenize differently from the GPT-4 pattern, or None.

    The two split text alike except in two places. The GPT-4 pattern (as tiktoken writes it) keeps whitespace at
    the end of a text whole (\\s++$), where llama-bpe ends a piece after its last newline (a text ending in
    "\\n  "); and its contraction is case-insensitive in Unicode, so "'ſ" (long s, whose upper case is S) is a
    piece of its own, where llama-bpe reads the letters after it into the same piece. Either way llama-bpe splits
    one of our pieces in two, and BPE (its merges and tiktoken's ranks alike) gives the same tokens for a
    piece and for its two halves unless some token spans the cut: one holding a newline followed by anything
    but a newline (no other piece of the GPT-4 pattern has one), or "ſ" followed by anything."""
    for token in encoding._mergeable_ranks:
        for i, byte in enumerate(token[:-1]):
            newline_then_other = byte in b"\r\n" and token[i + 1] not in b"\r\n"
            if newline_then_other or (token[i : i + 2] == LONG_S and i + 2 < len(token)):
                return token.decode("utf-8", errors="replace")
    return None
