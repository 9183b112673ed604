"""Ranking evaluation of item embeddings against the split's seeded negatives, and cold start."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, Mapping, Optional, Protocol, Union

import numpy as np
import torch
from torch.nn import functional as F

from mmsc_dgl.schema import RELATIONS
from mmsc_dgl.data.negatives import NegativeSampler
from mmsc_dgl.eval.ranking import ranking_metrics, ranks, worst_if_nan
from mmsc_dgl.ops.candidates import candidate_dot
from mmsc_dgl.ops.neighbours import approximate, ivf_nearest

if TYPE_CHECKING:  # annotations only: the GPU trainer validates without pyarrow
    from mmsc_dgl.data.edges import RelationEdges


def query_subset(count: int, limit: Optional[int], seed: int) -> np.ndarray:
    """A fixed, seeded subset of query rows (all of them without a limit)."""
    if limit is None or count <= limit:
        return np.arange(count)
    return np.sort(np.random.default_rng([seed, 17]).choice(count, size=limit, replace=False))


class QueryShare(Protocol):
    """How processes that hold the same model split a split's queries (data-parallel training,
    :class:`~mmsc_dgl.distributed.training.ShareQueries`): each ranks ``part(query)``, and
    ``whole`` returns every query's rank in the order of ``query`` (``ranks`` [part, ...] gives
    [count, ...]: several ranks per query, e.g. the calibration's one per setting, travel in one
    exchange).  Negatives are drawn per query row, so each query's rank is the one a single
    process computes."""

    def part(self, query: np.ndarray) -> np.ndarray: ...

    def whole(self, ranks: torch.Tensor, count: int) -> torch.Tensor: ...


PairScores = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``f(src [B], candidates [B, K]) -> scores [B, K]``: how a model scores each query's candidates."""


def embedding_scores(embedding: torch.Tensor) -> PairScores:
    """Dot products of embedding rows, as :data:`PairScores`."""
    def score(src: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
        return candidate_dot(embedding, src, cand)
    return score


@torch.no_grad()
def rank_queries(scorer: Union[torch.Tensor, PairScores], edges: RelationEdges, query: np.ndarray,
                 sampler: NegativeSampler, relation: str, split: str, batch_size: int = 2048,
                 device: Optional[torch.device] = None) -> torch.Tensor:
    """Rank of each held-out edge's target among its negatives.  ``scorer`` is an embedding
    matrix (dot products) or a :data:`PairScores` function."""
    if isinstance(scorer, torch.Tensor):
        device = scorer.device
        scorer = embedding_scores(scorer)
    device = device or torch.device("cpu")
    out = []
    for start in range(0, len(query), batch_size):
        q = query[start: start + batch_size]
        src = torch.from_numpy(edges.src[q]).to(device)
        neg = torch.from_numpy(sampler.sample(relation, split, q, edges.src[q])).to(device)
        cand = torch.cat([torch.from_numpy(edges.dst[q]).to(device).unsqueeze(1), neg], dim=1)
        scores = scorer(src, cand)
        out.append(ranks(scores[:, 0], scores[:, 1:]).cpu())
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


CATALOG_CELLS = 1 << 22
"""Most query-by-item scores held at once when ranking against the whole catalog."""


def catalog_scores(scorer: Union[torch.Tensor, PairScores], src: torch.Tensor, num_items: int) -> torch.Tensor:
    """Scores of every item for each query of ``src`` [B, num_items]: a matrix product for an
    embedding matrix, the scorer's own ``catalog`` when it has one (an embedding plus a pair
    term), else the scorer over every item as candidates."""
    if isinstance(scorer, torch.Tensor):
        return scorer[src] @ scorer.T
    whole = getattr(scorer, "catalog", None)
    if whole is not None:
        return whole(src)
    return scorer(src, torch.arange(num_items, device=src.device).expand(len(src), num_items))


@torch.no_grad()
def rank_full_catalog(scorer: Union[torch.Tensor, PairScores], edges: RelationEdges, query: np.ndarray,
                      sampler: NegativeSampler, relation: str, device: Optional[torch.device] = None) -> torch.Tensor:
    """Rank of each held-out edge's target among every item of the catalog, filtered as the
    sampled protocol is: the query item and its other true neighbours under ``relation``
    (training and held-out edges) are not candidates.  Ties count against the target."""
    if isinstance(scorer, torch.Tensor):
        device = scorer.device
    device = device or torch.device("cpu")
    n = sampler.num_items
    block = max(1, CATALOG_CELLS // max(n, 1))
    out = []
    for start in range(0, len(query), block):
        q = query[start: start + block]
        src_np, dst_np = edges.src[q].astype(np.int64), edges.dst[q].astype(np.int64)
        src, dst = torch.from_numpy(src_np).to(device), torch.from_numpy(dst_np).to(device)
        scores = catalog_scores(scorer, src, n)
        rows = torch.arange(len(q), device=device)
        target = scores[rows, dst]
        owner, known = sampler.neighbours(relation, src_np)
        excluded = torch.zeros(scores.shape, dtype=torch.bool, device=device)
        excluded[torch.from_numpy(owner).to(device), torch.from_numpy(known).to(device)] = True
        excluded[rows, src] = True
        excluded[rows, dst] = True  # the target does not outrank itself
        beaten = worst_if_nan(scores, against=True) >= worst_if_nan(target, against=False).unsqueeze(1)
        out.append((1 + (beaten & ~excluded).sum(1)).cpu())
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


DEGREE_BUCKETS = (("0", 0, 0), ("1-2", 1, 2), ("3-10", 3, 10), (">10", 11, None))
"""Training-degree buckets of query items (name, lowest, highest or ``None``): the long tail."""


def degree_buckets(degree: np.ndarray) -> np.ndarray:
    """The :data:`DEGREE_BUCKETS` name of each degree.

    Example:
        >>> degree_buckets(np.array([0, 2, 3, 11])).tolist()
        ['0', '1-2', '3-10', '>10']
    """
    out = np.empty(len(degree), dtype=object)
    for name, low, high in DEGREE_BUCKETS:
        out[(degree >= low) & ((degree <= high) if high is not None else True)] = name
    return out


def evaluate_embeddings(embeddings: Mapping[str, Union[torch.Tensor, PairScores]],
                        split_edges: Mapping[str, RelationEdges], sampler: NegativeSampler, split: str,
                        ks: Iterable[int] = (10,), max_queries: Optional[int] = None, seed: int = 0,
                        device: Optional[torch.device] = None, full_catalog: bool = False,
                        buckets: Optional[np.ndarray] = None,
                        share: Optional[QueryShare] = None) -> Dict[str, Dict[str, float]]:
    """HR/MRR/NDCG@K per relation for one split (``val``, ``test`` or ``cold``).  Each relation
    is scored by an embedding matrix or a :data:`PairScores` function (models without
    embeddings, such as neighbourhood heuristics).  Each held-out target is ranked against the
    split's sampled negatives, or with ``full_catalog`` against every item
    (:func:`rank_full_catalog`).  ``buckets`` (a label per item, e.g. :func:`degree_buckets`
    of training degrees) adds ``by_bucket``: the metrics of the queries whose source item
    carries each label.  ``share``: this process ranks its part of the queries only, and the
    metrics are those of every query (:class:`QueryShare`)."""
    ks = list(ks)
    result: Dict[str, Dict[str, Any]] = {}
    for relation in RELATIONS:
        edges = split_edges[relation]
        query = query_subset(len(edges), max_queries, seed)
        mine = query if share is None else share.part(query)
        if full_catalog:
            r = rank_full_catalog(embeddings[relation], edges, mine, sampler, relation, device=device)
        else:
            r = rank_queries(embeddings[relation], edges, mine, sampler, relation, split, device=device)
        if share is not None:
            r = share.whole(r, len(query))
        result[relation] = {**ranking_metrics(r, ks), "queries": int(len(query))}
        if buckets is not None:
            label = np.asarray(buckets)[edges.src[query]]
            known = [b for b, *_ in DEGREE_BUCKETS]
            order = [b for b in known if (label == b).any()] + sorted(set(label.tolist()) - set(known), key=str)
            result[relation]["by_bucket"] = {
                str(b): {**ranking_metrics(r[torch.from_numpy(np.asarray(label == b, dtype=bool))], ks),
                         "queries": int((label == b).sum())} for b in order}
        if len(query) == 0:  # the metrics are NaN in memory and null in JSON; say why
            result[relation]["reason"] = f"no held-out {relation} edges in the {split} split"
    return result


SEARCH_CELLS = 1 << 26
"""Most similarities held at once by the exact content search (256 MiB of float32).  It was 2^28
(1 GiB): at 100k items the final evaluation's search for Eq. 12 peaked 1.1 GB above the process,
the largest transient of a distributed trainer's evaluation (docs/distributed.md).  Not
smaller: each block reads every candidate's row once, so at a million candidates a block of
under about 64 queries would spend its time reading them."""


@torch.no_grad()
def nearest_content(content: torch.Tensor, new_content: torch.Tensor, k: int = 10, batch_size: int = 4096,
                    candidates: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The ``k`` catalog items nearest in content space (cosine) to each row of ``new_content``
    [M, D], among ``candidates`` (a bool mask; default: the items with content): item ids
    [M, min(k, candidates)], nearest first, ``-1`` in a slot an approximate search could not
    fill.  Exact, in blocks of at most :data:`SEARCH_CELLS` similarities; above
    :data:`~mmsc_dgl.ops.neighbours.EXACT_SEARCH_UP_TO` similarities (a million candidates and
    ten thousand new items) through a FAISS IVF index where ``faiss`` imports
    (:func:`~mmsc_dgl.ops.neighbours.ivf_nearest`).  One search serves every relation: what
    :func:`nearest_content_mean` averages."""
    from mmsc_dgl.eval.retrieval import grouped_topk
    if candidates is None:
        candidates = content.abs().sum(1) > 0
    warm = torch.nonzero(candidates).flatten()
    take = min(k, warm.numel())
    if take == 0 or new_content.shape[0] == 0:
        return torch.zeros(new_content.shape[0], take, dtype=torch.int64, device=content.device)
    new = F.normalize(new_content, dim=1)
    if approximate(new.shape[0], warm.numel(), "Eq. 12's nearest items"):
        found = ivf_nearest(F.normalize(content[warm], dim=1), new, take, "Eq. 12's nearest items").to(warm.device)
        return torch.where(found >= 0, warm[found.clamp(min=0)], found)
    c_warm_t = F.normalize(content[warm], dim=1).t().contiguous()
    rows = max(1, min(batch_size, SEARCH_CELLS // max(warm.numel(), 1)))
    return torch.cat([warm[grouped_topk(new[start: start + rows] @ c_warm_t, take, 64)[1]]
                      for start in range(0, new.shape[0], rows)])


@torch.no_grad()
def nearest_content_mean(embeddings: torch.Tensor, content: torch.Tensor, new_content: torch.Tensor,
                         k: int = 10, batch_size: int = 4096,
                         candidates: Optional[torch.Tensor] = None,
                         nearest: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Each row of ``new_content`` gets the mean embedding of its ``k`` catalog items nearest in
    content space (cosine), on the scale of ``embeddings`` (no normalisation): items outside
    the catalog (``ItemModel.embed_new``), and cold items (:class:`~mmsc_dgl.eval.cold_start.ColdStart`).
    Only ``candidates`` (a bool mask; default: the items with content, i.e. a non-zero row) are
    borrowed from; a new item without content gets zeros.  ``nearest``: the items'
    :func:`nearest_content`, where the caller has searched already (another relation's rows);
    a slot an approximate search left unfilled is left out of the mean.

    Example:
        >>> emb = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
        >>> nearest_content_mean(emb, torch.eye(2), torch.tensor([[0.1, 1.0]]), k=1).tolist()
        [[0.0, 2.0]]
    """
    if nearest is None:
        nearest = nearest_content(content, new_content, k, batch_size, candidates)
    out = torch.zeros(new_content.shape[0], embeddings.shape[1], dtype=embeddings.dtype, device=embeddings.device)
    if nearest.shape[0] == 0 or nearest.shape[1] == 0:
        return out
    nearest = nearest.to(embeddings.device)
    for start in range(0, nearest.shape[0], batch_size):
        ids = nearest[start: start + batch_size]
        if bool((ids >= 0).all()):
            out[start: start + batch_size] = embeddings[ids].mean(1)
        else:
            ok = (ids >= 0).to(embeddings.dtype)
            out[start: start + batch_size] = ((embeddings[ids.clamp(min=0)] * ok.unsqueeze(-1)).sum(1)
                                              / ok.sum(1, keepdim=True).clamp(min=1))
    real = new_content.abs().sum(1) > 0
    return out * real.unsqueeze(1).to(out.dtype)
