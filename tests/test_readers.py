"""Input formats added as one reader file: zstd-compressed JSONL (.jsonl.zst) and text (.zst), as Dolma,
RedPajama and the Pile ship, read as their uncompressed selves are, bad input included (made here with the
zstandard library)."""

import json

import zstandard

from conftest import documents, prepare, snapshot, sources, write


def frames(*texts):
    """One zstd frame per text, concatenated (as `zstd` appends, and as parallel compressors write)."""
    return b"".join(zstandard.ZstdCompressor().compress(t.encode()) for t in texts)


def jsonl(records):
    return "".join(json.dumps({"text": r}) + "\n" for r in records)


def test_zstd_jsonl_and_text_read_as_their_uncompressed_selves(tmp_path):
    records = [f"record {i}: " + "some words " * (i % 5) for i in range(30)]
    src = tmp_path / "src"
    write(src / "a.jsonl.zst", frames(jsonl(records[:20]), jsonl(records[20:])), mode="wb")
    write(src / "b.zst", frames("a text file, ", "compressed in two frames\n"), mode="wb")
    write(src / "c.txt", "an uncompressed neighbour\n")
    write(src / "d.ndjson.zst", frames(jsonl(["an ndjson record"])), mode="wb")
    out = tmp_path / "out"
    texts = ["a text file, compressed in two frames\n", "an uncompressed neighbour\n", "an ndjson record"]
    result = prepare("build", src, "--out", out)
    assert documents(out) == sorted([*records, *texts])
    formats = {r["id"].rsplit("/", 1)[1]: r["format"] for r in sources(out)}
    assert formats == {"a.jsonl.zst": "zstd", "b.zst": "zstd", "c.txt": "text", "d.ndjson.zst": "zstd"}, result.output
    assert "up to date" in prepare("build", src, "--out", out).stdout, "an unchanged input is known again"

    # Grown by a frame: a compressed file is read again from its start, its old records retired.
    with open(src / "a.jsonl.zst", "ab") as f:
        f.write(frames(jsonl(["appended later"])))
    assert "tokenized 1 inputs" in prepare("build", src, "--out", out).stdout
    assert documents(out) == sorted([*records, "appended later", *texts])
    assert "resume_at" not in next(r for r in sources(out) if r["id"].endswith("a.jsonl.zst"))

    # --doc-sep splits the decompressed text as it splits a plain file.
    write(src / "b.zst", frames("one\n\ntwo\n", "\nthree\n"), mode="wb")
    prepare("build", src / "b.zst", "--out", tmp_path / "sep", "--doc-sep", "blank")
    assert documents(tmp_path / "sep") == ["one", "three", "two"]


def test_bad_zstd_input_ends_in_one_line_naming_it(tmp_path):
    good = tmp_path / "in" / "good.jsonl"
    write(good, jsonl(["kept"]))
    out = tmp_path / "out"
    prepare("build", good, "--out", out)
    before = snapshot(out)
    whole = frames(jsonl([f"record {i} " + "word " * 50 for i in range(200)]))
    cases = {
        "truncated.jsonl.zst": (whole[: len(whole) // 2], "cannot read (the file ends inside a zstd frame"),
        "not-zstd.zst": (b"plain bytes, not compressed", "cannot read (zstd decompressor error: Unknown frame"),
        "malformed.jsonl.zst": (frames('{"text": "fine"}\n{"text": broken\n'), ":2: malformed JSON"),
    }
    for name, (data, message) in cases.items():
        path = write(tmp_path / "bad" / name, data, mode="wb")
        result = prepare("build", good, path, "--out", out, ok=False)
        assert result.stderr.startswith(f"error: {path}") and message in result.stderr, result.stderr
        assert result.stderr.count("\n") == 1 and snapshot(out) == before, name
    malformed = str(tmp_path / "bad" / "malformed.jsonl.zst")
    assert "1 bad records" in prepare("build", malformed, "--out", tmp_path / "skip", "--skip-bad-records").output
    assert documents(tmp_path / "skip") == ["fine"]


def test_zstd_text_with_invalid_utf8_or_nul_bytes(tmp_path):
    latin = write(tmp_path / "latin.zst", zstandard.ZstdCompressor().compress("caf\xe9 au lait".encode("latin-1")),
                  mode="wb")
    binary = write(tmp_path / "blob.zst", zstandard.ZstdCompressor().compress(b"\x00\x01binary"), mode="wb")
    other = write(tmp_path / "other.txt", "another document")
    result = prepare("build", latin, binary, other, "--out", tmp_path / "out")
    assert "1 bytes of invalid UTF-8 replaced" in result.stderr
    assert "blob.zst: binary file (NUL bytes), skipped" in result.stderr
    assert documents(tmp_path / "out") == ["another document", "caf\ufffd au lait"]
    assert sources(tmp_path / "out")[1]["invalid_utf8_bytes"] == 1
    result = prepare("build", latin, "--out", tmp_path / "strict", "--strict", ok=False)
    assert result.stderr == f"error: {latin}: invalid UTF-8 at byte 3 (--strict)\n"
