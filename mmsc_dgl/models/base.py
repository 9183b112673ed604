"""The contract every model answers, so baselines share the training and evaluation harness
(RecBole's ``calculate_loss`` / ``predict`` / ``full_sort_predict``, here ``loss`` / ``score`` /
``embed``)."""
from __future__ import annotations

import abc
import itertools
from typing import Any, Dict, Optional, Tuple

import torch
from torch import nn

from mmsc_dgl.schema import RELATIONS
from mmsc_dgl.ops.candidates import candidate_dot


class Recommender(abc.ABC):
    """``loss(batch)`` for training, ``score`` for pairs, ``embed`` for ranking and retrieval.

    Class attributes a model may override:

    * ``trainable`` -- False for models with nothing to learn (content cosine, neighbourhood
      heuristics): the harness evaluates them without a training loop.
    * ``has_embeddings`` -- False when ``score`` is not a dot product of per-item rows
      (neighbourhood heuristics): evaluation then ranks with ``score`` and ``embed`` raises.
    * ``content_only`` -- True when the embedding *is* the item's content, so cold items need
      no nearest-neighbour fill-in (Eq. 12 of MMSC is for behaviour embeddings).
    """

    trainable: bool = True
    has_embeddings: bool = True
    content_only: bool = False

    @abc.abstractmethod
    def loss(self, batch: dict) -> Dict[str, torch.Tensor]:
        """Loss parts for a training batch; ``"total"`` is what the optimiser minimises.

        ``batch`` holds, per relation present, ``(src [B], pos [B], neg [B, M])`` node ids, and
        ``"generator"``, a ``torch.Generator`` for any randomness of the step."""

    @abc.abstractmethod
    def score(self, src: torch.Tensor, dst: torch.Tensor, relation: str) -> torch.Tensor:
        """Scores of item pairs under ``relation`` (higher: more likely related)."""

    @abc.abstractmethod
    def embed(self, relation: str) -> torch.Tensor:
        """Every item's representation for ``relation`` [num_items, dim]; ``score`` of two items
        is the dot product of their rows (plus the pairwise term of :meth:`ranking_scorer`, for
        a model that has one)."""

    def embed_all(self) -> Dict[str, torch.Tensor]:
        """Both relations' embeddings (models that share work between relations override this)."""
        return {r: self.embed(r) for r in RELATIONS}

    def signature(self, relation: str) -> Optional[torch.Tensor]:
        """The sign of each embedding dimension in the score of ``relation``, ``[dim]`` of
        +1/-1, or ``None`` for a plain dot product.  With one, the score of two items is
        ``<e_i, e_j * signature>`` (a pseudo-Euclidean product: an item need not be its own best
        match, which a dot product forces, and complements are not copies of each other);
        :meth:`targets` gives the rows to score against."""
        return None

    def targets(self, relation: str, embedding: torch.Tensor) -> torch.Tensor:
        """The rows that queries (rows of ``embedding``) are scored against: ``embedding``
        itself, or ``embedding * signature`` for a model with a :meth:`signature`."""
        sign = self.signature(relation)
        return embedding if sign is None else embedding * sign.to(embedding.device, embedding.dtype)

    def content_rows(self, relation: str, content: torch.Tensor) -> torch.Tensor:
        """For a ``content_only`` model, the rows of items described by their pooled content
        ``[M, D]`` alone (new items: :meth:`ItemModel.add_items
        <mmsc_dgl.runs.item_model.ItemModel.add_items>`); the content itself by default."""
        return content

    def pair_term(self, relation: str, extra_edges=None, num_items: Optional[int] = None):
        """The part of ``score`` beyond the dot product of embedding rows, as ``f(src [B],
        candidates [B, K]) -> [B, K]`` (MMSC's path evidence), or ``None`` when there is none.
        It keeps the weights the model holds when it is asked for.  ``extra_edges``: edges the
        model never trained on that the term may count (per relation, ``(src, dst)`` node ids,
        over ``num_items`` items: new items' first edges); a term without a graph ignores them."""
        return None

    def after_training(self, relation_states: Dict[str, dict], evaluator) -> Tuple[Dict[str, dict], dict]:
        """What a model does once training has ended, before its weights are saved and tested.

        Args:
            relation_states: per relation, the weights of its selected epoch (not modified).
            evaluator: the run's :class:`~mmsc_dgl.eval.evaluator.Evaluator` (its validation
                split, negatives and seed: anything chosen here is chosen on validation).

        Returns:
            ``(states, report)``: the weights to save and test (copies where changed) and what
            was chosen, which the run writes to ``metrics.json`` under each key of ``report``.
            By default nothing happens: ``(relation_states, {})``.  MMSC chooses its
            path-evidence weights here (:mod:`mmsc_dgl.models.calibration`).
        """
        return relation_states, {}

    def ranking_scorer(self, relation: str, embedding: torch.Tensor, candidates: Optional[torch.Tensor] = None,
                       extra_edges=None):
        """What ranks candidates for ``relation``, given that relation's ``embedding`` rows: the
        matrix itself (scores are dot products), or, for a model with a :meth:`pair_term`, a
        function ``f(src [B], candidates [B, K]) -> scores [B, K]`` adding it.  ``candidates``:
        other rows for items in the candidate role (default: ``embedding``; cold items are
        queried by one placement and ranked as candidates by another).  ``extra_edges``: edges
        the pair term also counts (:meth:`pair_term`; the rows are the caller's)."""
        term = (self.pair_term(relation) if extra_edges is None else
                self.pair_term(relation, extra_edges, embedding.shape[0]))
        targets = self.targets(relation, embedding if candidates is None else candidates)
        if term is None and targets is embedding:
            return embedding

        @torch.no_grad()
        def scores(src: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
            dots = candidate_dot(embedding, src, cand, targets)
            return dots if term is None else dots + term(src, cand)

        @torch.no_grad()
        def catalog(src: torch.Tensor) -> torch.Tensor:
            """Every item as a candidate of each query [B, num_items], without gathering rows
            (by the term's own ``catalog`` where it has one)."""
            dots = embedding[src] @ targets.T
            if term is None:
                return dots
            whole = getattr(term, "catalog", None)
            if whole is not None:
                return dots + whole(src)
            every = torch.arange(embedding.shape[0], device=src.device).expand(len(src), -1)
            return dots + term(src, every)
        setattr(scores, "catalog", catalog)
        return scores


class FullGraphRecommender(Recommender):
    """For models that encode the whole catalog at every step (GAT, DecGCN, DGL's HAN recipe):
    define ``encode_all() -> {relation: [num_items, dim]}`` (the rows whose dot products are the
    scores) and ``config.margin``; the loss is MMSC's triplet loss over the batch's edges."""

    config: Any  # the model's settings; the loss reads ``margin``

    def encode_all(self) -> Dict[str, torch.Tensor]:
        raise NotImplementedError

    def loss(self, batch: dict) -> Dict[str, torch.Tensor]:
        from mmsc_dgl.models.losses import triplet_loss
        z = self.encode_all()
        total = torch.zeros((), device=z[RELATIONS[0]].device)
        for r in RELATIONS:
            if r in batch:
                src, pos, neg = batch[r]
                e = z[r]
                total = total + triplet_loss((e[src] * e[pos]).sum(-1), (e[src].unsqueeze(1) * e[neg]).sum(-1),
                                             self.config.margin)
        return {"triplet": total, "total": total}

    def score(self, src: torch.Tensor, dst: torch.Tensor, relation: str) -> torch.Tensor:
        z = self.encode_all()[relation]
        return (z[src] * z[dst]).sum(-1)

    @torch.no_grad()
    def embed(self, relation: str) -> torch.Tensor:
        return self.encode_all()[relation]

    @torch.no_grad()
    def embed_all(self) -> Dict[str, torch.Tensor]:
        return self.encode_all()


class GraphStateModule(nn.Module):
    """A module whose graph state is not parameters or buffers (dicts of CSR tables, sparse
    matrices, DGL graphs: anything with ``.to(device)``) and must follow ``.to()``/``.cuda()``.
    Subclasses name those attributes in ``_graph_state``."""

    _graph_state: Tuple[str, ...] = ()

    def _apply(self, fn, *args, **kwargs):
        out = super()._apply(fn, *args, **kwargs)
        # Where the module now lives: its parameters say so.  Probing ``fn`` with a CPU tensor
        # would not (``.half()`` keeps a CPU tensor on the CPU, and moved a CUDA model's tables).
        anchor = next(itertools.chain(self.parameters(), self.buffers()), None)
        if anchor is None:
            state = next((v for name in self._graph_state for v in getattr(self, name).values()), None)
            anchor = fn(torch.zeros(1, device=getattr(state, "device", "cpu")))
        device = anchor.device
        for name in self._graph_state:
            setattr(self, name, {k: v.to(device) for k, v in getattr(self, name).items()})
        return out


def reset_children(module: nn.Module) -> None:
    """Re-initialise every part of ``module``: each child that has ``reset_parameters`` resets
    itself (its own way, e.g. ``ItemInput``'s small id embeddings); containers are walked."""
    for child in module.children():
        if hasattr(child, "reset_parameters"):
            child.reset_parameters()
        else:
            reset_children(child)


class NothingToLearn(RuntimeError):
    """Raised by ``loss`` of a model whose ``trainable`` is False."""
