"""sample, eval and export: cached decoding, strategies, Hugging Face round trips, batch-size-free eval."""

import json

import pytest
import torch
from click.testing import CliRunner

from conftest import prepare, write
from prepare import format as fmt
from prepare.sources import stdlib_files
from train import checkpoint
from train.cli import cli
from train.generate import beam_search, sample
from train.model import GPT


def run_cli(*args, ok=True):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    if ok is not None:
        assert (result.exit_code == 0) == ok, result.output
    return result


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small model trained a few dozen steps on CPython sources: (run dir, data dir)."""
    root = tmp_path_factory.mktemp("gen")
    for i, f in enumerate(stdlib_files()[200:230]):
        write(root / "src" / f"{i:03d}.py", open(f, "rb").read(), mode="wb")
    prepare("build", root / "src", "--out", root / "data", "--val-fraction", 0.2)
    run_cli("fit", "--data", root / "data", "--out", root / "run", "--n-layer", 2, "--n-head", 2, "--n-embd", 48,
            "--context", 48, "--batch-size", 8, "--max-steps", 40, "--lr", 3e-3, "--no-compile", "--device", "cpu",
            "--dtype", "fp32", "--no-samples", "--eval-every", 0, "--dropout", 0.1)
    return root / "run", root / "data"


@pytest.fixture(scope="module")
def model(trained):
    return checkpoint.load_model(trained[0], "latest", torch.device("cpu"))[0]


PROMPT = [50256, 4299, 1388, 7, 944, 2599]  # <|endoftext|>def main(self):


def test_greedy_with_cache_equals_without(model):
    # 60 new tokens run past the context of 48, into the sliding window.
    cached = list(sample(model, PROMPT, 60, temperature=0, use_cache=True))
    uncached = list(sample(model, PROMPT, 60, temperature=0, use_cache=False))
    assert cached == uncached and len(cached) == 60


def test_cached_logits_match_full_forward(model):
    from train.generate import Decoder

    tokens = torch.tensor([PROMPT + [11, 12, 13]])
    decoder = Decoder(model, use_cache=True)
    decoder.logits(tokens[:, :6], 6)
    for length in (7, 8, 9):
        cached = decoder.logits(tokens[:, :length], 1)
        full, _ = model(tokens[:, :length])
        assert torch.allclose(cached, full[:, -1, :].float().masked_fill(torch.arange(full.size(-1)) >= 50257, float("-inf")), atol=1e-5)


def test_same_seed_same_samples_and_special_cases(model):
    def draw(seed, **kw):
        return list(sample(model, PROMPT, 30, generator=torch.Generator().manual_seed(seed), **kw))

    assert draw(1, temperature=1.0) == draw(1, temperature=1.0)
    assert draw(1, temperature=1.0) != draw(2, temperature=1.0)
    greedy = list(sample(model, PROMPT, 30, temperature=0))
    assert draw(3, temperature=1.0, top_k=1) == greedy
    assert draw(4, temperature=0.7, top_p=1e-6) == greedy  # the nucleus holds only the top token
    stopping = beam_search(model, PROMPT, 30, num_beams=1, eot=50256)
    assert stopping == greedy[: len(stopping)]
    assert beam_search(model, PROMPT, 30, num_beams=1) == greedy


def test_sampled_ids_stay_in_the_vocabulary(model):
    tokens = list(sample(model, PROMPT, 200, temperature=2.0, generator=torch.Generator().manual_seed(0)))
    assert max(tokens) < 50257


def test_beam_search_scores_at_least_greedy(model):
    def logprob(new):
        seq = torch.tensor([PROMPT + new])
        logits, _ = model(seq)
        lp = torch.log_softmax(logits[0, len(PROMPT) - 1 : -1].float(), -1)
        return lp.gather(1, torch.tensor(new)[:, None]).sum().item()

    greedy = list(sample(model, PROMPT, 12, temperature=0))
    beams = beam_search(model, PROMPT, 12, num_beams=4, length_penalty=0.0)
    assert len(beams) == 12 or beams[-1] == 50256
    if len(beams) == 12:
        assert logprob(beams) >= logprob(greedy) - 1e-5


def test_sample_cli_streams_text(trained):
    run, _ = trained
    out = run_cli("sample", "--run", run, "--prompt", "import os", "--max-new-tokens", 10, "--seed", 5).stdout
    assert out.startswith("import os")
    again = run_cli("sample", "--run", run, "--prompt", "import os", "--max-new-tokens", 10, "--seed", 5).stdout
    assert out == again


def test_long_prompt_is_cropped_with_warning(trained):
    run, _ = trained
    result = run_cli("sample", "--run", run, "--prompt", "word " * 100, "--max-new-tokens", 3)
    assert "cropped to the last 48" in result.stderr


def test_eval_does_not_depend_on_batch_size(trained):
    run, data = trained
    losses = [json.loads(run_cli("eval", "--run", run, "--data", data, "--batch-size", b, "--json").stdout) for b in (1, 7)]
    assert losses[0]["tokens"] == losses[1]["tokens"] == fmt.read_manifest(data)["splits"]["val"]["tokens"] - len(
        fmt.read_manifest(data)["splits"]["val"]["shards"]
    )
    assert abs(losses[0]["loss"] - losses[1]["loss"]) < 1e-5
    windows = [json.loads(run_cli("eval", "--run", run, "--data", data, "--windows", 20, "--batch-size", b, "--json").stdout)["loss"] for b in (3, 20)]
    assert abs(windows[0] - windows[1]) < 1e-5


def test_export_loads_in_transformers_with_equal_logits(trained, model, tmp_path):
    transformers = pytest.importorskip("transformers")
    run, _ = trained
    run_cli("export", run, tmp_path / "hf", "--checkpoint", "latest")
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf", local_files_only=True).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf", local_files_only=True)
    text = "def main(self):\n    return 'héllo wörld'"
    from prepare.tokenizer import load_encoding

    assert tokenizer(text)["input_ids"] == load_encoding("gpt2").encode_ordinary(text)
    ids = torch.tensor([PROMPT])
    with torch.no_grad():
        ours, _ = model(ids)
        theirs = hf(ids).logits
    assert torch.allclose(ours[..., :50257], theirs, atol=1e-4)
    greedy = list(sample(model, PROMPT, 20, temperature=0))
    generated = hf.generate(ids, max_new_tokens=20, do_sample=False, pad_token_id=50256, eos_token_id=None)
    assert generated[0, len(PROMPT) :].tolist() == greedy


def test_export_then_init_from_gives_identical_weights(trained, model, tmp_path):
    run, data = trained
    run_cli("export", run, tmp_path / "hf", "--checkpoint", "latest")
    run_cli("fit", "--data", data, "--out", tmp_path / "cont", "--init-from", tmp_path / "hf", "--max-steps", 1,
            "--lr", 1e-12, "--min-lr", 0, "--weight-decay", 0, "--no-compile", "--device", "cpu", "--dtype", "fp32",
            "--no-samples", "--eval-every", 0, "--batch-size", 2)
    continued = json.load(open(tmp_path / "cont" / "config.json"))
    assert (continued["n_layer"], continued["n_embd"], continued["context"]) == (2, 48, 48)

    from train.hf import load_hf_weights

    fresh = GPT(model.config)
    load_hf_weights(fresh, tmp_path / "hf")
    theirs, ours = fresh.state_dict(), model.state_dict()
    for name in ours:
        if name in ("transformer.wte.weight", "lm_head.weight"):
            assert torch.equal(theirs[name][:50257], ours[name][:50257])
        else:
            assert torch.equal(theirs[name], ours[name]), name


def test_export_refuses_what_gpt2_cannot_express(trained, tmp_path):
    run, data = trained
    run_cli("fit", "--data", data, "--out", tmp_path / "nobias", "--n-layer", 1, "--n-head", 2, "--n-embd", 16,
            "--context", 16, "--batch-size", 2, "--max-steps", 1, "--no-bias", "--no-compile", "--device", "cpu",
            "--no-samples", "--eval-every", 0)
    result = run_cli("export", tmp_path / "nobias", tmp_path / "hf", ok=False)
    assert "--no-bias" in result.stderr


def test_bad_input(trained, tmp_path):
    run, data = trained
    result = run_cli("sample", "--run", tmp_path / "nope", "--prompt", "x", ok=False)
    assert "no such run directory" in result.stderr
    result = run_cli("sample", "--run", run, "--prompt", "  ", ok=False)
    assert "empty prompt" in result.stderr
    # A dataset made with another tokenizer.
    other = tmp_path / "other"
    import shutil

    shutil.copytree(data, other)
    manifest = fmt.read_manifest(other)
    manifest["tokenizer"].update(name="cl100k_base", ranks_sha256="f" * 64)
    fmt.write_manifest(other, manifest)
    result = run_cli("eval", "--run", run, "--data", other, ok=False)
    assert "cl100k_base" in result.stderr and "gpt2" in result.stderr
    # A checkpoint whose weights are of another vocabulary than its run says.
    shutil.copytree(run, tmp_path / "run2")
    stored = checkpoint.locate(tmp_path / "run2", "best") + "/config.json"
    cfg = json.load(open(stored))
    cfg["tokenizer"]["vocab_size"] = 100277
    json.dump(cfg, open(stored, "w"))
    result = run_cli("sample", "--run", tmp_path / "run2", "--prompt", "x", ok=False)
    assert "does not fit this model" in result.stderr and "wte" in result.stderr
