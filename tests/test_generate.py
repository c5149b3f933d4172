"""sample, eval and export: cached decoding, strategies, Hugging Face round trips, batch-size-free eval."""

import itertools
import json
import os

import pytest
import torch
from click.testing import CliRunner

from conftest import small_gpt2_run
from prepare import format as fmt
from prepare.sources import stdlib_files
from train import checkpoint
from train.cli import cli
from train.generate import beam_search, sample
from train.models.gpt2 import GPT
from train.models.gpt2_family import GPTConfig


def run_cli(*args, ok=True):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    if ok is not None:
        assert (result.exit_code == 0) == ok, result.output
    return result


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small model trained a few dozen steps on CPython sources: (run dir, data dir)."""
    return small_gpt2_run(tmp_path_factory.mktemp("gen"), stdlib_files()[200:230], "--dropout", 0.1)


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


def spiky_model(seed, vocab=4):
    """A one-layer model over a vocabulary of `vocab` tokens, with large random weights: varied distributions."""
    torch.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=vocab, context=16, n_layer=1, n_head=1, n_embd=8)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.7)
    return model


def normalised_score(model, prompt, new, length_penalty):
    with torch.no_grad():
        logits, _ = model(torch.tensor([prompt + new]))
    logprobs = torch.log_softmax(logits[0, len(prompt) - 1 : -1, : model.config.vocab_size].float(), -1)
    return logprobs.gather(1, torch.tensor(new)[:, None]).sum().item() / len(new) ** length_penalty


def all_continuations(vocab, max_new, eot):
    """Every continuation beam search can return: ended by eot, or cut at the budget."""
    words = [t for t in range(vocab) if t != eot]
    for length in range(1, max_new + 1):
        for body in itertools.product(words, repeat=length - 1):
            yield list(body) + [eot]
            if length == max_new:
                yield from (list(body) + [t] for t in words)


@pytest.mark.parametrize("length_penalty", [0.0, 1.0, 2.0, -0.5])
def test_beam_search_with_enough_beams_is_exhaustive(length_penalty):
    # 27 running beams cover every prefix of 3 non-eot tokens: beam search must find the best continuation.
    for seed in range(4):
        model = spiky_model(seed)
        best = max(all_continuations(4, 4, 3), key=lambda c: normalised_score(model, [0, 1], c, length_penalty))
        for cache in (True, False):
            found = beam_search(model, [0, 1], 4, num_beams=27, length_penalty=length_penalty, eot=3, use_cache=cache)
            assert abs(normalised_score(model, [0, 1], found, length_penalty)
                       - normalised_score(model, [0, 1], best, length_penalty)) < 1e-6, (seed, found, best)


def reference_beam_search(model, prompt, max_new, num_beams, length_penalty, eot):
    """Beam search without a cache and without stopping early: every step to the budget, all hypotheses kept."""
    beams, finished = [([], 0.0)], []
    for length in range(1, max_new + 1):
        candidates = []
        for tokens, score in beams:
            with torch.no_grad():
                logits, _ = model(torch.tensor([prompt + tokens]))
            logprobs = torch.log_softmax(logits[0, -1, : model.config.vocab_size].float(), -1)
            candidates += [(tokens + [t], score + logprobs[t].item()) for t in range(model.config.vocab_size)]
        candidates.sort(key=lambda c: c[1], reverse=True)
        candidates = candidates[: 2 * num_beams]
        finished += [(s / length**length_penalty, t) for t, s in candidates if t[-1] == eot]
        beams = [(t, s) for t, s in candidates if t[-1] != eot][:num_beams]
    finished += [(s / max_new**length_penalty, t) for t, s in beams]
    return max(finished, key=lambda f: f[0])[1]


def test_beam_search_stops_early_only_when_nothing_better_can_come():
    for seed in range(6):
        model = spiky_model(seed, vocab=6)
        for length_penalty in (0.0, 1.0, 2.0):
            for num_beams in (1, 2, 3):
                expected = reference_beam_search(model, [0], 8, num_beams, length_penalty, eot=5)
                for cache in (True, False):
                    found = beam_search(model, [0], 8, num_beams, length_penalty, eot=5, use_cache=cache)
                    assert abs(normalised_score(model, [0], found, length_penalty)
                               - normalised_score(model, [0], expected, length_penalty)) < 1e-5, (seed, length_penalty, num_beams)


def test_beam_search_with_and_without_cache_on_a_trained_model(model):
    for length_penalty in (0.0, 1.0):
        assert beam_search(model, PROMPT, 20, 4, length_penalty, eot=50256) == beam_search(
            model, PROMPT, 20, 4, length_penalty, eot=50256, use_cache=False)


def test_a_checkpoint_directory_alone_samples_evaluates_exports_and_resumes(trained, tmp_path):
    import shutil

    run, data = trained
    alone = tmp_path / "step"
    shutil.copytree(checkpoint.locate(run, "latest"), alone)  # nothing of the run but one checkpoint
    expected = run_cli("sample", "--run", run, "--checkpoint", "latest", "--prompt", "def", "--max-new-tokens", 8, "--seed", 1).stdout
    assert run_cli("sample", "--run", alone, "--prompt", "def", "--max-new-tokens", 8, "--seed", 1).stdout == expected
    score = lambda path: json.loads(run_cli("eval", "--run", path, "--data", data, "--checkpoint", "latest", "--windows", 8, "--json").stdout)["loss"]
    assert score(alone) == score(run)
    run_cli("export", alone, tmp_path / "hf")
    assert (tmp_path / "hf" / "model.safetensors").exists()
    # A run whose config.json is gone resumes from what its checkpoint holds.
    resumed = tmp_path / "run"
    shutil.copytree(run, resumed)
    os.remove(resumed / "config.json")
    run_cli("fit", "--data", data, "--out", resumed, "--resume", "--max-steps", 42)
    assert json.load(open(resumed / "config.json"))["steps"] == 42


def test_resume_does_not_reread_init_from(trained, tmp_path):
    import shutil

    run, data = trained
    run_cli("export", run, tmp_path / "hf", "--checkpoint", "latest")
    common = ["--no-compile", "--device", "cpu", "--no-samples", "--eval-every", 0, "--batch-size", 2]
    run_cli("fit", "--data", data, "--out", tmp_path / "cont", "--init-from", tmp_path / "hf", "--max-steps", 2, *common)
    shutil.rmtree(tmp_path / "hf")
    run_cli("fit", "--data", data, "--out", tmp_path / "cont", "--resume", "--max-steps", 3)
    assert checkpoint.load(checkpoint.locate(tmp_path / "cont"))[1]["step"] == 2


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
    manifest = fmt.read_manifest(data)
    assert losses[0]["tokens"] == losses[1]["tokens"] == manifest.tokens("val") - 1  # every token after the first
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
    run_cli("fit", "--data", data, "--out", tmp_path / "nobias", "--model", "tiny", "--n-layer", 1, "--n-head", 2, "--n-embd", 16,
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
    manifest.tokenizer = fmt.Tokenizer("cl100k_base", "f" * 64, 100277, 100257)
    fmt.publish(other, manifest)
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
