"""JSONL files (.jsonl, .ndjson, .jsonl.gz): one document per record, its --text-field. An uncompressed file
notes where its last record starts, so that a rerun reads only the records appended to it since."""

import gzip
import json

from prepare.readers.base import SourceError, Utf8Decoder, open_regular, record_text, warn_invalid_utf8


def read(path, opts, stats, warn, start=0, cut=None):
    """The records of a JSONL file from byte `start` (0, or where a grown file's old records end)."""
    compressed = path.lower().endswith(".gz")
    try:
        with open_regular(path) as raw, (gzip.open(raw) if compressed else raw) as f:
            f.seek(start)
            yield from records(f, path, opts, stats, warn, start, resumable=not compressed)
    except (OSError, EOFError) as e:
        raise SourceError(f"{path}: cannot read ({e})") from None


def records(lines, path, opts, stats, warn, start=0, resumable=True):
    """The texts of the records among `lines` (a binary stream's, from byte `start` of the file `path`);
    `resumable`: note in stats where the last document starts."""
    decoder = Utf8Decoder(stats, opts["strict"])
    offset = start
    for number, line in enumerate(lines, 1):
        at, offset = offset, offset + len(line)
        where = f"{path}:{number}" if not start else f"{path}: record at byte {at}"
        if not line.strip():
            continue
        try:
            record = json.loads(decoder.decode(line, final=True))
        except UnicodeDecodeError:
            raise SourceError(f"{where}: invalid UTF-8 (--strict)") from None
        except (ValueError, RecursionError) as e:  # RecursionError: nested deeper than Python's stack
            problem = "nested too deeply" if isinstance(e, RecursionError) else e
            if not opts["skip_bad_records"]:
                raise SourceError(f"{where}: malformed JSON ({problem}) "
                                  f"(--skip-bad-records to skip such records)") from None
            stats.bad_records += 1
            continue
        text = record_text(record, opts["text_field"], where, opts, stats)
        if text is not None:
            if resumable and text.strip():
                stats.last_document_at = at
            yield text
    warn_invalid_utf8(path, stats, warn)
