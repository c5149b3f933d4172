"""The manifest: the generation in force as typed objects (nobody reads one by raw key), read and checked for
format and version. Trainers read only this: the files and the live extents in them."""

import dataclasses
import json
import os

from prepare.format.layout import MANIFEST, SPLITS, DatasetError, manifest_path, plain_name

FORMAT = "gptmill-tokens"
VERSION = 2


def dtype_for_vocab(n_vocab):
    """uint16 when every id fits in it, else uint32."""
    return "uint16" if n_vocab <= 2**16 else "uint32"


@dataclasses.dataclass(frozen=True)
class Tokenizer:
    name: str
    ranks_sha256: str  # sha256 over every (token bytes, id): the tokenizer's identity
    vocab_size: int
    eot_token: int
    trained: bool = False  # made by `prepare tokenizer`: its files are in the dataset's tokenizer/ directory
    # sha256 of the split pattern, also part of the identity (None: written before it was)
    pattern_sha256: str | None = None


@dataclasses.dataclass(frozen=True)
class TokenFile:
    name: str
    split: str
    tokens: int
    sha256: str
    max_token: int


@dataclasses.dataclass(frozen=True)
class Extent:
    """Tokens [start, end) of a token file: whole documents, the first starting with end-of-text."""

    file: str
    start: int
    end: int

    @property
    def tokens(self):
        return self.end - self.start


@dataclasses.dataclass
class Manifest:
    generation: int
    tokenizer: Tokenizer
    dtype: str
    options: dict  # what shaped the tokens: a change asks for --rebuild
    files: dict  # name -> TokenFile, every file a live extent lies in
    extents: dict  # split -> [Extent], the live token ranges
    documents: dict  # split -> live documents
    segments: list  # [name, records] of the source segments in force, oldest first
    index: list = dataclasses.field(default_factory=list)  # [name, rows] of the index parts in force, oldest first
    removed: dict = dataclasses.field(default_factory=dict)  # what the build that made this generation removed

    def tokens(self, split):
        return sum(e.tokens for e in self.extents[split])

    def dead_tokens(self):
        return sum(f.tokens for f in self.files.values()) - sum(self.tokens(s) for s in SPLITS)

    def to_json(self):
        return {
            "format": FORMAT, "version": VERSION, "generation": self.generation,
            "tokenizer": dataclasses.asdict(self.tokenizer), "dtype": self.dtype, "options": self.options,
            "files": [dataclasses.asdict(f) for f in sorted(self.files.values(), key=lambda f: f.name)],
            "extents": {s: [[e.file, e.start, e.end] for e in self.extents[s]] for s in SPLITS},
            "documents": self.documents,
            "tokens": {s: self.tokens(s) for s in SPLITS},
            "segments": self.segments, "index": self.index, "removed": self.removed,
        }

    @classmethod
    def from_json(cls, data, where):
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise DatasetError(f"{where}: not a gptmill manifest")
        if data.get("version") != VERSION:
            raise DatasetError(f"{where}: format version {data.get('version')}, this gptmill reads {VERSION}; "
                               f"rebuild the dataset with `python -m prepare build ... --rebuild`")
        try:
            files = {plain_name(f["name"], where, "token file"): TokenFile(**f) for f in data["files"]}
            manifest = cls(
                generation=data["generation"], tokenizer=Tokenizer(**data["tokenizer"]), dtype=data["dtype"],
                options=data["options"], files=files,
                extents={s: [Extent(*e) for e in data["extents"][s]] for s in SPLITS},
                documents=data["documents"], segments=data["segments"], index=data.get("index", []),
                removed=data.get("removed", {}),
            )
            for name, _ in manifest.segments:
                plain_name(name, where, "source segment")
        except (KeyError, TypeError, ValueError) as e:
            raise DatasetError(f"{where}: malformed manifest ({e})") from None
        if type(manifest.generation) is not int or manifest.generation < 0:
            raise DatasetError(f"{where}: malformed manifest (generation {manifest.generation!r} is not a number)")
        stray = next((e.file for s in SPLITS for e in manifest.extents[s] if e.file not in files), None)
        if stray is not None:
            raise DatasetError(f"{where}: malformed manifest (an extent lies in {stray!r}, which is not among its "
                               f"files)")
        return manifest


def read_manifest(data_dir):
    """The manifest in force in `data_dir`, checked for format and version."""
    path = manifest_path(data_dir)
    if not os.path.isdir(data_dir):
        raise DatasetError(f"{data_dir}: no such dataset directory; make one with "
                           f"`python -m prepare build SOURCE --out {data_dir}`")
    if not os.path.exists(path):
        raise DatasetError(f"{data_dir}: no {MANIFEST}; make one with "
                           f"`python -m prepare build SOURCE --out {data_dir}`")
    return read_manifest_file(path)


def read_manifest_file(path):
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError, RecursionError) as e:
        raise DatasetError(f"{path}: unreadable manifest ({e})") from None
    return Manifest.from_json(data, path)


def is_version_1(data_dir):
    try:
        with open(manifest_path(data_dir)) as f:
            data = json.load(f)
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(data, dict) and data.get("format") == FORMAT and data.get("version") == 1
