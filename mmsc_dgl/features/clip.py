"""open_clip image and text towers (extra ``[clip]``): two tokens per item, image and text."""
from __future__ import annotations

import logging
from typing import Optional, Tuple

import numpy as np
import pyarrow as pa
import torch

from mmsc_dgl.errors import DataError
from mmsc_dgl.data.catalog import item_texts
from mmsc_dgl.features.base import FeatureExtractor, file_digest
from mmsc_dgl.io import resolve_path
from mmsc_dgl.features.images import ImageLoader

logger = logging.getLogger(__name__)


class ClipExtractor(FeatureExtractor):
    """Token 0: the image embedding (masked out when the item has no readable image); token 1:
    the text embedding of title + category + description.  Both L2-normalised.

    Args:
        model: an open_clip config name, e.g. ``ViT-B-32``.
        checkpoint: a local weights file for that config.
        random_init: allow random weights when no checkpoint is given (features are meaningless;
            for tests and plumbing only).
        image_root: folder that local image paths are relative to.
        device: ``cpu``, ``cuda``, ...
    """

    backend = "clip"

    def __init__(self, model: str = "ViT-B-32", checkpoint: Optional[str] = None, random_init: bool = False,
                 image_root: Optional[str] = None, device: str = "cpu"):
        try:
            import open_clip
        except ImportError as err:
            raise DataError("the clip backend needs open_clip.",
                            fix="pip install 'mmsc_dgl[clip]' (open_clip_torch==3.3.0, torchvision==0.17.1).") from err
        if model not in open_clip.list_models():
            raise DataError(f"open_clip has no model config {model!r}.",
                            fix=f"use one of e.g. {', '.join(open_clip.list_models()[:5])}.")
        if checkpoint is None and not random_init:
            raise DataError(f"the clip backend needs local weights for {model} (this machine cannot download them).",
                            fix="download open_clip weights elsewhere and pass --checkpoint FILE, "
                                "or --random-init for meaningless test features.")
        pretrained = None
        if checkpoint is not None:
            path = resolve_path(checkpoint)
            if not path.is_file():
                raise DataError("no checkpoint file here.", path=path,
                                fix=f"put the open_clip weights for {model} there.")
            pretrained = str(path)
            self.checkpoint_hash = file_digest(path)
        else:
            logger.warning("clip: random weights (--random-init); the features are meaningless")
            self.checkpoint_hash = "random-init"
        self._model, _, self._preprocess = open_clip.create_model_and_transforms(model, pretrained=pretrained,
                                                                                 device=device)
        self._model.eval()
        self._tokenizer = open_clip.get_tokenizer(model)
        self._device = device
        self.images = ImageLoader(image_root)
        self.model = model
        self.tokens = 2
        with torch.no_grad():
            self.dim = int(self._model.encode_text(self._tokenizer(["x"]).to(device)).shape[-1])

    @torch.no_grad()
    def extract(self, items: pa.Table) -> Tuple[np.ndarray, np.ndarray]:
        n = items.num_rows
        texts = item_texts(items)
        text = self._model.encode_text(self._tokenizer([t or " " for t in texts]).to(self._device))
        text = torch.nn.functional.normalize(text.float(), dim=-1)
        tokens = torch.zeros(n, 2, self.dim)
        mask = torch.zeros(n, 2, dtype=torch.bool)
        tokens[:, 1] = text.cpu()
        mask[:, 1] = torch.tensor([bool(t) for t in texts])
        refs = items.column("image").to_pylist() if "image" in items.column_names else [None] * n
        loaded = [(i, img) for i, img in enumerate(self.images.load(r) for r in refs) if img is not None]
        if loaded:
            batch = torch.stack([self._preprocess(img) for _, img in loaded]).to(self._device)
            image = torch.nn.functional.normalize(self._model.encode_image(batch).float(), dim=-1).cpu()
            rows = torch.tensor([i for i, _ in loaded])
            tokens[rows, 0] = image
            mask[rows, 0] = True
        return tokens.numpy(), mask.numpy()

    def report(self) -> dict:
        return self.images.report()
