"""How a model places items that have no edges: MMSC's Eq. 12 (the mean embedding of the nearest
warm items in content space), a trained :class:`~mmsc_dgl.nn.ContentTower`, or a mix of the two
chosen on pseudo-cold items (:func:`mmsc_dgl.train.cold_start.fit_cold_start`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from mmsc_dgl.eval.evaluate import nearest_content, nearest_content_mean
from mmsc_dgl.nn.content_tower import ContentTower


@dataclass
class ColdStart:
    """Per relation, the rows of items without edges.

    Each new row is ``normalize(mix * normalize(tower(content)) + (1 - mix) * normalize(eq12))``
    where ``eq12`` is the mean embedding of the ``k`` nearest warm items in content space; with
    no tower (or ``mix`` 0) it is Eq. 12 alone, as the paper has it.

    Attributes:
        k: nearest warm items of Eq. 12.
        towers: per relation, a trained content tower (empty: Eq. 12 alone).
        mix: per relation, the tower's share (0 to 1).

    Example:
        >>> emb = torch.tensor([[1.0, 0.0], [0.0, 2.0], [5.0, 5.0]])
        >>> content = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.1, 1.0]])
        >>> ColdStart(k=1).fill("substitute", emb, content, np.array([2])).tolist()
        [[1.0, 0.0], [0.0, 2.0], [0.0, 1.0]]
    """

    k: int = 10
    towers: Dict[str, ContentTower] = field(default_factory=dict)
    mix: Dict[str, float] = field(default_factory=dict)

    def describe(self) -> str:
        """One line for ``metrics.json``'s ``cold_start_method``."""
        eq12 = f"mean of {self.k} nearest items in content space"
        if not self.towers:
            return eq12
        shares = ", ".join(f"{r} {self.mix.get(r, 0.0):g}" for r in self.towers)
        return f"content tower mixed with the {eq12} (tower share: {shares})"

    @torch.no_grad()
    def rows(self, relation: str, embeddings: torch.Tensor, content: torch.Tensor, new_content: torch.Tensor,
             candidates: Optional[torch.Tensor] = None, nearest: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Unit rows for items with ``new_content`` [M, D], from the ``candidates`` (bool mask,
        default: every item with content) of ``embeddings`` [N, dim] and ``content`` [N, D]
        (``nearest``: their :func:`~mmsc_dgl.eval.evaluate.nearest_content`, searched already)."""
        eq12 = F.normalize(nearest_content_mean(embeddings, content, new_content, self.k,
                                                candidates=candidates, nearest=nearest), dim=1)
        share = float(self.mix.get(relation, 0.0)) if relation in self.towers else 0.0
        if share <= 0:
            return eq12
        tower = self.towers[relation]
        was_training = tower.training
        tower.eval()
        own = F.normalize(tower(new_content.to(next(tower.parameters()).device)).to(eq12), dim=1)
        tower.train(was_training)
        return F.normalize(share * own + (1 - share) * eq12, dim=1)

    def _split(self, content: torch.Tensor, cold_items: np.ndarray, device) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(cold, warm)``: the cold items with content (ids), and the items borrowed from (a
        bool mask: warm, with content)."""
        has_content = content.abs().sum(1) > 0
        every_cold = torch.tensor(np.array(cold_items), dtype=torch.long, device=device)
        cold = every_cold[has_content[every_cold]] if every_cold.numel() else every_cold
        warm = has_content.clone()
        warm[every_cold] = False
        return cold, warm

    @torch.no_grad()
    def nearest(self, content: torch.Tensor, cold_items: np.ndarray) -> torch.Tensor:
        """The :func:`~mmsc_dgl.eval.evaluate.nearest_content` that :meth:`fill` borrows from
        for ``cold_items``: one search for every relation (and for every placer with this
        ``k``), handed to :meth:`fill` as ``nearest``."""
        cold, warm = self._split(content, cold_items, content.device)
        return nearest_content(content, content[cold], self.k, candidates=warm)

    @torch.no_grad()
    def fill(self, relation: str, embeddings: torch.Tensor, content: torch.Tensor,
             cold_items: np.ndarray, nearest: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``embeddings`` with the rows of ``cold_items`` replaced (unit rows, as Eq. 12 has
        always been placed here); cold items without content (an all-zero row) keep theirs, and
        only warm items with content are borrowed from (``nearest``: :meth:`nearest` of the same
        items, searched already)."""
        out = embeddings.clone()
        cold, warm = self._split(content, cold_items, embeddings.device)
        if cold.numel() == 0 or not warm.any():
            return out
        out[cold] = self.rows(relation, embeddings, content, content[cold], candidates=warm,
                              nearest=nearest).to(out.dtype)
        return out

    @staticmethod
    @torch.no_grad()
    def with_edges(rows: torch.Tensor, targets: torch.Tensor, items: torch.Tensor, partners: torch.Tensor,
                   prior: float = 2.0) -> torch.Tensor:
        """``rows`` with the rows of items that have a few known edges moved toward them: for
        each edge ``(items[e], partners[e])`` of the relation, the new row is
        ``normalize(prior * normalize(row) + sum of normalize(targets[partner]))``.

        The sum of the partners' *target* rows is the unit query that scores them highest; as
        a candidate, that row's own target (times the model's signature, if any) is the partners'
        rows, which is what their queries look for.  ``prior`` weighs the content placement as
        that many edges (2: chosen on the warm-up curve of Magazine and Gift Cards, where 0.3,
        1, 2, 4 and 8 were tried; docs/results.md).  Items without an edge keep their rows.

        Example:
            >>> rows = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
            >>> ColdStart.with_edges(rows, rows, torch.tensor([2]), torch.tensor([1]), prior=1.0).tolist()[2]
            [0.7071067690849304, 0.7071067690849304]
        """
        out = rows.clone()
        if items.numel() == 0:
            return out
        items, partners = items.to(rows.device, torch.int64), partners.to(rows.device, torch.int64)
        pull = torch.zeros_like(rows).index_add_(0, items, F.normalize(targets[partners].to(rows.dtype), dim=1))
        touched = torch.unique(items)
        out[touched] = F.normalize(prior * F.normalize(rows[touched], dim=1) + pull[touched], dim=1)
        return out

    def to(self, device) -> "ColdStart":
        """Move the towers (in place; returns self)."""
        for tower in self.towers.values():
            tower.to(device)
        return self

    def state(self) -> Dict[str, Any]:
        """What a checkpoint keeps (tensors and plain values: ``weights_only`` loads it)."""
        return {"k": self.k, "mix": dict(self.mix),
                "towers": {r: {"in_dim": t.in_dim, "out_dim": t.out_dim, "hidden": t.hidden,
                               "weights": {k: v.detach().cpu() for k, v in t.state_dict().items()}}
                           for r, t in self.towers.items()}}

    @classmethod
    def from_state(cls, state: Optional[Dict[str, Any]], k: int = 10) -> "ColdStart":
        """The inverse of :meth:`state`; ``None`` (a run saved before towers existed, or trained
        with ``cold_start: eq12``) gives Eq. 12 with ``k``."""
        if not state:
            return cls(k=k)
        towers = {}
        for r, t in state["towers"].items():
            tower = ContentTower(int(t["in_dim"]), int(t["out_dim"]), hidden=int(t["hidden"]))
            tower.load_state_dict(t["weights"])
            towers[r] = tower.eval()
        return cls(k=int(state["k"]), towers=towers, mix={r: float(v) for r, v in state["mix"].items()})
