"""Reading item images: a local path (optionally under ``--image-root``) or a URL.

A URL that cannot be fetched (this machine has no internet) or a file that cannot be decoded
is counted and reported, never fatal: the item keeps its text features only.
"""
from __future__ import annotations

import io
import os
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Optional


class ImageLoader:
    """Loads PIL images and counts what failed, by reason."""

    def __init__(self, image_root: Optional[os.PathLike | str] = None, timeout: float = 3.0):
        self.image_root = Path(image_root) if image_root else None
        self.timeout = timeout
        self.failures: Counter = Counter()
        self.loaded = 0
        self.missing = 0

    def _local(self, ref: str) -> Optional[Path]:
        candidates = [Path(ref)]
        if self.image_root is not None:
            candidates = [self.image_root / ref, self.image_root / Path(ref.split("?")[0]).name] + candidates
        return next((p for p in candidates if p.is_file()), None)

    def load(self, ref: Optional[str]):
        from PIL import Image
        if not ref:
            self.missing += 1
            return None
        try:
            local = self._local(ref) if not ref.startswith(("http://", "https://")) or self.image_root else None
            image: Image.Image
            if local is not None:
                image = Image.open(local)
            elif ref.startswith(("http://", "https://")):
                with urllib.request.urlopen(ref, timeout=self.timeout) as response:  # noqa: S310 - user data
                    image = Image.open(io.BytesIO(response.read()))
            else:
                self.failures["local image file not found"] += 1
                return None
            image = image.convert("RGB")
            self.loaded += 1
            return image
        except (OSError, ValueError) as err:  # URLError is an OSError; PIL raises OSError/ValueError
            reason = "URL could not be fetched" if ref.startswith(("http://", "https://")) else "unreadable image"
            self.failures[f"{reason} ({type(err).__name__})"] += 1
            return None

    def report(self) -> dict:
        return {"images_loaded": self.loaded, "items_without_image": self.missing,
                "image_failures": dict(self.failures)}
