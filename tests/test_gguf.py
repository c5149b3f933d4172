"""GGUF export: read back with `gguf`'s own reader everywhere (tensors equal the checkpoint's, metadata
complete, refusals), and run by llama.cpp itself where llama-cpp-python is installed (`.[gguf-check]`): the same
token ids on varied texts, next-token logits within 1e-3, the same greedy continuation as `train sample`."""

import os

import numpy as np
import pytest
import tiktoken
import torch
from click.testing import CliRunner

from conftest import prepare, write
from prepare.sources import stdlib_files
from prepare.tokenizer import ENDOFTEXT, GPT4_PATTERN
from train import checkpoint
from train.checkpoint import CheckpointError
from train.config import DataSource, RunConfig
from train.generate import prompt_ids, sample
from train.models.gpt2 import GPT
from train.models.gpt2_family import GPTConfig
from train.models.llama import Llama
from train.models.llama_family import LlamaConfig

gguf = pytest.importorskip("gguf")

RUN = ["--n-layer", 2, "--n-head", 2, "--n-embd", 32, "--context", 64, "--batch-size", 4, "--max-steps", 30, "--lr", 3e-3,
       "--no-compile", "--device", "cpu", "--dtype", "fp32", "--no-samples", "--eval-every", 0]
PROMPTS = ["def main(self):", "import os\nimport sys\n\n", "class Parser:\n    \"\"\"Read"]
SCRIPTS = [  # eight scripts, and text that mixes them
    "Grüße aus Köln — naïve café, ½ price; 3½ €.",
    "Привет, мир! Съешь же ещё этих мягких французских булок.",
    "Ἐν ἀρχῇ ἦν ὁ λόγος, καὶ ὁ λόγος ἦν πρὸς τὸν θεόν.",
    "مرحبا بالعالم. اللغة العربية تكتب من اليمين إلى اليسار",
    "שלום עולם, זה טקסט בעברית",
    "हिन्दी में लिखा गया वाक्य, संयुक्ताक्षर क्ष त्र ज्ञ",
    "東京は雨です。今日は良い天気ですね。中文也可以。",
    "한국어 문장입니다. 띄어쓰기 포함",
    "ภาษาไทยไม่มีการเว้นวรรคระหว่างคำ",
]
TEXTS = SCRIPTS + [
    "def parse(line: str) -> dict[str, int]:\n    return {k: int(v) for k, v in (p.split('=') for p in line.split(';'))}\n",
    "\tif x  >=  10:\n\t\treturn None   \n\n\n",
    "for (int i = 0; i < n; ++i) { a[i] += b[i] * 2; }  // C\n",
    "  leading spaces\r\n\r\nwindows line ends\r\n   trailing   ",
    "mixed\r\n\tline\rends\n\r\n",
    "trailing spaces   ",
    "trailing newline then spaces\n   ",
    "trailing tab\t",
    "\n\n\n\n\n",
    " " * 40 + "forty spaces, then a tab run" + "\t" * 12 + "end",
    "\n" + " " * 17 + "indented\n" + "\t" * 5 + "\n" + " " * 3,
    "Numbers 1234567 3.14159 0x1F 1e-9 and 000123",
    "12345678901234567890123456789012345678901234567890",
    "phone +1 (555) 010-9999, 2026-12-03T17:40:00Z, 1,000,000.00",
    "Emoji 😀🎉 family 👩‍👩‍👧 and flags 🇫🇷🇯🇵, skin tone 👍🏽, keycap 1️⃣",
    "ZWJ 🧑‍💻 and 🏳️‍🌈 and 👨‍👨‍👦‍👦",
    "maths ∑∫√∞ ≤ ≥ ≠ and arrows →⇒ ⟶",
    "contractions: don't, I'LL, we've, they're, 's 'd 'M 'Re",
    "quotes 'single' \"double\" «guillemets» „Anführung“",
    f"{ENDOFTEXT} is plain text here",
    f"two documents{ENDOFTEXT}glued{ENDOFTEXT}",
    "<|endoftext|",
    "control \x07\x1b[0m and BOM \ufeff and NBSP\u00a0here, ideographic\u3000space",
    "replacement \ufffd\ufffd and a lone \ufffd",
    "https://example.com/path?query=1&x=%20#frag",
    "{\"json\": [1, 2, 3], \"nested\": {\"k\": null}}",
    "SELECT * FROM t WHERE a = 'x' AND b <> 3;",
    "<html><body class=\"x\">Hi &amp; bye</body></html>",
    "    def __init__(self, *args, **kwargs) -> None:\n        super().__init__(*args, **kwargs)\n",
    "ALL CAPS SENTENCE WITH NUMBERS 42 AND SYMBOLS #@!",
    "a",
    " ",
    "x" * 300,
    "....,,,,;;;;!!!???",
    "tab\tseparated\tvalues\n1\t2\t3",
    "line one\nline two\n\nparagraph",
    "Café ﬁ ligature and combining e\u0301 vs é",
    "Straße ſ long s, 'ſt archaic",
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("gguf")
    for i, f in enumerate(stdlib_files()[200:240]):
        write(root / "src" / f"{i:03d}.py", open(f, "rb").read(), mode="wb")
    write(root / "src" / "zz-scripts.md", "\n\n".join(SCRIPTS) * 2)
    return root


@pytest.fixture(scope="module")
def llama_run(corpus):
    """make train's model in miniature: tiny-llama (QK-norm, tied) on a vocabulary trained by `prepare tokenizer`."""
    tokenizer = corpus / "tokenizers" / "src-600"
    prepare("tokenizer", corpus / "src", "--vocab-size", 600, "--out", tokenizer)
    prepare("build", corpus / "src", "--out", corpus / "data-600", "--encoding", tokenizer, "--val-fraction", 0.1)
    run(corpus / "data-600", corpus / "llama", "tiny-llama")
    return corpus / "llama"


@pytest.fixture(scope="module")
def gpt2_run(corpus):
    """A GPT-2 with GPT-2's own vocabulary."""
    prepare("build", corpus / "src", "--out", corpus / "data-gpt2", "--val-fraction", 0.1)
    run(corpus / "data-gpt2", corpus / "gpt2", "tiny")
    return corpus / "gpt2"


def run(data, out, preset):
    from train.cli import cli

    args = ["fit", "--data", data, "--out", out, "--model", preset, *RUN]
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output


def export(run_dir, out, *options, ok=True):
    from train.cli import cli

    result = CliRunner().invoke(cli, ["export", str(run_dir), str(out), "--format", "gguf", "--checkpoint", "latest",
                                                      *map(str, options)], catch_exceptions=False)
    assert (result.exit_code == 0) == ok, result.output + result.stderr
    return result


def fields(reader):
    """Every metadata key -> its value (a string, a number, or a list of them)."""
    values = {}
    for name, field in reader.fields.items():
        values[name] = field.contents()
    return values


def tensors(reader):
    """name -> (stored type, values as float32 of the logical shape)."""
    out = {}
    for t in reader.tensors:
        data = gguf.quants.dequantize(t.data, t.tensor_type).reshape([int(d) for d in reversed(t.shape)])
        out[t.name] = (t.tensor_type, data)
    return out


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_f32_file_holds_the_checkpoint_and_complete_metadata(family, llama_run, gpt2_run, tmp_path):
    run_dir = llama_run if family == "llama" else gpt2_run
    result = export(run_dir, tmp_path / "model.gguf", "--type", "f32")
    assert "llama-server -m" in result.output
    model, config = checkpoint.load_model(run_dir, "latest", torch.device("cpu"))
    encoding = checkpoint.load_encoding(run_dir, "latest", config)
    reader = gguf.GGUFReader(tmp_path / "model.gguf")
    meta, stored = fields(reader), tensors(reader)
    arch = "qwen3" if family == "llama" else "gpt2"
    vocab = encoding.n_vocab
    assert meta["general.architecture"] == arch and meta["general.file_type"] == gguf.LlamaFileType.ALL_F32
    assert (meta[f"{arch}.context_length"], meta[f"{arch}.embedding_length"], meta[f"{arch}.block_count"],
            meta[f"{arch}.attention.head_count"]) == (64, 32, 2, 2)
    state = model.state_dict()
    if family == "llama":
        assert meta["qwen3.rope.freq_base"] == 10000.0 and meta["qwen3.attention.layer_norm_rms_epsilon"] == pytest.approx(1e-6)
        assert meta["qwen3.feed_forward_length"] == model.config.hidden
        assert meta["tokenizer.ggml.pre"] == "llama-bpe"  # the GPT-4 pattern of `prepare tokenizer`
        pairs = {"token_embd.weight": state["embed_tokens.weight"][:vocab], "output_norm.weight": state["norm.weight"],
                 "blk.1.attn_q.weight": state["layers.1.self_attn.q_proj.weight"], "blk.1.attn_k_norm.weight": state["layers.1.self_attn.k_norm.weight"],
                 "blk.0.ffn_gate.weight": state["layers.0.mlp.gate_proj.weight"], "blk.0.ffn_down.weight": state["layers.0.mlp.down_proj.weight"]}
        assert "output.weight" not in stored  # tied
        assert len(stored) == 2 + 2 * 11
    else:
        assert meta["gpt2.attention.layer_norm_epsilon"] == pytest.approx(1e-5) and meta["gpt2.feed_forward_length"] == 128
        assert meta["tokenizer.ggml.pre"] == "gpt-2"
        pairs = {"token_embd.weight": state["transformer.wte.weight"][:vocab], "position_embd.weight": state["transformer.wpe.weight"],
                 "blk.0.attn_qkv.weight": state["transformer.h.0.attn.c_attn.weight"], "blk.0.attn_qkv.bias": state["transformer.h.0.attn.c_attn.bias"],
                 "blk.1.ffn_down.weight": state["transformer.h.1.mlp.c_proj.weight"], "output_norm.bias": state["transformer.ln_f.bias"]}
        assert len(stored) == 4 + 2 * 12
    for name, tensor in pairs.items():
        assert stored[name][0] == gguf.GGMLQuantizationType.F32 and np.array_equal(stored[name][1], tensor.numpy()), name
    assert all(data.dtype == np.float32 for _, data in stored.values())
    # The tokenizer: every id's token in GPT-2's byte alphabet, end-of-text as BOS and EOS, prepended.
    eot = encoding.eot_token
    tokens = meta["tokenizer.ggml.tokens"]
    assert meta["tokenizer.ggml.model"] == "gpt2" and len(tokens) == vocab == stored["token_embd.weight"][1].shape[0]
    assert tokens[eot] == ENDOFTEXT and meta["tokenizer.ggml.token_type"][eot] == gguf.TokenType.CONTROL
    assert [tokens[encoding.encode_single_token(c.encode())] for c in "a \n"] == ["a", "Ġ", "Ċ"]
    assert (meta["tokenizer.ggml.bos_token_id"], meta["tokenizer.ggml.eos_token_id"], meta["tokenizer.ggml.add_bos_token"],
            meta["tokenizer.ggml.add_eos_token"]) == (eot, eot, True, False)
    merges = meta["tokenizer.ggml.merges"]
    assert len(merges) == vocab - 1 - 256 if family == "llama" else len(merges) == 50000
    left, right = merges[0].split(" ")
    assert tokens.index(left + right) == 256  # the first merge makes the first token after the bytes


def test_types_store_the_matrices_smaller_and_the_vectors_whole(llama_run, tmp_path):
    sizes, stored = {}, {}
    for kind in ("f32", "f16", "bf16", "q8_0"):
        export(llama_run, tmp_path / f"{kind}.gguf", "--type", kind)
        sizes[kind] = os.path.getsize(tmp_path / f"{kind}.gguf")
        stored[kind] = tensors(gguf.GGUFReader(tmp_path / f"{kind}.gguf"))
    assert sizes["f32"] > sizes["f16"] == sizes["bf16"] > sizes["q8_0"]
    for name, (kind, exact) in stored["f32"].items():
        if exact.ndim == 1:  # norm gains stay f32 whatever the type
            assert all(stored[t][name][0] == gguf.GGMLQuantizationType.F32 for t in stored), name
            continue
        torch_exact = torch.tensor(exact)
        assert np.array_equal(stored["f16"][name][1], torch_exact.half().float().numpy()), name
        assert np.array_equal(stored["bf16"][name][1], torch_exact.bfloat16().float().numpy()), name
        assert stored["q8_0"][name][0] == gguf.GGMLQuantizationType.Q8_0
        # q8_0: 8-bit steps of a scale per 32 weights (their largest / 127, itself stored as f16)
        blocks = np.abs(exact).reshape(-1, 32).max(axis=1, keepdims=True)
        assert (np.abs(stored["q8_0"][name][1] - exact).reshape(-1, 32) <= blocks * (0.5 / 127 + 2**-10)).all(), name
    assert export(llama_run, tmp_path, ok=False).stderr.startswith("error: ")  # OUT is the file, not a directory
    from train.cli import cli

    result = CliRunner().invoke(cli, ["export", str(llama_run), str(tmp_path / "hf"), "--type", "q8_0"])
    assert result.exit_code != 0 and "--format gguf" in result.stderr and not (tmp_path / "hf").exists()


def byte_encoding(*merged):
    """A small byte-level BPE with the GPT-4 pattern: the 256 bytes, the `merged` tokens, then end-of-text."""
    ranks = {bytes([b]): b for b in range(256)} | {token: 256 + i for i, token in enumerate(merged)}
    return tiktoken.Encoding("bytes", pat_str=GPT4_PATTERN, mergeable_ranks=ranks, special_tokens={ENDOFTEXT: len(ranks)})


LONG_S_TOKENS = ("ſ".encode(), "ſt".encode(), "'ſ".encode())


def fresh(shape, **config):
    """A freshly initialised model of `shape`, with weights large enough that every logit depends on each of
    them (so that a misplaced row shows), and its run configuration (tokenized by byte_encoding(b"in"): llama.cpp
    refuses a vocabulary without merges)."""
    torch.manual_seed(0)
    model = (Llama if isinstance(shape, LlamaConfig) else GPT)(shape).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) / p.size(-1) ** 0.5 if p.dim() == 2 else 1 + torch.randn_like(p) / 4)
    values = dict(data=[DataSource("d")], out="o", preset="tiny-llama", family="llama", mlp="swiglu", qk_norm=False,
                  tie_embeddings=False, n_layer=shape.n_layer, n_head=shape.n_head, n_embd=shape.n_embd, context=shape.context,
                  batch_size=1, tokens_per_step=shape.context, lr=1e-3, min_lr=1e-4,
                  tokenizer={"name": "bytes", "trained": True, "vocab_size": shape.vocab_size, "eot_token": shape.vocab_size - 1})
    return model, RunConfig(**{**values, **config})


def fresh_llama(**changes):
    """A Llama-style model without QK-norm and with untied embeddings: llama.cpp's llama architecture."""
    shape = LlamaConfig(**{**dict(vocab_size=258, context=64, n_layer=1, n_head=2, n_embd=64, qk_norm=False, tie_embeddings=False), **changes})
    return fresh(shape, mlp=shape.mlp)


def fresh_gpt2_without_biases():
    shape = GPTConfig(vocab_size=258, context=64, n_layer=1, n_head=2, n_embd=64, bias=False)
    return fresh(shape, preset="tiny", family="gpt2", bias=False, mlp=None, qk_norm=None, tie_embeddings=None)


def test_llama_without_qk_norm_goes_under_llama_with_pairs_rotation_rows(tmp_path):
    from train.gguf import export as export_gguf

    model, config = fresh_llama()
    export_gguf(model, config, byte_encoding(b"in"), tmp_path / "m.gguf", "f32")
    reader = gguf.GGUFReader(tmp_path / "m.gguf")
    meta, stored = fields(reader), tensors(reader)
    assert meta["general.architecture"] == "llama" and meta["llama.rope.dimension_count"] == 32
    assert np.array_equal(stored["output.weight"][1], model.lm_head.weight[:258].detach().numpy())  # untied
    q = model.layers[0].self_attn.q_proj.weight.detach()
    # Row 2i of each head (a pair's first) is our row i of its first half, row 2i+1 that of its second half.
    theirs = torch.tensor(stored["blk.0.attn_q.weight"][1]).view(2, 16, 2, 64)
    assert torch.equal(theirs[:, :, 0], q.view(2, 2, 16, 64)[:, 0]) and torch.equal(theirs[:, :, 1], q.view(2, 2, 16, 64)[:, 1])
    assert np.array_equal(stored["blk.0.attn_v.weight"][1], model.layers[0].self_attn.v_proj.weight.detach().numpy())


def test_gpt2_without_biases_is_written_with_zero_biases(tmp_path):
    from train.gguf import export as export_gguf

    model, config = fresh_gpt2_without_biases()
    export_gguf(model, config, byte_encoding(b"in"), tmp_path / "m.gguf", "f32")
    stored = tensors(gguf.GGUFReader(tmp_path / "m.gguf"))
    assert not stored["blk.0.attn_qkv.bias"][1].any() and stored["blk.0.attn_qkv.bias"][1].shape == (192,)
    assert not stored["output_norm.bias"][1].any()


def test_what_llama_cpp_cannot_run_the_same_is_refused(tmp_path):
    from train.gguf import export as export_gguf

    model, config = fresh_llama(mlp="relu2")
    with pytest.raises(CheckpointError, match="SwiGLU"):
        export_gguf(model, config, byte_encoding(b"in"), tmp_path / "m.gguf", "f32")
    # A vocabulary with a token across a place where llama-bpe cuts a GPT-4 piece in two ("\n" then spaces at
    # the end of a text) is refused; --pre-tokenizer writes it anyway, with a warning.
    encoding = byte_encoding(b"\n ")
    model, config = fresh_llama(vocab_size=258)
    with pytest.raises(CheckpointError, match=r"token '\\n '.*--pre-tokenizer"):
        export_gguf(model, config, encoding, tmp_path / "m.gguf", "f32")
    assert not os.listdir(tmp_path)
    warnings = []
    export_gguf(model, config, encoding, tmp_path / "m.gguf", "f32", pre_tokenizer="llama-bpe", warn=warnings.append)
    assert fields(gguf.GGUFReader(tmp_path / "m.gguf"))["tokenizer.ggml.pre"] == "llama-bpe" and "differently" in warnings[0]
    # A split pattern llama.cpp has no equal for.
    plain = tiktoken.Encoding("words", pat_str=r"\S+|\s+", mergeable_ranks=encoding._mergeable_ranks, special_tokens={ENDOFTEXT: 257})
    with pytest.raises(CheckpointError, match="no llama.cpp pre-tokenizer equals"):
        export_gguf(model, config, plain, tmp_path / "n.gguf", "f32")
    model, config = fresh_llama(vocab_size=260)
    with pytest.raises(CheckpointError, match="token 'ſt'"):  # long s: "'ſt" is "'ſ" then "t" in the GPT-4 pattern
        export_gguf(model, config, byte_encoding(*LONG_S_TOKENS), tmp_path / "m.gguf", "f32")


# llama.cpp itself (llama-cpp-python, `pip install -e '.[gguf-check]'`): the file as llama.cpp, Ollama and LM
# Studio run it. Its key/value cache is kept in f32 (its default is f16) so that f32 logits compare at 1e-3.


@pytest.fixture
def llama_cpp_model():
    """Loads a GGUF file into llama.cpp (skipping the test where llama-cpp-python is missing), closed after the test."""
    llama_cpp = pytest.importorskip("llama_cpp")
    loaded = []

    def load(path, context):
        loaded.append(llama_cpp.Llama(str(path), n_ctx=context, n_batch=context, n_threads=1, n_threads_batch=1, logits_all=True,
                                      type_k=llama_cpp.GGML_TYPE_F32, type_v=llama_cpp.GGML_TYPE_F32, flash_attn=False, verbose=False))
        return loaded[-1]

    yield load
    for llm in loaded:
        llm.close()


def llama_cpp_logits(llm, ids):
    """llama.cpp's next-token logits after each of `ids`."""
    llm.reset()
    llm.eval(ids)
    return torch.tensor(llm.scores[: len(ids)])


def llama_cpp_greedy(llm, ids, max_new_tokens, eot):
    """llama.cpp's greedy continuation of `ids`, stopping after end-of-text as `train sample` does."""
    llm.reset()
    llm.eval(ids)
    tokens = []
    while len(tokens) < max_new_tokens:
        tokens.append(int(np.argmax(llm.scores[llm.n_tokens - 1])))
        if tokens[-1] == eot:
            break
        llm.eval(tokens[-1:])
    return tokens


@pytest.fixture(scope="module")
def figures():
    """What the llama.cpp tests measured, printed at the end of the module (pytest -s shows it)."""
    found = {}
    yield found
    for name, value in found.items():
        print(f"\nllama.cpp check: {name}: {value}")


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_llama_cpp_tokenizes_computes_and_continues_as_we_do(family, llama_run, gpt2_run, tmp_path, figures, llama_cpp_model):
    run_dir = llama_run if family == "llama" else gpt2_run
    export(run_dir, tmp_path / "f32.gguf", "--type", "f32")
    model, config = checkpoint.load_model(run_dir, "latest", torch.device("cpu"))
    encoding = checkpoint.load_encoding(run_dir, "latest", config)
    llm = llama_cpp_model(tmp_path / "f32.gguf", config.context)
    assert llm.n_vocab() == encoding.n_vocab and llm.token_bos() == llm.token_eos() == encoding.eot_token
    # Tokens: llama.cpp's tokenizer (end-of-text in the text is text, as our encoders treat it) gives our ids.
    assert len(TEXTS) >= 40
    for text in TEXTS:
        assert llm.tokenize(text.encode(), add_bos=False, special=False) == encoding.encode_ordinary(text), repr(text)
    assert llm.tokenize(PROMPTS[0].encode()) == prompt_ids(encoding, PROMPTS[0])  # end-of-text first, as `train sample`
    figures[f"{family}: texts tokenized alike"] = len(TEXTS)
    # Logits: within 1e-3 of ours after every position of each prompt.
    worst = 0.0
    for prompt in PROMPTS:
        ids = prompt_ids(encoding, prompt)
        with torch.no_grad():
            ours = model(torch.tensor([ids]))[0][0, :, : encoding.n_vocab]
        worst = max(worst, (llama_cpp_logits(llm, ids) - ours).abs().max().item())
    figures[f"{family}: largest logit difference, f32"] = f"{worst:.2e}"
    assert worst < 1e-3
    # Greedy: the same 32 tokens as `train sample --temperature 0`, and the same text through llama.cpp's own
    # sampler and detokenizer.
    for prompt in PROMPTS:
        ids = prompt_ids(encoding, prompt)
        ours = list(sample(model, ids, 32, temperature=0, eot=encoding.eot_token))
        assert llama_cpp_greedy(llm, ids, 32, encoding.eot_token) == ours, prompt
        from train.cli import cli

        printed = CliRunner().invoke(cli, ["sample", "--run", str(run_dir), "--checkpoint", "latest", "--prompt", prompt,
                                           "--temperature", 0, "--max-new-tokens", 32, "--device", "cpu"]).output
        completion = llm.create_completion(prompt, max_tokens=32, temperature=0.0, repeat_penalty=1.0)["choices"][0]["text"]
        assert prompt + completion + "\n" == printed
    figures[f"{family}: greedy 32-token continuations equal to train sample"] = f"{len(PROMPTS)} of {len(PROMPTS)}"
    # q8_0: greedy continuations agree on most prompts.
    export(run_dir, tmp_path / "q8_0.gguf", "--type", "q8_0")
    quantized = llama_cpp_model(tmp_path / "q8_0.gguf", config.context)
    prompts = PROMPTS + [text[:20] for text in TEXTS[9:19]]
    agree = 0
    for prompt in prompts:
        ids = prompt_ids(encoding, prompt)
        agree += llama_cpp_greedy(quantized, ids, 32, encoding.eot_token) == list(sample(model, ids, 32, temperature=0, eot=encoding.eot_token))
    figures[f"{family}: q8_0 greedy 32-token continuations equal to ours"] = f"{agree} of {len(prompts)}"
    assert agree > len(prompts) / 2


@pytest.mark.parametrize("kind", ["llama", "gpt2-no-bias"])
def test_llama_cpp_computes_the_architectures_a_run_alone_does_not_cover(kind, tmp_path, figures, monkeypatch, llama_cpp_model):
    """llama's rotary layout (the permuted query and key rows) and GPT-2 with zero biases, on weights large enough
    that a misplaced row would show."""
    from train.gguf import export as export_gguf

    model, config = fresh_llama() if kind == "llama" else fresh_gpt2_without_biases()
    export_gguf(model, config, byte_encoding(b"in"), tmp_path / "m.gguf", "f32")
    llm = llama_cpp_model(tmp_path / "m.gguf", config.context)
    ids = torch.randint(0, 256, (40,), generator=torch.Generator().manual_seed(1)).tolist()
    theirs = llama_cpp_logits(llm, ids)
    with torch.no_grad():
        ours = model(torch.tensor([ids]))[0][0, :, :258]
    figures[f"{kind} (fresh weights, logits up to {ours.abs().max():.1f}): largest logit difference, f32"] = f"{(theirs - ours).abs().max():.2e}"
    if kind == "gpt2-no-bias":
        # llama.cpp's CPU GELU reads its result from a table indexed by the input rounded to f16
        # (ggml-cpu/vec.h, GGML_GELU_FP16): at these activations that alone moves logits by about 1e-3.
        gelu = torch.nn.functional.gelu
        monkeypatch.setattr(torch.nn.functional, "gelu", lambda x, approximate="none": gelu(x.half().float(), approximate=approximate).half().float())
        with torch.no_grad():
            ours = model(torch.tensor([ids]))[0][0, :, :258]
        figures[f"{kind}: the same with our GELU through f16 as llama.cpp's"] = f"{(theirs - ours).abs().max():.2e}"
    assert (theirs - ours).abs().max() < 1e-3


def test_llama_cpp_tokenizes_differently_where_the_export_refuses(tmp_path, llama_cpp_model):
    """The refusals are real: written anyway (--pre-tokenizer), these vocabularies tokenize a text differently in
    llama.cpp."""
    from train.gguf import export as export_gguf

    for merged, text in (((b"\n ",), "x\n "), (LONG_S_TOKENS, "'ſt")):
        encoding = byte_encoding(*merged)
        model, config = fresh_llama(vocab_size=encoding.n_vocab)
        export_gguf(model, config, encoding, tmp_path / "m.gguf", "f32", pre_tokenizer="llama-bpe", warn=lambda line: None)
        llm = llama_cpp_model(tmp_path / "m.gguf", config.context)
        ours = [encoding.decode_single_token_bytes(t) for t in encoding.encode_ordinary(text)]
        theirs = [llm.detokenize([t]) for t in llm.tokenize(text.encode(), add_bos=False)]
        assert b"".join(theirs) == text.encode() and theirs != ours, (ours, theirs)
