"""A tokenizer trained on one's own corpus: deterministic, used by builds like any encoding, carried by the
dataset, runs, checkpoints and exports; and bits per byte, the unit that compares runs across tokenizers."""

import json
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from conftest import REPO, documents, prepare, write
from prepare import format as fmt
from prepare.sources import stdlib_files
from prepare.tokenizer import load_encoding
from train import checkpoint
from train.cli import cli as train_cli

HELD_OUT = [
    "def parse(line: str) -> dict[str, int]:\n    return {k: int(v) for k, v in (p.split('=') for p in line.split(';'))}\n",
    "\tif x  >=  10:\n\t\treturn None   \n\n\n",
    "Emoji 😀🎉👩‍👩‍👧 and flags 🇫🇷, maths ∑∫√ and arrows →⇒",
    "Grüße aus Köln — naïve café, ½ price; 東京は雨です。Привет, мир! مرحبا بالعالم. हिन्दी ελληνικά 한국어",
    "Numbers 1234567 3.14159 0x1F 1e-9 and 000123",
    "invalid-looking bytes replaced: \ufffd\ufffd and a lone \ufffd, BOM \ufeff, NUL-free control \x07\x1b[0m",
    "contractions: don't, I'LL, we've, they're, 's 'd",
    "  leading spaces\r\n\r\nwindows line ends\r\n   trailing   ",
    "<|endoftext|> is plain text here",
]


def train_cli_run(*args, ok=True):
    result = CliRunner().invoke(train_cli, [str(a) for a in args], catch_exceptions=False)
    if ok is not None:
        assert (result.exit_code == 0) == ok, result.output
    return result


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("tok")
    for i, f in enumerate(stdlib_files()[300:360]):
        write(root / "src" / f"{i:03d}.py", open(f, "rb").read(), mode="wb")
    write(root / "src" / "zz-notes.md", "\n\n".join(HELD_OUT[2:4]) * 3)
    return root


@pytest.fixture(scope="module")
def trained_tokenizer(corpus):
    out = corpus / "tokenizers" / "src-600"
    prepare("tokenizer", corpus / "src", "--vocab-size", 600, "--out", out)
    return out


def test_training_is_deterministic_across_processes_and_encodes_losslessly(corpus, trained_tokenizer):
    again = corpus / "again"
    env = {**os.environ, "PYTHONPATH": REPO, "PYTHONHASHSEED": "123"}
    subprocess.run([sys.executable, "-m", "prepare", "tokenizer", str(corpus / "src"), "--vocab-size", "600", "--out", str(again)],
                   check=True, env=env, cwd=REPO, capture_output=True)
    for name in ("ranks.tiktoken", "encoding.json"):
        theirs, ours = open(again / name, "rb").read(), open(trained_tokenizer / name, "rb").read()
        assert theirs.replace(b'"again"', b'"src-600"') == ours, name
    encoding = load_encoding(str(trained_tokenizer))
    assert encoding.n_vocab == 600 and encoding.eot_token == 599 and encoding.name == "src-600"
    ranks = sorted(encoding._mergeable_ranks.values())
    assert ranks == list(range(599)), "bytes then merges, no gap"
    for text in HELD_OUT:
        assert encoding.decode(encoding.encode_ordinary(text)) == text
    # Trained on Python, it compresses Python better than GPT-2's 50,257 ids do with 600.
    held_out_code = open(stdlib_files()[400], encoding="utf-8").read()
    assert len(encoding.encode_ordinary(held_out_code)) < 1.5 * len(load_encoding("gpt2").encode_ordinary(held_out_code))


def test_max_chars_takes_a_share_of_every_input(corpus, tmp_path):
    from prepare.tokenizer.training import sample_documents

    class Bar:
        def update(self, n):
            pass

    opts = {"split": "train", "max_tokens": None, "doc_sep": None, "text_field": "text", "strict": False, "skip_bad_records": False}
    files = sorted(os.listdir(corpus / "src"))
    texts = list(sample_documents([str(corpus / "src")], opts, 20_000, Bar()))
    assert len(texts) == len(files), "every input gives its first part"
    assert 19_000 <= sum(map(len, texts)) <= 21_000
    for text, name in zip(texts, files):
        whole = open(corpus / "src" / name, encoding="utf-8", errors="replace").read()
        share = 20_000 * os.path.getsize(corpus / "src" / name) / sum(os.path.getsize(corpus / "src" / f) for f in files)
        assert whole.startswith(text) and abs(len(text) - share) <= 0.05 * share + 2


def test_a_dataset_run_and_checkpoint_carry_the_trained_tokenizer(corpus, trained_tokenizer, tmp_path):
    tokenizer = tmp_path / "mine"
    shutil.copytree(trained_tokenizer, tokenizer)
    data = tmp_path / "data"
    prepare("build", corpus / "src", "--out", data, "--encoding", tokenizer, "--val-fraction", 0.2)
    manifest = fmt.read_manifest(data)
    assert (manifest.tokenizer.name, manifest.tokenizer.vocab_size, manifest.tokenizer.trained, manifest.dtype) == ("src-600", 600, True, "uint16")  # the name it was trained under
    assert open(data / fmt.TOKENIZER / "ranks.tiktoken", "rb").read() == open(tokenizer / "ranks.tiktoken", "rb").read()
    texts = [open(corpus / "src" / n, encoding="utf-8", errors="replace").read() for n in sorted(os.listdir(corpus / "src"))]
    assert documents(data) == sorted(t for t in texts if t.strip())
    # An incremental rerun keeps it; a different tokenizer under the same name is refused.
    assert "up to date" in prepare("build", corpus / "src", "--out", data, "--encoding", tokenizer, "--val-fraction", 0.2).output
    prepare("tokenizer", corpus / "src", "--vocab-size", 500, "--out", tokenizer)
    refused = prepare("build", corpus / "src", "--out", data, "--encoding", tokenizer, "--val-fraction", 0.2, ok=False)
    assert "tokenizer: its ranks or special tokens differ" in refused.output and "--rebuild" in refused.output
    shutil.rmtree(tokenizer)  # from here on, the dataset's copy is all there is

    run = tmp_path / "run"
    common = ["--model", "tiny-llama", "--n-layer", 1, "--n-head", 2, "--n-embd", 32, "--context", 32, "--batch-size", 4,
              "--no-compile", "--device", "cpu", "--dtype", "fp32", "--no-samples", "--eval-windows", 4]
    train_cli_run("fit", "--data", data, "--out", run, "--max-steps", 6, "--eval-every", 3, *common)
    line = json.loads(open(run / "metrics.jsonl").readlines()[-1])
    assert {"val_bpb", "train_eval_bpb"} <= set(line) and 0 < line["val_bpb"] < 10
    alone = tmp_path / "step"
    shutil.copytree(checkpoint.locate(run, "latest"), alone)
    shutil.rmtree(data / fmt.TOKENIZER)  # nor the dataset's: the checkpoint samples and exports by itself
    out = train_cli_run("sample", "--run", alone, "--prompt", "def f(", "--max-new-tokens", 5).stdout
    assert out.startswith("def f(")
    train_cli_run("export", alone, tmp_path / "hf")
    assert (tmp_path / "hf" / "tokenizer.json").exists()
    # The dataset without its tokenizer directory is refused by name, not guessed.
    refused = train_cli_run("fit", "--data", data, "--out", tmp_path / "run2", "--max-steps", 2, *common, ok=False)
    assert str(data / fmt.TOKENIZER) in refused.output and "Traceback" not in refused.output


def test_cluster_tasks_with_a_trained_tokenizer_equal_one_build(corpus, trained_tokenizer, tmp_path):
    prepare("build", corpus / "src", "--out", tmp_path / "one", "--encoding", trained_tokenizer)
    for task in (0, 1):
        prepare("build", corpus / "src", "--out", tmp_path / "two", "--encoding", trained_tokenizer, "--tasks", 2, "--task", task)
    prepare("commit", tmp_path / "two")
    assert documents(tmp_path / "two") == documents(tmp_path / "one")
    assert fmt.read_manifest(tmp_path / "two").tokenizer == fmt.read_manifest(tmp_path / "one").tokenizer


def test_a_mixture_of_tokenizers_is_refused_naming_both(corpus, trained_tokenizer, tmp_path):
    prepare("build", corpus / "src", "--out", tmp_path / "mine", "--encoding", trained_tokenizer)
    prepare("build", corpus / "src", "--out", tmp_path / "gpt2")
    result = train_cli_run("fit", "--data", tmp_path / "gpt2", "--data", tmp_path / "mine", "--out", tmp_path / "run",
                           "--max-steps", 1, "--model", "tiny", "--device", "cpu", ok=False)
    assert "src-600" in result.output and "gpt2" in result.output and not (tmp_path / "run").exists()


def test_compare_reports_bytes_per_token_against_gpt2(corpus, trained_tokenizer, tmp_path):
    prepare("build", corpus / "src", "--out", tmp_path / "data", "--encoding", trained_tokenizer, "--val-fraction", 0.3)
    out = prepare("compare", tmp_path / "data", "--encoding", "gpt2").output
    rows = {line.split()[0]: line for line in out.splitlines() if "bytes per token" in line}
    assert set(rows) == {"src-600", "gpt2"}
    bytes_per_token = {name: float(line.split(" bytes per token")[0].split()[-1]) for name, line in rows.items()}
    docs = documents(tmp_path / "data", "val")
    size = sum(len(d.encode()) for d in docs)
    gpt2_tokens = sum(len(t) for t in load_encoding("gpt2").encode_ordinary_batch(docs))
    assert abs(bytes_per_token["gpt2"] - size / gpt2_tokens) < 1e-3


def test_export_tokenizes_as_tiktoken_and_continues_greedily_as_we_do(corpus, trained_tokenizer, tmp_path):
    transformers = pytest.importorskip("transformers")
    from train.generate import sample

    data = tmp_path / "data"
    prepare("build", corpus / "src", "--out", data, "--encoding", trained_tokenizer, "--val-fraction", 0.2)
    run = tmp_path / "run"
    train_cli_run("fit", "--data", data, "--out", run, "--model", "tiny-llama", "--n-layer", 2, "--n-head", 2, "--n-embd", 32,
                  "--context", 32, "--batch-size", 4, "--max-steps", 20, "--lr", 3e-3, "--no-compile", "--device", "cpu",
                  "--dtype", "fp32", "--no-samples", "--eval-every", 0)
    train_cli_run("export", run, tmp_path / "hf", "--checkpoint", "latest")
    tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf", local_files_only=True)
    encoding = load_encoding(str(trained_tokenizer))
    held_out = HELD_OUT + [open(f, encoding="utf-8").read() for f in stdlib_files()[500:503]]
    for text in held_out:
        ids = tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]
        assert ids == encoding.encode_ordinary(text), text[:40]
        assert tokenizer.decode(ids) == text
    assert tokenizer.eos_token_id == encoding.eot_token
    model, _ = checkpoint.load_model(run, "latest", torch.device("cpu"))
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf", local_files_only=True).eval()
    prompt = [encoding.eot_token] + encoding.encode_ordinary("def main(self):")
    greedy = list(sample(model, prompt, 12, temperature=0))
    generated = hf.generate(torch.tensor([prompt]), max_new_tokens=12, do_sample=False, pad_token_id=encoding.eot_token, eos_token_id=None)
    assert generated[0, len(prompt):].tolist() == greedy


def test_bits_per_byte_equal_a_direct_computation(corpus, trained_tokenizer, tmp_path):
    data = tmp_path / "data"
    prepare("build", corpus / "src", "--out", data, "--encoding", trained_tokenizer, "--val-fraction", 0.2)
    run = tmp_path / "run"
    train_cli_run("fit", "--data", data, "--out", run, "--model", "tiny", "--n-layer", 1, "--n-head", 2, "--n-embd", 32,
                  "--context", 32, "--batch-size", 4, "--max-steps", 5, "--no-compile", "--device", "cpu", "--dtype", "fp32",
                  "--no-samples", "--eval-every", 0)
    result = json.loads(train_cli_run("eval", "--run", run, "--data", data, "--checkpoint", "latest", "--json").stdout)
    # Directly: every val token after the first predicted once, in windows of the context.
    manifest = fmt.read_manifest(data)
    stream = np.concatenate([np.fromfile(fmt.token_path(data, e.file), manifest.dtype)[e.start : e.end] for e in manifest.extents["val"]])
    stream = torch.from_numpy(stream.astype(np.int64))
    model, _ = checkpoint.load_model(run, "latest", torch.device("cpu"))
    encoding = load_encoding(str(trained_tokenizer))
    inputs, targets = stream[:-1], stream[1:]
    whole = len(inputs) // 32 * 32  # the windows of the context, then the rest as one shorter window
    windows = [(inputs[:whole].view(-1, 32), targets[:whole].view(-1, 32)), (inputs[whole:][None], targets[whole:][None])]
    losses = []
    with torch.no_grad():
        for x, y in windows:
            model_logits, _ = model(x)  # over the padded vocabulary, as trained
            losses.append(F.cross_entropy(model_logits.flatten(0, 1).double(), y.flatten(), reduction="none"))
    losses = torch.cat(losses)
    text = targets != encoding.eot_token
    token_size = torch.tensor([len(encoding.decode_single_token_bytes(t)) for t in range(encoding.n_vocab)])
    nats, text_nats, size = losses.sum().item(), losses[text].sum().item(), token_size[targets[text]].sum().item()
    decoded = b"".join(encoding.decode_single_token_bytes(t) for t in stream[1:].tolist() if t != encoding.eot_token)
    assert result["bytes"] == size == len(decoded)
    assert result["tokens"] == len(stream) - 1
    assert abs(result["loss"] - nats / (len(stream) - 1)) < 1e-4
    assert abs(result["bpb"] - text_nats / math.log(2) / size) < 1e-4
