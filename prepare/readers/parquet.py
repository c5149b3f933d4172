"""Parquet files: one document per row, its --text-field column (a null is an empty document)."""

from prepare.readers.base import SourceError, record_text


def read(path, opts, stats, warn, start=0, cut=None):
    import pyarrow.parquet as pq

    field = opts["text_field"]
    try:
        table = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises ArrowInvalid, OSError, ...
        raise SourceError(f"{path}: not a readable parquet file ({e})") from None
    columns = table.schema_arrow.names
    if field not in columns:
        raise SourceError(f"{path}: no column {field!r} (columns: {', '.join(columns)}); choose one with --text-field")
    for batch in table.iter_batches(batch_size=4096, columns=[field]):
        for text in batch.column(0).to_pylist():
            if text is None:
                stats.empty += 1
            elif isinstance(text, str):
                yield text
            else:
                record_text({field: text}, field, f"{path}: column {field!r}", opts, stats)
