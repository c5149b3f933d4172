"""Hugging Face `save_to_disk` directories (hf:PATH, or a directory holding dataset_dict.json or state.json):
one document per record of the chosen --split, its --text-field."""

from prepare.readers.base import SourceError, record_text


def read_split(path, split, opts, stats):
    import datasets

    datasets.disable_progress_bars()
    try:
        data = datasets.load_from_disk(path)
    except Exception as e:  # datasets raises FileNotFoundError, ValueError, ...
        raise SourceError(f"{path}: not a readable save_to_disk dataset ({e})") from None
    if isinstance(data, datasets.DatasetDict):
        if split not in data:
            raise SourceError(f"{path}: no split {split!r} (splits: {', '.join(data)}); choose one with --split")
        data = data[split]
    for index, record in enumerate(data):
        text = record_text(record, opts["text_field"], f"{path} record {index}", opts, stats)
        if text is not None:
            yield text
