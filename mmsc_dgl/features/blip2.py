"""BLIP-2 through LAVIS: the 32 query-token embeddings of image + text (``blip2_feature_extractor``).

LAVIS 1.0.2 pins ``transformers<4.27``, ``timm==0.4.12`` and opencv 4.5.5, so it cannot share the
main environment (open_clip, sentence-transformers).  Extract in a separate venv
(:data:`INSTALL_RECIPE`, docs/features.md), then train in the main one: the feature cache is a
plain parquet file.
"""
from __future__ import annotations

import logging
import os
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

INSTALL_RECIPE = (
    "python3 -m venv .venv-blip2 && .venv-blip2/bin/pip install 'torch==2.2.1' 'torchvision==0.17.1' "
    "'numpy<2' 'pandas<3' 'pyarrow<26' salesforce-lavis 'dgl==2.1.0' 'torchdata==0.7.1' "
    "click tqdm pydantic pyyaml scipy scikit-learn && .venv-blip2/bin/pip install --no-deps -e . "
    "&& .venv-blip2/bin/mmsc-dgl features DATASET_DIR --backend blip2 --checkpoint blip2_pretrained.pth")

WEIGHTS_HELP = (
    "BLIP-2 needs three downloads this machine cannot make: (1) the BLIP-2 Q-Former checkpoint "
    "'blip2_pretrained.pth' (LAVIS model zoo), passed with --checkpoint; (2) the EVA ViT-g weights "
    "'eva_vit_g.pth', placed in the torch hub cache (~/.cache/torch/hub/checkpoints/); (3) the "
    "'bert-base-uncased' tokenizer, placed in the Hugging Face cache (~/.cache/huggingface/hub). "
    "Fetch them on a connected machine and copy them here.")


class Blip2Extractor(FeatureExtractor):
    """32 query tokens per item from BLIP-2's Q-Former: ``multimodal`` embeddings when the item
    has an image, the text embedding (one token, the rest masked) when it has none.

    Args:
        checkpoint: local path of ``blip2_pretrained.pth``.
        image_root: folder that local image paths are relative to.
        device: ``cpu``, ``cuda``, ...
    """

    backend = "blip2"

    def __init__(self, checkpoint: Optional[str] = None, image_root: Optional[str] = None, device: str = "cpu"):
        try:
            from lavis.common.registry import registry
            from lavis.models import load_preprocess
            from omegaconf import OmegaConf
        except ImportError as err:
            raise DataError("the blip2 backend needs LAVIS, which cannot share this environment "
                            f"(it pins transformers<4.27 and timm==0.4.12). ({err})",
                            fix=f"extract in its own venv: {INSTALL_RECIPE}") from err
        if checkpoint is None:
            raise DataError("the blip2 backend needs --checkpoint blip2_pretrained.pth.", fix=WEIGHTS_HELP)
        path = resolve_path(checkpoint)
        if not path.is_file():
            raise DataError("no BLIP-2 checkpoint here.", path=path, fix=WEIGHTS_HELP)
        # Fail fast offline instead of retrying hub downloads for minutes.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        model_cls = registry.get_model_class("blip2_feature_extractor")
        cfg = OmegaConf.load(model_cls.default_config_path("pretrain"))
        cfg.model.pretrained = str(path)
        try:
            self._model = model_cls.from_config(cfg.model).to(device).eval()
        except (OSError, RuntimeError, ValueError) as err:
            raise DataError(f"BLIP-2 could not be built offline: {err}", fix=WEIGHTS_HELP) from err
        self._vis, self._txt = load_preprocess(cfg.preprocess)
        self._device = device
        self.images = ImageLoader(image_root)
        self.model = "blip2_feature_extractor/pretrain"
        self.checkpoint_hash = file_digest(path)
        self.tokens = int(self._model.query_tokens.shape[1])
        self.dim = int(self._model.Qformer.config.hidden_size)

    @torch.no_grad()
    def extract(self, items: pa.Table) -> Tuple[np.ndarray, np.ndarray]:
        n = items.num_rows
        texts = [self._txt["eval"](t or " ") for t in item_texts(items)]
        tokens = np.zeros((n, self.tokens, self.dim), dtype=np.float32)
        mask = np.zeros((n, self.tokens), dtype=bool)
        refs = items.column("image").to_pylist() if "image" in items.column_names else [None] * n
        images = [self.images.load(r) for r in refs]
        with_image = [i for i, img in enumerate(images) if img is not None]
        if with_image:
            batch = torch.stack([self._vis["eval"](images[i]) for i in with_image]).to(self._device)
            out = self._model.extract_features({"image": batch, "text_input": [texts[i] for i in with_image]},
                                               mode="multimodal")
            tokens[with_image] = out.multimodal_embeds.float().cpu().numpy()
            mask[with_image] = True
        without = [i for i in range(n) if images[i] is None]
        if without:
            out = self._model.extract_features({"text_input": [texts[i] for i in without]}, mode="text")
            tokens[without, 0] = out.text_embeds[:, 0].float().cpu().numpy()
            mask[without, 0] = True
        return tokens, mask

    def report(self) -> dict:
        return self.images.report()
