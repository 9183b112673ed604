"""Counted, reported skips: nothing is dropped silently."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, List


@dataclass
class SkipReport:
    """Counts of what was skipped, by reason, with a few examples of each.

    Readers and the graph builder add to one report; ``mmsc-dgl prepare`` prints it and saves it
    in ``dataset.json``.

    Example:
        >>> report = SkipReport()
        >>> report.skip("duplicate edge", count=3)
        >>> report.total, report.format()[0]
        (3, 'skipped: 3 in all')

    """

    max_examples: int = 3
    counts: Counter = field(default_factory=Counter)
    examples: Dict[str, List[str]] = field(default_factory=dict)
    notes: Counter = field(default_factory=Counter)

    def skip(self, reason: str, example: str | None = None, count: int = 1) -> None:
        """Record ``count`` skipped things for ``reason``; keep ``example`` if there is room."""
        if count <= 0:
            return
        self.counts[reason] += count
        if example is not None:
            kept = self.examples.setdefault(reason, [])
            if len(kept) < self.max_examples:
                kept.append(example)

    def note(self, what: str, count: int = 1) -> None:
        """Count something that was changed but kept (a cleaned title, say)."""
        if count > 0:
            self.notes[what] += count

    def merge(self, other: "SkipReport") -> "SkipReport":
        for reason, count in other.counts.items():
            self.counts[reason] += count
            kept = self.examples.setdefault(reason, [])
            for example in other.examples.get(reason, []):
                if len(kept) < self.max_examples:
                    kept.append(example)
        self.notes.update(other.notes)
        return self

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def to_dict(self) -> dict:
        return {
            "skipped": {reason: int(n) for reason, n in sorted(self.counts.items())},
            "examples": {reason: list(ex) for reason, ex in sorted(self.examples.items())},
            "notes": {what: int(n) for what, n in sorted(self.notes.items())},
        }

    @classmethod
    def from_dict(cls, data: dict) -> "SkipReport":
        report = cls()
        report.counts.update(data.get("skipped", {}))
        report.examples.update({k: list(v) for k, v in data.get("examples", {}).items()})
        report.notes.update(data.get("notes", {}))
        return report

    def format(self) -> List[str]:
        """Human-readable lines, largest count first."""
        if not self.counts:
            lines = ["skipped: nothing"]
        else:
            lines = [f"skipped: {self.total:,} in all"]
            for reason, count in self.counts.most_common():
                example = self.examples.get(reason)
                suffix = f"  (e.g. {'; '.join(example)})" if example else ""
                lines.append(f"  {count:>10,}  {reason}{suffix}")
        for what, count in self.notes.most_common():
            lines.append(f"note: {count:,} {what}")
        return lines
