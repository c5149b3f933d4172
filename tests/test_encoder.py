"""The fast encoder gives tiktoken's ids, text for text: GPT-2's vocabulary, vocabularies trained with either
pattern (and cl100k/o200k where tiktoken has them cached), on the standard library, the shared corpora (or test
text without them), generated Unicode, runs of every whitespace character and special-token strings; and where
it is not proven, not installed, or differs on the canary set, tiktoken encodes."""

import glob
import hashlib
import json
import os
import sys

import numpy as np
import pytest
import tiktoken
from hypothesis import HealthCheck, given, settings, strategies as st

from conftest import prepare, sources, token_files, write
from prepare.sources import stdlib_files
from prepare.tokenizer import (CHOICES, ENDOFTEXT, TokenizerError, described, encode_to_numpy, encoder_for, fast,
                               load_encoding)
from prepare.tokenizer.canary import CONTRACTIONS, WHITESPACE
from prepare.tokenizer.encoder import Gigatoken, Tiktoken
from prepare.tokenizer.encodings import load_named
from prepare.tokenizer.fast import O200K_PATTERN
from prepare.tokenizer.whitespace import LONG_RUN

SHARED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data")
PROSE = [  # test text where ../shared/data is absent: several scripts, numbers, odd spacing
    "Grüße aus Köln — naïve café, ½ price; 東京は雨です。Привет, мир! مرحبا بالعالم. हिन्दी ελληνικά 한국어 ",
    "Once upon a time, there was a little dog named Max. Max liked to run.\n\n\"Can I play?\" she asked.\r\n",
    "Emoji 😀🎉👩‍👩‍👧 and flags 🇫🇷, maths ∑∫√ and arrows →⇒, numbers 1234567 3.14159 0x1F 1e-9 000123 ٣٤٥",
    "  leading spaces\r\n\r\nwindows line ends\r\n   trailing   \t\t\n\u00a0\u00a0no-break\u3000ideographic ",
]
CACHED = {"cl100k_base": "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
          "o200k_base": "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken"}


def in_tiktoken_cache(name):
    """Whether tiktoken can load a named encoding without the network (its cache holds the file)."""
    folder = os.environ.get("TIKTOKEN_CACHE_DIR") or os.environ.get("DATA_GYM_CACHE_DIR") or \
        os.path.join(__import__("tempfile").gettempdir(), "data-gym-cache")
    return os.path.exists(os.path.join(folder, hashlib.sha1(CACHED[name].encode()).hexdigest()))


@pytest.fixture(scope="module")
def encodings(tmp_path_factory):
    """name -> (tiktoken Encoding, its encoder): GPT-2's, one trained with each pattern, o200k's pattern on a
    prefix of GPT-2's ranks (gigatoken's o200k split, proven without o200k's file), and the cached named ones."""
    root = tmp_path_factory.mktemp("encoder")
    for i, f in enumerate(stdlib_files()[::150]):
        write(root / "corpus" / f"{i:03d}.py", open(f, "rb").read(), mode="wb")
    write(root / "corpus" / "prose.txt", "\n\n".join(PROSE) * 20)
    found = {"gpt2": load_encoding("gpt2")}
    for pattern in ("gpt2", "gpt4"):
        out = root / f"trained-{pattern}"
        prepare("tokenizer", root / "corpus", "--vocab-size", 768, "--pattern", pattern, "--max-chars", 150_000,
                "--out", out)
        found[f"trained-{pattern}"] = load_encoding(str(out))
    gpt2 = found["gpt2"]
    prefix = {token: rank for token, rank in gpt2._mergeable_ranks.items() if rank < 4096}
    found["o200k pattern"] = tiktoken.Encoding(name="o200k-pattern", pat_str=O200K_PATTERN, mergeable_ranks=prefix,
                                               special_tokens={})
    for name in CACHED:
        if in_tiktoken_cache(name):
            found[name] = load_named(name)
    result = {name: (encoding, encoder_for(encoding)) for name, encoding in found.items()}
    assert all(isinstance(chosen, Gigatoken) for _, chosen in result.values()), "gigatoken is a dependency"
    return result


def same_ids(encodings, texts):
    """Assert that every text gets tiktoken's ids from each encoding's encoder; returns the ids counted."""
    counted = 0
    for name, (encoding, chosen) in encodings.items():
        for text in texts:
            expected = encode_to_numpy(encoding, text)
            actual = chosen.encode(text)
            assert actual.dtype == np.uint32 and np.array_equal(actual, expected), (name, text[:200])
            counted += len(expected)
    return counted


def test_the_standard_library_gets_tiktokens_ids(encodings):
    texts = [open(f, encoding="utf-8", errors="replace").read() for f in stdlib_files()[7::90]]
    assert same_ids(encodings, texts) > 100_000


def test_the_shared_corpora_or_test_text_get_tiktokens_ids(encodings):
    texts = []
    for path in sorted(glob.glob(os.path.join(SHARED, "*.txt")) + glob.glob(os.path.join(SHARED, "*", "*.txt"))):
        with open(path, encoding="utf-8", errors="replace") as f:
            texts += f.read(40_000).split("\n\n")
    for path in sorted(glob.glob(os.path.join(SHARED, "parquet", "*", "*.parquet")))[:1]:
        import pyarrow.parquet as pq

        texts += [t for t in pq.read_table(path).column("text").to_pylist()[:300] if t]
    same_ids(encodings, texts or PROSE)


def test_runs_of_every_whitespace_character_get_tiktokens_ids(encodings):
    texts = [f"a{c}b{c * 2}c{c * 3}!{c * 17}\n{c}x{c * 70}" for c in WHITESPACE]
    texts += ["x" + " " * (LONG_RUN + 1), "." + "\u3000" * (LONG_RUN + 2) + "y"]  # the canary set has more
    same_ids(encodings, texts)


def test_special_token_strings_are_plain_text(encodings):
    specials = {s for encoding, _ in encodings.values() for s in encoding._special_tokens}
    specials |= {ENDOFTEXT, "<|fim_middle|>"}
    texts = list(specials) + [f"a{s}b {s}\n{s}{s}" for s in specials]
    same_ids(encodings, texts)
    encoding, chosen = encodings["gpt2"]
    assert encoding.eot_token not in chosen.encode(ENDOFTEXT)


def test_empty_and_one_character_documents(encodings):
    characters = [chr(c) for c in [*range(0, 0x10000, 7), *range(0x10000, 0x110000, 997)] if not 0xD800 <= c < 0xE000]
    for name, (encoding, chosen) in encodings.items():
        assert len(chosen.encode("")) == 0
        expected = [encode_to_numpy(encoding, c).tolist() for c in characters]
        assert [chosen.encode(c).tolist() for c in characters] == expected, name


FRAGMENTS = st.one_of(
    st.text(st.characters(exclude_categories=("Cs",)), max_size=12),
    st.sampled_from(CONTRACTIONS + [ENDOFTEXT, "<|fim_middle|>", "\r\n", "'", "'s'", "1234", "٣٤٥"]),
    st.builds(lambda c, n: c * n, st.sampled_from(WHITESPACE), st.integers(1, 40)),
    st.text(st.sampled_from("aZé中\u0301١²!?.' \t\n\r\u00a0"), max_size=30),
)


@settings(max_examples=100, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(FRAGMENTS, max_size=12).map("".join))
def test_generated_text_gets_tiktokens_ids(encodings, text):
    same_ids(encodings, [text])


def test_a_lone_surrogate_gets_tiktokens_error(encodings):
    encoding, chosen = encodings["gpt2"]
    with pytest.raises(TokenizerError, match="surrogates not allowed"):
        encode_to_numpy(encoding, "a\ud800b")
    with pytest.raises(TokenizerError, match="surrogates not allowed"):
        chosen.encode("a\ud800b")


def fresh_gpt2():
    """GPT-2's encoding as a new object: the encoders chosen for it are not cached yet."""
    gpt2 = load_encoding("gpt2")
    return tiktoken.Encoding(name="gpt2", pat_str=gpt2._pat_str, mergeable_ranks=gpt2._mergeable_ranks,
                             special_tokens=gpt2._special_tokens)


def test_tiktoken_is_the_reference_when_asked_for():
    chosen = encoder_for(load_encoding("gpt2"), "tiktoken")
    assert isinstance(chosen, Tiktoken) and chosen.why is None and described(chosen).startswith("tiktoken ")


def test_a_canary_that_differs_refuses_the_fast_encoder(monkeypatch):
    # GPT-4's split on GPT-2's ranks: the kind of mistake the canary is there to catch.
    monkeypatch.setitem(fast.PRETOKENIZERS, load_encoding("gpt2")._pat_str, "gpt4")
    chosen = encoder_for(fresh_gpt2())
    assert isinstance(chosen, Tiktoken)
    assert "gave other ids than tiktoken on the canary text" in described(chosen), described(chosen)


def test_a_pattern_without_a_fast_encoder_or_ranks_with_gaps_fall_back_to_tiktoken():
    gpt2 = load_encoding("gpt2")
    other = tiktoken.Encoding(name="digits-apart", pat_str=r"\d|\D+", mergeable_ranks=gpt2._mergeable_ranks,
                              special_tokens={})
    assert "no faster encoder is known to split as its pattern does" in encoder_for(other).why
    gaps = tiktoken.Encoding(name="gaps", pat_str=gpt2._pat_str, special_tokens={},
                             mergeable_ranks={**{bytes([b]): b for b in range(256)}, b"th": 300})
    assert "its ranks are not 0 to n-1" in encoder_for(gaps).why


def test_without_gigatoken_tiktoken_encodes_saying_so(monkeypatch):
    monkeypatch.setitem(sys.modules, "gigatoken", None)
    assert "gigatoken, many times faster, is not installed" in encoder_for(fresh_gpt2()).why


def test_the_fast_encoders_cache_is_dropped_past_its_memory_bound_and_the_ids_stay(monkeypatch):
    encoding = fresh_gpt2()
    chosen, loads = encoder_for(encoding), []
    monkeypatch.setattr(chosen, "load", lambda load=chosen.load: loads.append(1) or load())
    monkeypatch.setattr(fast, "CHECK_CHARS", 1)
    monkeypatch.setattr(fast, "CACHE_BYTES", -(1 << 40))  # past the bound at every look but the first
    for i in range(12):
        text = f"{i:x} pieces {i * 7919:x} seen once " * 40
        assert np.array_equal(chosen.encode(text), encode_to_numpy(encoding, text))
    assert len(loads) == 11


def test_either_encoder_writes_the_same_dataset_and_a_switch_needs_no_rebuild(stdlib_sources, vocabulary, tmp_path):
    """The build's own path (threads sharing gigatoken, processes with tiktoken), with GPT-2's vocabulary and a
    trained one: the same token files and records, but for the encoder each record names."""
    for spec in ("gpt2", vocabulary):
        built = {}
        for choice in CHOICES:
            out = tmp_path / f"{os.path.basename(str(spec))}-{choice}"
            result = prepare("build", stdlib_sources, "--out", out, "--encoding", spec, "--encoder", choice,
                             "--workers", 2, "--shard-tokens", 30_000)
            chosen = "tiktoken " if choice == "tiktoken" else "gigatoken "
            assert f"tokens/s, {chosen}" in result.stdout, result.stdout
            records = sources(out)
            assert {r["encoder"].split()[0] for r in records} == {chosen.strip()}
            files = {name: i for i, name in enumerate(token_files(out))}  # their names hold the build's run id
            records = [{**r, "encoder": None, "ranges": [[sp, files[f], a, b] for sp, f, a, b in r["ranges"]]}
                       for r in records]
            built[choice] = (list(token_files(out).values()), records)
        assert built["auto"] == built["tiktoken"], spec
    out = tmp_path / "gpt2-auto"
    write(tmp_path / "more" / "new.py", "def added():\n    return 'by the reference'\n")
    result = prepare("build", stdlib_sources, tmp_path / "more", "--out", out, "--encoder", "tiktoken")
    assert "tokenized 1 inputs" in result.stdout  # a change of encoder is no change of the dataset's options
    encoders = json.loads(prepare("info", out, "--json").stdout)["encoders"]
    gpt2 = load_encoding("gpt2")
    assert sorted(encoders) == [encoder_for(gpt2).name, encoder_for(gpt2, "tiktoken").name]
    assert sum(e["inputs"] for e in encoders.values()) == 41
