"""Texts tiktoken cannot take whole: long runs of whitespace (its regex engine overflows) and documents larger
than memory should hold. Each is cut where the tokens provably stay the same; these tests check the cut
against texts tiktoken does encode whole."""

import random

import pytest
import tiktoken

from conftest import documents, prepare, write
from prepare import format as fmt, reading
from prepare.readers import text as text_reader
from prepare.tokenizer import ENDOFTEXT, GPT4_PATTERN, encode_to_numpy, load_encoding, whitespace
from prepare.tokenizer.patterns import GPT2_PATTERN


def with_whitespace_tokens(pattern):
    """GPT-2's ranks plus merges of spaces, tabs and line ends (GPT-2 has few), split by `pattern`: a cut in the
    wrong place inside a run would change the merges."""
    gpt2 = load_encoding("gpt2")
    ranks = dict(gpt2._mergeable_ranks)
    for token in ["  ", "   ", "    ", "        ", "\t\t", "\t\t\t\t", " \n", "\n ", "\n\n\n", "\n\n\n\n", "\r\n", "\r\n\r\n",
                  "\u3000", " \t", "\n\t"]:
        data = token.encode()
        if data not in ranks:
            ranks[data] = len(ranks)
    return tiktoken.Encoding(name="ws", pat_str=pattern, mergeable_ranks=ranks, special_tokens={ENDOFTEXT: len(ranks)})


ENCODINGS = {"gpt2": lambda: load_encoding("gpt2"), "gpt2-pattern": lambda: with_whitespace_tokens(GPT2_PATTERN),
             "gpt4-pattern": lambda: with_whitespace_tokens(GPT4_PATTERN)}
RUNS = [" ", "\t", "\n", "\r\n", " \n", "\n ", " \t\n", "\u3000", "\n\n ", "\u00a0 ", " \r", "\t \n \n  "]
BEFORE = ["", "word", "x.", "12", "(", "é", "word.", "a'", "x.\n\n", " ", "."]
AFTER = ["", "x", "word", "7", ".", "(x", " y", "é", "'s", "\n"]


@pytest.mark.parametrize("name", ENCODINGS)
def test_a_long_whitespace_run_is_tokenized_as_tiktoken_does_whole(name, monkeypatch):
    """With runs cut from 8 characters on, texts with runs of 8 to 60 (which tiktoken encodes whole) give the
    same ids as tiktoken: every kind of run, before and after letters, digits, punctuation, nothing."""
    encoding = ENCODINGS[name]()
    monkeypatch.setattr(whitespace, "LONG_RUN", 8)
    texts = [before + run * n + after for before in BEFORE for run in RUNS for after in AFTER for n in (8, 9, 23)]
    rng = random.Random(0)  # and mixtures: random text with long runs of random whitespace in it
    alphabet = list("ab é7.(' ") + ["\n", "\t", "\r", "\u3000"]
    for _ in range(300):
        texts.append("".join(rng.choice(alphabet) if rng.random() < 0.8 else "".join(rng.choices(" \t\n\r\u3000", k=rng.randint(8, 40)))
                             for _ in range(rng.randint(1, 30))))
    cut = 0
    for text in texts:
        cut += bool(whitespace.whitespace_cuts(encoding._pat_str, text))
        assert encode_to_numpy(encoding, text).tolist() == encoding.encode_ordinary(text), repr(text)
    assert cut > len(texts) // 2, "most texts are cut"


@pytest.mark.parametrize("pattern", ["gpt2", "gpt4"])
def test_a_run_of_a_million_whitespace_characters_is_tokenized(pattern):
    """(With GPT-2's ranks, which merge few whitespace characters: a million-character piece merged often takes
    seconds.)"""
    gpt2 = load_encoding("gpt2")
    encoding = gpt2 if pattern == "gpt2" else tiktoken.Encoding(name="gpt4-pattern", pat_str=GPT4_PATTERN,
                                                                 mergeable_ranks=gpt2._mergeable_ranks, special_tokens={})
    with pytest.raises(BaseException):  # what tiktoken cannot do whole (a Rust panic)
        encoding.encode_ordinary(" " * 1_000_000 + "x")
    for text in [" " * 1_000_000 + "x", "x.\r\n" + "\u3000 \n" * 100_000 + " y"]:
        ids = encode_to_numpy(encoding, text)
        assert encoding.decode_bytes(ids.tolist()) == text.encode()


def test_a_text_with_a_million_spaces_is_built_and_learned_from(tmp_path):
    text = "alpha beta" + " " * 1_000_000 + "x\n"
    write(tmp_path / "src" / "spaces.txt", text)
    write(tmp_path / "src" / "other.txt", "gamma delta\n")
    prepare("build", tmp_path / "src", "--out", tmp_path / "data", "--workers", 1)
    assert documents(tmp_path / "data") == sorted([text, "gamma delta\n"])
    result = prepare("tokenizer", tmp_path / "src", "--vocab-size", 300, "--out", tmp_path / "tok")
    assert "learned from 2 documents" in result.output


def words(rng, n):
    return " ".join(rng.choice(["alpha", "beta", "gamma", "delta", "x.", "42", "(é)", "\n\n", "\t"]) for _ in range(n))


def built(tmp_path, name, src, *options):
    prepare("build", src, "--out", tmp_path / name, *options)
    prepare("verify", tmp_path / name)  # checksums taken as the parts were written, moved between splits
    m = fmt.read_manifest(tmp_path / name)
    return documents(tmp_path / name), {s: m.tokens(s) for s in fmt.SPLITS}, {s: m.documents[s] for s in fmt.SPLITS}, len(m.files)


@pytest.fixture
def in_parts(monkeypatch):
    """Documents of more than 500 characters read in parts by the main process, a few parts to a batch."""
    def apply():
        monkeypatch.setattr(text_reader, "PART_CHARS", 500)
        monkeypatch.setattr(text_reader, "TEXT_CHUNK", 256)
        monkeypatch.setattr(reading, "WORKER_READS", 100)
        monkeypatch.setattr(reading, "BATCH_CHARS", 2000)
    return apply


def test_long_documents_read_in_parts_give_the_tokens_and_splits_of_whole_ones(tmp_path, in_parts):
    rng = random.Random(0)
    for i in range(8):
        write(tmp_path / "src" / f"long{i}.txt", words(rng, 1500))
    write(tmp_path / "src" / "blank.txt", " \n\t" * 1000)  # empty, found so only at its end
    write(tmp_path / "src" / "short.txt", "a short one")
    whole = built(tmp_path, "whole", tmp_path / "src", "--val-fraction", 0.5)
    in_parts()
    parts = built(tmp_path, "parts", tmp_path / "src", "--val-fraction", 0.5, "--workers", 2)
    assert parts[:3] == whole[:3] and min(whole[2].values()) >= 2, "same documents, tokens and splits (both used)"
    assert parts[3] > whole[3], "each long document got a file of its own: it was written in parts"
    assert "1 empty documents" in prepare("build", tmp_path / "src", "--out", tmp_path / "again", "--val-fraction", 0.5).output


def test_a_long_zstd_text_is_read_in_parts_as_the_same_text_uncompressed(tmp_path, in_parts):
    import zstandard

    rng = random.Random(3)
    for i in range(3):
        text = words(rng, 1500)
        write(tmp_path / "plain" / f"book{i}.txt", text)
        write(tmp_path / "zstd" / f"book{i}.zst", zstandard.ZstdCompressor().compress(text.encode()), mode="wb")
    write(tmp_path / "plain" / "short.txt", "a short one")
    write(tmp_path / "zstd" / "short.txt", "a short one")
    whole = built(tmp_path, "whole", tmp_path / "plain", "--val-fraction", 0.5)
    in_parts()
    parts = built(tmp_path, "parts", tmp_path / "zstd", "--val-fraction", 0.5)
    assert parts[:3] == whole[:3] and parts[3] > whole[3], "the same documents, tokens and splits, written in parts"


def test_a_one_document_corpus_in_parts_gives_its_last_share_to_val(tmp_path, in_parts):
    write(tmp_path / "one" / "book.txt", words(random.Random(1), 3000))
    whole = built(tmp_path, "whole", tmp_path / "one")
    in_parts()
    assert built(tmp_path, "parts", tmp_path / "one")[:3] == whole[:3] and whole[2]["val"] == 1


def test_a_tokenizer_learned_from_a_long_document_in_parts_is_the_one_learned_from_it_whole(tmp_path, in_parts):
    write(tmp_path / "one" / "book.txt", words(random.Random(2), 3000))
    prepare("tokenizer", tmp_path / "one", "--vocab-size", 300, "--out", tmp_path / "whole")
    in_parts()
    assert "learned from 1 documents" in prepare("tokenizer", tmp_path / "one", "--vocab-size", 300, "--out", tmp_path / "parts").output
    assert open(tmp_path / "parts" / "ranks.tiktoken", "rb").read() == open(tmp_path / "whole" / "ranks.tiktoken", "rb").read()
