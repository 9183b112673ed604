"""A trained model as one self-contained object: ask it for scores, top-k items and embeddings of
new items, save it as one file, load it on another machine (no dataset directory, no DGL).

``mmsc-dgl recommend`` answers through the same object.
"""
from __future__ import annotations

import copy
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union, cast

import numpy as np
import torch
from torch import nn

from mmsc_dgl.schema import RELATIONS
from mmsc_dgl.config import TrainConfig
from mmsc_dgl.errors import DataError
from mmsc_dgl.eval.cold_start import ColdStart
from mmsc_dgl.features.base import ContentFeatures
from mmsc_dgl.nn.path_evidence import SIMILAR, look_alike_edges
from mmsc_dgl.ops import CSR

if TYPE_CHECKING:
    from mmsc_dgl.data.edges import RelationEdges

logger = logging.getLogger(__name__)

FORMAT = "mmsc_dgl.model"
FORMAT_VERSION = 1

Items = Union[str, int, Sequence[Union[str, int]], torch.Tensor, np.ndarray]
"""Items to ask about: external ids (strings), node ids (ints), or a list or tensor of either.
A string is always an external id and an int always a node id, so ``"7"`` and ``7`` can differ."""


@dataclass
class TopK:
    """The answer of :meth:`ItemModel.topk`: per query, the ``k`` best items, best first.

    Example:
        >>> top = TopK(torch.tensor([[2, 0]]), torch.tensor([[0.5, 0.25]]), [["C", "A"]])
        >>> top.item_ids[0][0], float(top.scores[0, 0])
        ('C', 0.5)

    Attributes:
        nodes: node ids [Q, k].
        scores: the model's scores [Q, k].
        item_ids: external ids, one list per query.
    """

    nodes: torch.Tensor
    scores: torch.Tensor
    item_ids: List[List[str]]


@dataclass
class _Edges:
    src: np.ndarray
    dst: np.ndarray

    def __len__(self) -> int:
        return len(self.src)


@dataclass
class _Added:
    """Items joined after training (:meth:`ItemModel.add_items`): their ids, pooled content in
    the model's content space (zeros: none), titles, and their known edges per relation as
    ``(src, dst)`` node ids of the grown catalog."""
    ids: List[str]
    content: torch.Tensor
    titles: List[Optional[str]]
    edges: Dict[str, Tuple[torch.Tensor, torch.Tensor]]


class ItemModel:
    """A trained model with everything it needs to answer queries, for every relation.

    Build one with :func:`load_model` (from a run directory or a saved file), or
    ``load_run(run).item_model()``.  Each relation keeps the weights of its own best validation
    epoch; :meth:`for_relation` hands out a separate ``nn.Module`` holding them.

    Example:
        >>> model = mmsc_dgl.load_model("runs/mmsc")                      # doctest: +SKIP
        >>> model.topk(["B00005N7P0"], "complement", k=5).item_ids        # doctest: +SKIP
        >>> model.score("B00005N7P0", ["B00006L9LC", "B000FC2M1Y"], "substitute")  # doctest: +SKIP
        >>> model.save("model.mmsc"); mmsc_dgl.load_model("model.mmsc")  # doctest: +SKIP
    """

    def __init__(self, model: nn.Module, relation_states: Mapping[str, Mapping[str, torch.Tensor]],
                 item_ids: Sequence[str], config: TrainConfig, features: Optional[Any] = None,
                 titles: Optional[Sequence[Optional[str]]] = None, tables: Optional[Mapping[str, CSR]] = None,
                 train_edges: Optional[Mapping[str, Any]] = None, cold_start: Optional[ColdStart] = None):
        self.module = model
        self.cold_start = cold_start or ColdStart(k=config.cold_neighbors)
        self.relation_states = {r: dict(relation_states[r]) for r in RELATIONS}
        self.item_ids: List[str] = [str(i) for i in item_ids]
        self.titles = list(titles) if titles is not None else None
        self.config = config
        self.features = features
        self._tables = dict(tables) if tables is not None else None
        self._edges = {r: _Edges(np.asarray(e.src), np.asarray(e.dst)) for r, e in (train_edges or {}).items()} or None
        self._index: Optional[Dict[str, int]] = None
        self._relation_models: Dict[str, nn.Module] = {}
        self._embeddings: Dict[str, torch.Tensor] = {}
        self._targets: Dict[str, torch.Tensor] = {}
        self._base: Dict[str, torch.Tensor] = {}
        self._terms: Dict[str, Any] = {}
        self.num_trained = len(self.item_ids)
        self._added: Optional[_Added] = None
        self._similar: Optional[Tuple[torch.Tensor, torch.Tensor]] = None

    # --- what it is ------------------------------------------------------------------------
    @property
    def num_items(self) -> int:
        return len(self.item_ids)

    @property
    def device(self) -> torch.device:
        anchor = next(self.module.parameters(), None)
        return anchor.device if anchor is not None else torch.device("cpu")

    def __repr__(self) -> str:
        return f"ItemModel({self.config.architecture}, items={self.num_items:,}, relations={list(RELATIONS)})"

    def to(self, device: Union[str, torch.device]) -> "ItemModel":
        """Move every part to ``device`` (in place; returns self)."""
        self.module.to(device)
        self.cold_start.to(device)
        for model in self._relation_models.values():
            model.to(device)
        self._forget()
        self._base = {}
        return self

    def _forget(self) -> None:
        """Drop what was computed from the catalog (it grew, or moved)."""
        self._embeddings, self._targets, self._terms, self._index = {}, {}, {}, None
        self._similar = None

    # --- ids -------------------------------------------------------------------------------
    def node_ids(self, items: Items) -> torch.Tensor:
        """Node ids of ``items`` (external id strings or node id ints, one or many) [Q]."""
        if isinstance(items, (torch.Tensor, np.ndarray)):
            nodes = torch.as_tensor(items).reshape(-1)
            if nodes.is_floating_point():
                raise DataError("node ids must be integers, got a float tensor.", fix="pass ids or int node ids.")
            nodes = nodes.to(torch.int64)
        else:
            many = [items] if isinstance(items, (str, int, np.integer)) else list(items)
            out = []
            for item in many:
                if isinstance(item, str):
                    if self._index is None:
                        self._index = {i: n for n, i in enumerate(self.item_ids)}
                    node = self._index.get(item)
                    if node is None:
                        raise DataError(f"item {item!r} is not in the catalog ({self.num_items:,} items).",
                                        fix="pass an external id of the catalog, an int node id, or add "
                                            "the item first with add_items().")
                    out.append(node)
                elif isinstance(item, (int, np.integer)) and not isinstance(item, bool):
                    out.append(int(item))
                else:
                    raise DataError(f"cannot read item {item!r} ({type(item).__name__}).",
                                    fix="pass external ids (str) or node ids (int).")
            nodes = torch.tensor(out, dtype=torch.int64)
        bad = (nodes < 0) | (nodes >= self.num_items)
        if bad.any():
            raise DataError(f"node id {int(nodes[bad][0])} is outside 0..{self.num_items - 1}.",
                            fix="pass node ids of this catalog, or external ids as strings.")
        return nodes.to(self.device)

    # --- models per relation -----------------------------------------------------------------
    def for_relation(self, relation: str) -> nn.Module:
        """A separate model holding ``relation``'s selected weights, in eval mode (asking for
        the other relation later never changes it)."""
        _check_relation(relation)
        if relation not in self._relation_models:
            model = _copy_weights_share_graph(self.module)
            model.load_state_dict(self.relation_states[relation])
            self._relation_models[relation] = model.eval()
        return self._relation_models[relation]

    def _trained_rows(self, relation: str) -> torch.Tensor:
        """The trained items' rows for ``relation`` [num_trained, dim] (computed once)."""
        if relation not in self._base:
            model = self.for_relation(relation)
            if not getattr(model, "has_embeddings", True):
                raise DataError(f"{self.config.architecture} scores pairs and has no item embeddings.",
                                fix="use score(), or an embedding model (mmsc, lightgcn, ...).")
            with torch.no_grad():
                self._base[relation] = model.embed(relation)
        return self._base[relation]

    def embed(self, relation: str) -> torch.Tensor:
        """Every item's embedding for ``relation`` [num_items, dim] (computed once, then kept):
        the trained items' rows, then those of items joined by :meth:`add_items` (placed by
        their content and moved toward their known edges' partners)."""
        if relation not in self._embeddings:
            base = self._trained_rows(relation)
            if self._added is None:
                self._embeddings[relation] = base
            else:
                queries, candidates = self._added_rows(relation, base)
                self._embeddings[relation] = torch.cat([base, queries])
                self._targets[relation] = self.for_relation(relation).targets(relation, torch.cat([base, candidates]))
        return self._embeddings[relation]

    def targets(self, relation: str) -> torch.Tensor:
        """The rows queries are scored against for ``relation``: :meth:`embed`'s, or, for a
        model with a signature (``complement_signature``), those rows times it.  A search index
        for :meth:`topk` is built over these.  (An added item is ranked as a candidate by Eq. 12's
        placement where the run has a content tower: :meth:`add_items`.)"""
        if relation not in self._targets:  # computed once, like embed: topk asks for it every query
            emb = self.embed(relation)
            if relation not in self._targets:
                self._targets[relation] = self.for_relation(relation).targets(relation, emb)
        return self._targets[relation]

    def pair_term(self, relation: str):
        """The model's pairwise score term for ``relation`` (MMSC's path evidence) over the whole
        catalog, counting the known edges of added items, or ``None`` (:meth:`Recommender.pair_term
        <mmsc_dgl.models.base.Recommender.pair_term>`)."""
        if relation not in self._terms:
            model = self.for_relation(relation)
            if self._added is None:
                self._terms[relation] = model.pair_term(relation)
            else:
                self._terms[relation] = model.pair_term(relation, self._extra_edges(), self.num_items)
        return self._terms[relation]

    def evidence(self, relation: str):
        """The path-evidence module answering for ``relation`` (over the grown catalog when items
        were added), or ``None``: what ``explain`` reads paths and shares from."""
        own = getattr(self.for_relation(relation), "evidence", None)
        if own is None or self._added is None:
            return own
        return own.with_edges(self._extra_edges(), self.num_items)

    def _extra_edges(self) -> Dict[str, Tuple[torch.Tensor, torch.Tensor]]:
        """The added items' known edges per relation and, where the path evidence counts paths
        through content neighbours (MMSC's ``content_paths``), each added item's nearest trained
        items with a training edge in content space, found as training found the catalog's."""
        assert self._added is not None
        out = {r: (a.to(self.device), b.to(self.device)) for r, (a, b) in self._added.edges.items()}
        evidence = getattr(self.for_relation(RELATIONS[0]), "evidence", None)
        k = int(getattr(self.config.model, "content_paths", 0))
        if evidence is not None and k and SIMILAR in evidence.counter.graphs and self.features is not None:
            if self._similar is None:
                content = torch.cat([self.features.pooled().float().cpu(), self._added.content.float().cpu()])
                new = torch.zeros(len(content), dtype=torch.bool)
                new[self.num_trained:] = True
                self._similar = look_alike_edges(evidence.counter, content, k, sources=new)
            out[SIMILAR] = (self._similar[0].to(self.device), self._similar[1].to(self.device))
        return out

    # --- new items -------------------------------------------------------------------------
    def add_items(self, ids: Sequence[str], features: Any = None,
                  edges: Optional[Mapping[str, Sequence[Tuple[Union[str, int], Union[str, int]]]]] = None,
                  titles: Optional[Sequence[Optional[str]]] = None) -> torch.Tensor:
        """Add items the model was not trained on, without retraining; afterwards :meth:`topk`,
        :meth:`score`, :meth:`embed` and ``explain`` know them (as queries and as candidates),
        and :meth:`save` keeps them.  Returns their node ids (after the catalog's).

        Each new item is placed by its content as the run places cold items (:attr:`cold_start`:
        the content tower mixed with Eq. 12, or Eq. 12), and moved toward the partners of its
        known ``edges`` (:meth:`ColdStart.with_edges <mmsc_dgl.eval.cold_start.ColdStart.with_edges>`);
        MMSC's path evidence also counts the paths and links those edges make.  What this buys
        per revealed edge is the warm-up curve of docs/results.md.

        Args:
            ids: external ids, new to the catalog and to each other.
            features: in the model's content space: ``[M, D]``, ``[M, T, D]``, ``(tokens, mask)``
                or :class:`~mmsc_dgl.features.base.ContentFeatures` for frozen features (extract
                them with the run's extractor); for a model trained on category tokens
                (``features: categories``), a list of token lists (``"category:NAME"``,
                ``"brand:NAME"``; tokens outside the run's vocabulary are dropped and counted).
                ``None``: no content (the items are placed by their edges alone).
            edges: per relation, ``(a, b)`` pairs, at least one end a new id; the other end an
                id of the catalog (a string), a node id (an int), or another new id.
            titles: one per new item, for the CLI's output (optional).

        Example:
            >>> model = mmsc_dgl.load_model("model.mmsc")                         # doctest: +SKIP
            >>> model.add_items(["NEW1"], torch.randn(1, 384),
            ...                 edges={"complement": [("NEW1", "B00005N7P0")]})   # doctest: +SKIP
            >>> model.topk("NEW1", "complement", k=5).item_ids                    # doctest: +SKIP
        """
        model = self.for_relation(RELATIONS[0])
        if not getattr(model, "has_embeddings", True):
            raise DataError(f"{self.config.architecture} scores pairs and has no item embeddings to place new "
                            "items with.", fix="add items to an embedding model (mmsc, lightgcn, ...).")
        ids = [ids] if isinstance(ids, str) else list(ids)
        if not ids:
            raise DataError("add_items() got no ids.", fix="pass a list of new external ids.")
        bad = next((i for i in ids if not isinstance(i, str) or not i), None)
        if bad is not None:
            raise DataError(f"new item ids must be non-empty strings, got {bad!r}.", fix="pass external ids as str.")
        if len(set(ids)) != len(ids):
            twice = next(i for i in ids if ids.count(i) > 1)
            raise DataError(f"new item id {twice!r} is given twice.", fix="pass each new id once.")
        index = self._ids_index()
        known = next((i for i in ids if i in index), None)
        if known is not None:
            raise DataError(f"item {known!r} is already in the catalog.", fix="add only ids the model does not know; "
                            "query a known item by its id.")
        content = self._new_content(features, len(ids))
        if titles is not None and len(titles) != len(ids):
            raise DataError(f"add_items() got {len(titles)} titles for {len(ids)} ids.", fix="pass one title per id.")
        start = self.num_items
        new_index = {i: start + n for n, i in enumerate(ids)}
        new_edges = self._new_edges(edges or {}, index, new_index)
        old = self._added
        device = torch.device("cpu")
        if old is None:
            added = _Added(ids, content.to(device), list(titles) if titles is not None else [None] * len(ids),
                           {r: e for r, e in new_edges.items()})
        else:
            added = _Added(old.ids + ids, torch.cat([old.content, content.to(device)]),
                           old.titles + (list(titles) if titles is not None else [None] * len(ids)),
                           {r: (torch.cat([old.edges[r][0], new_edges[r][0]]), torch.cat([old.edges[r][1], new_edges[r][1]]))
                            for r in RELATIONS})
        self._added = added
        self.item_ids = self.item_ids[: self.num_trained] + added.ids
        if self.titles is not None or titles is not None:
            own = self.titles[: self.num_trained] if self.titles is not None else [None] * self.num_trained
            self.titles = own + added.titles
        self._forget()
        return torch.arange(start, self.num_items)

    def _ids_index(self) -> Dict[str, int]:
        if self._index is None:
            self._index = {i: n for n, i in enumerate(self.item_ids)}
        return self._index

    def _new_content(self, features: Any, count: int) -> torch.Tensor:
        """Pooled content [count, D] of new items in the model's content space (zeros without)."""
        from mmsc_dgl.data.node_features import as_token_features
        own = self.features
        width = own.dim if own is not None else 0
        if features is None:
            return torch.zeros(count, width)
        if own is None:
            raise DataError("this model was trained without content features, so new items' features cannot "
                            "be read.", fix="pass features=None (the items are placed by their edges).")
        if getattr(own, "learnable", False):  # category tokens: names in the run's vocabulary
            if isinstance(features, (str, torch.Tensor, np.ndarray)) or len(features) != count:
                raise DataError(f"this model reads category tokens: pass one list of token names per new item "
                                f"({count}).", fix='e.g. [["category:Books", "brand:Acme"]].')
            vocabulary = {t: k for k, t in enumerate(own.vocabulary)}
            out = torch.zeros(count, len(vocabulary))
            dropped = 0
            for row, tokens in enumerate(features):
                for t in ([tokens] if isinstance(tokens, str) else tokens or []):
                    if t in vocabulary:
                        out[row, vocabulary[t]] = 1.0
                    else:
                        dropped += 1
            if dropped:
                logger.warning("%d token(s) of the new items are not in the run's vocabulary of %d and were dropped",
                               dropped, len(vocabulary))
            return torch.nn.functional.normalize(out, dim=1)
        if isinstance(features, ContentFeatures):
            tokens, mask = features.tokens, features.mask
        else:
            try:
                tokens, mask = as_token_features(features)
            except (TypeError, ValueError) as err:
                raise DataError(f"new items' features: {err}.", fix="pass [M, D], [M, T, D] or (tokens, mask).") from None
        if tokens.shape[0] != count:
            raise DataError(f"new items' features have {tokens.shape[0]} rows for {count} ids.",
                            fix="give one row per new id, in the same order.")
        if tokens.shape[-1] != own.dim:
            raise DataError(f"new items' features have {tokens.shape[-1]} dimensions, the model's {own.dim}.",
                            fix=f"extract them with the extractor the model was trained with ({own.source}).")
        try:
            return ContentFeatures(tokens.float().cpu(), mask.bool().cpu(), source="new").pooled()
        except ValueError as err:
            raise DataError(f"new items' features: {err}.", fix="pass finite features.") from None

    def _new_edges(self, edges: Mapping[str, Sequence[Tuple[Any, Any]]], index: Dict[str, int],
                   new_index: Dict[str, int]) -> Dict[str, Tuple[torch.Tensor, torch.Tensor]]:
        unknown = [r for r in edges if r not in RELATIONS]
        if unknown:
            raise DataError(f"edges: unknown relation {unknown[0]!r}.", fix=f"use {' or '.join(RELATIONS)}.")
        total = self.num_items + len(new_index)

        def node(item: Any) -> int:
            if isinstance(item, str):
                at = new_index.get(item, index.get(item))
                if at is None:
                    raise DataError(f"edges: item {item!r} is neither in the catalog nor among the new ids.",
                                    fix="connect new items to catalog ids or to each other.")
                return at
            if isinstance(item, (int, np.integer)) and not isinstance(item, bool) and 0 <= int(item) < self.num_items:
                return int(item)
            raise DataError(f"edges: cannot read item {item!r}.", fix="pass external ids (str) or node ids (int).")
        out = {}
        for r in RELATIONS:
            pairs = list(edges.get(r, []))
            src, dst = [], []
            for pair in pairs:
                if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                    raise DataError(f"edges[{r!r}]: {pair!r} is not a pair.", fix="pass (a, b) pairs.")
                a, b = node(pair[0]), node(pair[1])
                if a < self.num_items and b < self.num_items:
                    raise DataError(f"edges[{r!r}]: {pair!r} joins two items the model already knows.",
                                    fix="give only edges of new items (retrain to learn from new edges "
                                        "between known items).")
                if a == b:
                    raise DataError(f"edges[{r!r}]: {pair!r} joins an item to itself.", fix="drop the pair.")
                src.append(a)
                dst.append(b)
            out[r] = (torch.tensor(src, dtype=torch.int64), torch.tensor(dst, dtype=torch.int64))
        assert all(int(t.max()) < total for pair in out.values() for t in pair if t.numel())
        return out

    @torch.no_grad()
    def _added_rows(self, relation: str, base: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Query and candidate rows of the added items for ``relation`` [M, dim] each."""
        added = self._added
        assert added is not None
        content = added.content.to(base.device)
        model = self.for_relation(relation)
        own = self.features
        if getattr(model, "content_only", False):  # the rows are a function of the content
            queries = candidates = model.content_rows(relation, content.to(base.dtype))
        elif own is None or content.shape[1] == 0:
            queries = candidates = base.new_zeros(len(added.ids), base.shape[1])
        else:
            pooled = own.pooled().to(base.device)
            blank = (content.abs().sum(1) == 0).unsqueeze(1)  # no content: no placement (a tower would guess)
            queries = self.cold_start.rows(relation, base, pooled, content).to(base.dtype).masked_fill(blank, 0.0)
            candidates = (ColdStart(self.cold_start.k).rows(relation, base, pooled, content).to(base.dtype)
                          .masked_fill(blank, 0.0) if self.cold_start.towers else queries)
        src, dst = added.edges[relation]
        if src.numel():
            n = self.num_trained
            # an edge counts from both ends: a new item's partner may be old or new
            items = torch.cat([src, dst]).to(base.device)
            partners = torch.cat([dst, src]).to(base.device)
            mine = items >= n
            items, partners = items[mine], partners[mine]
            every_q, every_c = torch.cat([base, queries]), torch.cat([base, candidates])
            targets = model.targets(relation, every_c)
            queries = ColdStart.with_edges(every_q, targets, items, partners)[n:]
            candidates = ColdStart.with_edges(every_c, targets, items, partners)[n:]
        return queries, candidates

    # --- queries ---------------------------------------------------------------------------
    @torch.no_grad()
    def score(self, a: Items, b: Items, relation: str) -> torch.Tensor:
        """The model's scores of pairs ``(a[i], b[i])`` under ``relation`` (one ``a`` against many
        ``b`` broadcasts) [P]; higher is more related.  The same scores ``topk`` ranks by."""
        src, dst = self.node_ids(a), self.node_ids(b)
        if src.numel() == 1 and dst.numel() > 1:
            src = src.expand(dst.numel())
        if src.numel() != dst.numel():
            raise DataError(f"score() got {src.numel()} items against {dst.numel()}.",
                            fix="pass lists of equal length, or one item against many.")
        if self._added is None:
            return self.for_relation(relation).score(src, dst, relation)
        out = (self.embed(relation)[src] * self.targets(relation)[dst]).sum(-1)
        term = self.pair_term(relation)
        return out if term is None else out + term(src, dst.unsqueeze(1))[:, 0]

    @torch.no_grad()
    def topk(self, items: Items, relation: str, k: int = 10, exclude_self: bool = True,
             block_size: int = 256, search: Optional[Any] = None) -> TopK:
        """The ``k`` best items for each of ``items`` under ``relation``, over the whole catalog
        (exact: the embedding product plus MMSC's path-evidence term).

        ``search``: a nearest-neighbour index over :meth:`targets`' rows (:meth:`embed`'s for a
        dot-product model)
        (:func:`~mmsc_dgl.eval.retrieval.faiss_search`, or any
        :data:`~mmsc_dgl.eval.retrieval.Search`) as a candidate stage: its hits and the items
        MMSC's paths and edges reach are re-ranked by the exact score
        (:func:`~mmsc_dgl.eval.retrieval.topk_searched`), without a product over the catalog."""
        from mmsc_dgl.eval.retrieval import topk_all, topk_searched
        queries = self.node_ids(items)
        model = self.for_relation(relation)
        k = min(k, self.num_items - (1 if exclude_self else 0))
        if not getattr(model, "has_embeddings", True):  # pair scorers: score every item
            every = torch.arange(self.num_items, device=queries.device)
            scores = torch.stack([model.score(q.expand(self.num_items), every, relation) for q in queries])
            if exclude_self:
                scores[torch.arange(len(queries)), queries] = float("-inf")
            values, nodes = scores.topk(k, dim=1)
        elif search is not None:
            values, nodes = topk_searched(self.embed(relation), k, search, queries=queries, exclude_self=exclude_self,
                                          sparse_term=sparse_pair_term(self.pair_term(relation)),
                                          targets=self.targets(relation))
        else:
            term = catalog_pair_term(self.pair_term(relation), self.num_items)
            values, nodes = topk_all(self.embed(relation), k, block_size=block_size, exclude_self=exclude_self,
                                     queries=queries, pair_term=term, targets=self.targets(relation))
        return TopK(nodes, values, [[self.item_ids[j] for j in row] for row in nodes.tolist()])

    @torch.no_grad()
    def embed_new(self, features: Any, relation: str, k: Optional[int] = None) -> torch.Tensor:
        """Embeddings for items the model has not seen, from their content, as the cold-start
        evaluation places cold items (:attr:`cold_start`: the run's content tower mixed with
        Eq. 12, or Eq. 12 alone, the mean embedding of the ``k`` catalog items nearest in content
        space).  ``features``: [M, D], [M, T, D] or ``(tokens, mask)``, in the space of the
        model's features.  Rows have unit length, so ``embed_new(...) @ targets(r).T`` ranks
        catalog items for them (a new item without content gets zeros)."""
        from mmsc_dgl.data.node_features import as_token_features
        own = self.features
        if own is None or getattr(own, "learnable", False):
            raise DataError("this model has no frozen content features, so a new item cannot be placed by its "
                            "content.", fix="train with content features (features= a tensor, a feature file, "
                                            "hashed text or a feature cache).")
        tokens, mask = as_token_features(features)
        if tokens.shape[-1] != own.dim:
            raise DataError(f"new items' features have {tokens.shape[-1]} dimensions, the model's {own.dim}.",
                            fix="extract them with the extractor the model was trained with.")
        new = ContentFeatures(tokens, mask, source="new").pooled()
        emb = self.embed(relation)
        placer = self.cold_start if k is None else ColdStart(k, self.cold_start.towers, self.cold_start.mix)
        return placer.rows(relation, emb, own.pooled().to(emb.device), new.to(emb.device))

    # --- saving ----------------------------------------------------------------------------
    def save(self, path: Union[str, os.PathLike], overwrite: bool = False) -> Path:
        """Write the model as one file (config, weights per relation, meta-path tables, training
        graph, features, item ids and titles), atomically; an existing file is replaced only with
        ``overwrite`` and only if this package wrote it.  :func:`load_model` reads it back,
        without DGL and without the dataset."""
        from mmsc_dgl.ownership import check_output_file
        from mmsc_dgl.train.checkpoint import save_checkpoint
        from mmsc_dgl.train.checkpoint import load_checkpoint
        path = Path(path)
        check_output_file(path, overwrite=overwrite, option="path")
        if path.exists():  # overwrite: only a model this package saved
            try:
                ours = load_checkpoint(path).get("format") == FORMAT
            except DataError:
                ours = False
            if not ours:
                raise DataError("the file exists and is not a model saved by mmsc_dgl; it is never replaced.",
                                path=path, fix="choose another path.")
        state: Dict[str, Any] = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "config": self.config.model_dump_json(),
            "states": {r: {k: v.detach().cpu() for k, v in self.relation_states[r].items()} for r in RELATIONS},
            "item_ids": self.item_ids[: self.num_trained],
            "titles": None if self.titles is None else self.titles[: self.num_trained],
            "added": None if self._added is None else {
                "ids": self._added.ids, "titles": self._added.titles, "content": self._added.content.cpu(),
                "edges": {r: {"src": a.cpu(), "dst": b.cpu()} for r, (a, b) in self._added.edges.items()}},
            "tables": None if self._tables is None else
            {name: {"indptr": c.indptr.cpu(), "indices": c.indices.cpu(), "num_src": c.num_src}
             for name, c in self._tables.items()},
            "train_edges": None if self._edges is None else
            {r: {"src": torch.from_numpy(e.src.astype(np.int64)), "dst": torch.from_numpy(e.dst.astype(np.int64))}
             for r, e in self._edges.items()},
            "features": _features_state(self.features),
            "cold_start": self.cold_start.state() if self.cold_start.towers else None}
        save_checkpoint(path, state)
        return path


def _copy_weights_share_graph(module: nn.Module) -> nn.Module:
    """A copy of ``module`` with its own parameters; its graph state (tables, sparse adjacencies:
    read-only, and sparse tensors cannot be deep-copied) is shared with the original."""
    memo: Dict[int, Any] = {}
    for part in module.modules():
        for name in getattr(part, "_graph_state", ()):
            state = getattr(part, name)
            memo[id(state)] = state
        for value in vars(part).values():
            if isinstance(value, torch.Tensor) and value.layout != torch.strided:
                memo[id(value)] = value
    return copy.deepcopy(module, memo)


def _check_relation(relation: str) -> None:
    if relation not in RELATIONS:
        raise DataError(f"unknown relation {relation!r}.", fix=f"use one of {', '.join(RELATIONS)}.")


def sparse_pair_term(term):
    """A model's pair term (:meth:`~mmsc_dgl.models.base.Recommender.pair_term`) in sparse form
    (:data:`~mmsc_dgl.eval.retrieval.SparseTerm`), what a candidate stage re-ranks with, or
    ``None`` for a model whose score is a dot product alone (``term`` is ``None``)."""
    if term is None:
        return None
    sparse = getattr(term, "sparse", None)
    if sparse is None:
        raise ValueError("this pair term has no sparse form to re-rank candidates with")
    return sparse


def catalog_pair_term(pairwise, num_items: int, block_rows: int = 1 << 20):
    """``f(queries [B]) -> [B, N]``: a model's pair term
    (:meth:`~mmsc_dgl.models.base.Recommender.pair_term`) against every item, or ``None`` for a
    model whose score is a dot product alone (``pairwise`` is ``None``)."""
    if pairwise is None:
        return None
    whole = getattr(pairwise, "catalog", None)
    if whole is not None:  # sparse: the term's cost is the paths, not B x N
        return whole

    def term(part: torch.Tensor) -> torch.Tensor:
        every = torch.arange(num_items, device=part.device)
        block = max(1, block_rows // max(num_items, 1))
        return torch.cat([pairwise(p, every.expand(p.numel(), num_items)) for p in part.split(block)])
    return term


def _features_state(features: Any) -> Optional[dict]:
    if features is None:
        return None
    if getattr(features, "learnable", False):
        return {"kind": "categories", "ids": features.ids, "mask": features.mask,
                "vocabulary": list(features.vocabulary), "source": features.source}
    return {"kind": "frozen", "tokens": features.tokens, "mask": features.mask, "source": features.source}


def _features_from_state(state: Optional[dict]) -> Optional[Any]:
    if state is None:
        return None
    if state["kind"] == "categories":
        from mmsc_dgl.features.categorical import CategoricalFeatures
        return CategoricalFeatures(state["ids"], state["mask"], list(state["vocabulary"]), source=state["source"])
    return ContentFeatures(state["tokens"], state["mask"], source=state["source"])


def load_saved_model(path: Union[str, os.PathLike], device: Optional[str] = None) -> ItemModel:
    """A model file written by :meth:`ItemModel.save`, ready to answer queries (needs neither
    DGL nor the dataset).  :func:`mmsc_dgl.load_model` also takes a run directory."""
    from mmsc_dgl.train.build import resolve_device, resolve_impl
    from mmsc_dgl.train.checkpoint import load_checkpoint, state_dict_problem
    path = Path(path)
    state = load_checkpoint(path)
    if state.get("format") != FORMAT:
        raise DataError("not a saved mmsc_dgl model.", path=path,
                        fix="pass a file written by model.save(), or a run directory.")
    if state.get("format_version") != FORMAT_VERSION:
        raise DataError(f"saved-model format {state.get('format_version')} is not the supported {FORMAT_VERSION}.",
                        path=path, fix="save it again with this version of mmsc_dgl.")
    target = resolve_device(device or "auto")
    from mmsc_dgl.models.registry import build_model
    try:  # every part of a damaged file is a one-line error naming the file and the part
        config = TrainConfig.from_stored(json.loads(state["config"]))
        tables = None if state["tables"] is None else {
            name: CSR(t["indptr"], t["indices"], int(t["num_src"])) for name, t in state["tables"].items()}
        edges = None if state["train_edges"] is None else {
            r: _Edges(e["src"].numpy(), e["dst"].numpy()) for r, e in state["train_edges"].items()}
        features = _features_from_state(state["features"])
        cold_start = ColdStart.from_state(state.get("cold_start"), k=config.cold_neighbors)
        num_items = len(state["item_ids"])
        # _Edges holds the src and dst arrays, all that a model reads of its training edges
        model = build_model(config.architecture, num_items, config.model, tables=tables,
                            train_edges=cast("Optional[Mapping[str, RelationEdges]]", edges),
                            features=features, impl=resolve_impl(config.impl, target, import_dgl=False))
    except (ValueError, KeyError, TypeError, IndexError, AttributeError, RuntimeError) as err:  # DataError is a ValueError
        reason = err.reason if isinstance(err, DataError) else f"{type(err).__name__}: {err}"
        raise DataError(f"the saved model is damaged ({reason}).", path=path,
                        fix="save it again from its run (load_model(RUN_DIR).save(path)).") from None
    try:
        for r in RELATIONS:
            model.load_state_dict(state["states"][r])
    except (RuntimeError, KeyError, TypeError) as err:
        raise DataError(f"the saved weights do not fit the saved config ({state_dict_problem(err)}).", path=path,
                        fix="save the model again.") from None
    model.to(target).eval()
    out = ItemModel(model, state["states"], state["item_ids"], config, features, state.get("titles"),
                    tables, edges, cold_start=cold_start.to(target))
    added = state.get("added")
    if added:
        try:
            out._added = _Added(list(added["ids"]), added["content"].float(), list(added["titles"]),
                                {r: (added["edges"][r]["src"], added["edges"][r]["dst"]) for r in RELATIONS})
            if out._added.content.shape != (len(out._added.ids), features.dim if features is not None else 0):
                raise ValueError(f"content of {tuple(out._added.content.shape)} for {len(out._added.ids)} items")
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise DataError(f"the saved model is damaged (its added items: {type(err).__name__}: {err}).", path=path,
                            fix="save it again from its run, and add the items again.") from None
        out.item_ids = out.item_ids + out._added.ids
        if out.titles is not None:
            out.titles = out.titles + out._added.titles
    return out
