"""Cleaning text fields: real Amazon titles are often broken HTML fragments."""
from __future__ import annotations

import html
import re
from typing import Iterable, Optional, Tuple

_TAG = re.compile(r"<[^>]*>?")  # a tag, or a fragment cut off before its '>'
_SPACE = re.compile(r"\s+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s")

MAX_TITLE_CHARS = 120


def clean_text(value: object) -> str:
    """Strip tags and tag fragments, unescape entities, collapse whitespace.

    Lists (the 2018 ``description``) are joined with spaces; ``None`` becomes ``""``.
    """
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        value = " ".join(str(v) for v in value if v is not None)
    text = html.unescape(str(value))
    text = _TAG.sub(" ", text)
    # Entities can hide tags ("&lt;b&gt;"); unescape once more and strip again.
    if "<" in text:
        text = _TAG.sub(" ", html.unescape(text))
    return _SPACE.sub(" ", text).strip()


def _first_sentence(text: str, limit: int = MAX_TITLE_CHARS) -> str:
    sentence = _SENTENCE_END.split(text, maxsplit=1)[0]
    if len(sentence) <= limit:
        return sentence
    cut = sentence[:limit].rsplit(" ", 1)[0]
    return (cut or sentence[:limit]).rstrip(",;: ") + "…"


def clean_title(title: object, description: str = "", fallbacks: Iterable[str] = ()) -> Tuple[str, str]:
    """Return ``(title, source)``.

    ``source`` is ``"title"`` (kept as is), ``"cleaned"`` (HTML removed), ``"description"``
    (the title was empty or only markup, so the description's first sentence stands in),
    ``"fallback"`` (a later fallback such as the brand) or ``"none"``.
    """
    raw = "" if title is None else str(title)
    cleaned = clean_text(raw)
    if cleaned:
        return cleaned, ("title" if cleaned == _SPACE.sub(" ", raw).strip() else "cleaned")
    if description:
        return _first_sentence(description), "description"
    for fallback in fallbacks:
        fallback = clean_text(fallback)
        if fallback:
            return fallback, "fallback"
    return "", "none"


def first_nonempty(values: object) -> Optional[str]:
    """The first non-empty string of a string or list (image URL fields)."""
    if isinstance(values, str):
        return values or None
    if isinstance(values, (list, tuple)):
        for value in values:
            if isinstance(value, str) and value:
                return value
    return None
