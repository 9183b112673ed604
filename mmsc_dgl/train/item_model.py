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
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from mmsc_dgl.schema import RELATIONS
from mmsc_dgl.config import TrainConfig
from mmsc_dgl.errors import DataError
from mmsc_dgl.eval.cold_start import ColdStart
from mmsc_dgl.features.base import ContentFeatures
from mmsc_dgl.ops import CSR

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
        self._embeddings, self._targets = {}, {}
        return self

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
                                        fix="pass an external id of the catalog, an int node id, or use "
                                            "embed_new() for an item the model has not seen.")
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

    def embed(self, relation: str) -> torch.Tensor:
        """Every item's embedding for ``relation`` [num_items, dim] (computed once, then kept)."""
        if relation not in self._embeddings:
            model = self.for_relation(relation)
            if not getattr(model, "has_embeddings", True):
                raise DataError(f"{self.config.architecture} scores pairs and has no item embeddings.",
                                fix="use score(), or an embedding model (mmsc, lightgcn, ...).")
            with torch.no_grad():
                self._embeddings[relation] = model.embed(relation)
        return self._embeddings[relation]

    def targets(self, relation: str) -> torch.Tensor:
        """The rows queries are scored against for ``relation``: :meth:`embed`'s, or, for a
        model with a signature (``complement_signature``), those rows times it.  A search index
        for :meth:`topk` is built over these."""
        if relation not in self._targets:  # computed once, like embed: topk asks for it every query
            self._targets[relation] = self.for_relation(relation).targets(relation, self.embed(relation))
        return self._targets[relation]

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
        return self.for_relation(relation).score(src, dst, relation)

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
                                          sparse_term=sparse_pair_term(model, relation), targets=self.targets(relation))
        else:
            term = catalog_pair_term(model, relation, self.num_items)
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
            "item_ids": self.item_ids, "titles": self.titles,
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


def sparse_pair_term(model, relation: str):
    """The pairwise part of ``model``'s scores in sparse form
    (:data:`~mmsc_dgl.eval.retrieval.SparseTerm`), what a candidate stage re-ranks with, or
    ``None`` for a model whose score is a dot product alone."""
    term = model.pair_term(relation)
    if term is None:
        return None
    sparse = getattr(term, "sparse", None)
    if sparse is None:
        raise ValueError(f"{type(model).__name__}'s pair term has no sparse form to re-rank candidates with")
    return sparse


def catalog_pair_term(model, relation: str, num_items: int, block_rows: int = 1 << 20):
    """``f(queries [B]) -> [B, N]``: the pairwise part of ``model``'s scores against every item
    (:meth:`~mmsc_dgl.models.base.Recommender.pair_term`), or ``None`` for a model whose score
    is a dot product alone."""
    pairwise = model.pair_term(relation)
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
        model = build_model(config.architecture, num_items, config.model, tables=tables, train_edges=edges,
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
    return ItemModel(model, state["states"], state["item_ids"], config, features, state.get("titles"),
                     tables, edges, cold_start=cold_start.to(target))
