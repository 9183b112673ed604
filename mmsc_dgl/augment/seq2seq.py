"""A Hugging Face seq2seq judge (the Flan-T5 family), given by a local path.

The prompt shows both items (title, category path, description) and asks whether the relation
holds; the probability is ``softmax(logit("yes"), logit("no"))`` at the first decoder step.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import List, Optional

import numpy as np
import pyarrow as pa
import torch

from mmsc_dgl.augment.judge import EdgeJudge
from mmsc_dgl.data.catalog import item_texts
from mmsc_dgl.errors import DataError
from mmsc_dgl.features.base import file_digest

logger = logging.getLogger(__name__)

QUESTIONS = {
    "substitute": "Could a shopper buy product B instead of product A, as a substitute for it?",
    "complement": "Would a shopper who buys product A also want product B to use together with it, "
                  "as a complement?",
}
PROMPT = ("Product A: {a}\nProduct B: {b}\nQuestion: {question}\nAnswer yes or no.")
DOWNLOAD_HELP = ("download a Flan-T5 checkpoint (e.g. google/flan-t5-xxl, or flan-t5-base to try it) on a "
                 "connected machine with `huggingface-cli download google/flan-t5-xxl --local-dir DIR`, "
                 "copy DIR here and pass --model DIR.")


class Seq2SeqJudge(EdgeJudge):
    """Args:
        model_path: a local directory with a seq2seq model and its tokenizer.
        items: the catalog table (title, category, description).
        device: ``cpu``, ``cuda``, ...
        batch_size: prompts per forward pass.
        max_length: tokens per prompt (longer prompts are truncated).
    """

    name = "seq2seq"

    def __init__(self, model_path: Optional[str], items: pa.Table, device: str = "cpu", batch_size: int = 16,
                 max_length: int = 512, dtype: Optional[torch.dtype] = None):
        if not model_path:
            raise DataError("the seq2seq judge needs --model DIR.", fix=DOWNLOAD_HELP)
        path = Path(os.path.expanduser(model_path))
        if not (path / "config.json").exists():
            raise DataError("no seq2seq model here (no config.json).", path=path, fix=DOWNLOAD_HELP)
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer
        self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        self.model = AutoModelForSeq2SeqLM.from_pretrained(str(path), torch_dtype=dtype).to(device).eval()
        self.device = device
        self.batch_size = batch_size
        self.max_length = max_length
        self.yes_id = self._token_id("yes")
        self.no_id = self._token_id("no")
        weights = next((p for p in (path / "model.safetensors", path / "pytorch_model.bin") if p.exists()), None)
        self.model_hash = file_digest(weights) if weights else ""
        self.model_name = path.name
        self.texts = item_texts(items, max_chars=None, separator="; ", description_chars=300)

    def _token_id(self, word: str) -> int:
        ids = self.tokenizer(word, add_special_tokens=False).input_ids
        if not ids:
            raise DataError(f"the tokenizer cannot encode {word!r}.", fix="use a Flan-T5 tokenizer.")
        return ids[0]

    def prompts(self, src: np.ndarray, dst: np.ndarray, relation: str) -> List[str]:
        return [PROMPT.format(a=self.texts[a], b=self.texts[b], question=QUESTIONS[relation]) for a, b in zip(src, dst)]

    @torch.no_grad()
    def score(self, src: np.ndarray, dst: np.ndarray, relation: str) -> np.ndarray:
        out = []
        prompts = self.prompts(src, dst, relation)
        start = torch.full((1, 1), self.model.config.decoder_start_token_id, dtype=torch.long, device=self.device)
        for i in range(0, len(prompts), self.batch_size):
            batch = self.tokenizer(prompts[i:i + self.batch_size], return_tensors="pt", padding=True,
                                   truncation=True, max_length=self.max_length).to(self.device)
            logits = self.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                                decoder_input_ids=start.expand(batch.input_ids.shape[0], 1)).logits[:, 0]
            pair = torch.stack([logits[:, self.yes_id], logits[:, self.no_id]], dim=1).float()
            out.append(torch.softmax(pair, dim=1)[:, 0].cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0)

    def describe(self) -> dict:
        return {"judge": self.name, "model": self.model_name, "model_hash": self.model_hash,
                "max_length": self.max_length}
