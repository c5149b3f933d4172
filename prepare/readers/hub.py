"""Data files of a Hugging Face Hub dataset (listed by prepare/sources.py): a local copy in Hugging Face's
cache, then read as the format of its name."""

from prepare.readers.base import SourceError


def local_copy(source):
    """A local copy of one Hub data file (Hugging Face's cache)."""
    from huggingface_hub import hf_hub_download

    try:
        return hf_hub_download(source["name"], source["path_in_repo"], repo_type="dataset", revision=source["revision"])
    except Exception as e:
        raise SourceError(f"hf:{source['name']}/{source['path_in_repo']}: cannot download "
                          f"({type(e).__name__}: {e})") from None
