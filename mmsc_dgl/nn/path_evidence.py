"""Pairwise structural evidence: how many (degree-weighted) two-hop meta-paths join two items,
and whether the pair is already an edge of another relation, turned into a learned score term
per relation (as neural common-neighbour models do: NCN, BUDDY, SEAL).  An embedding dot
product cannot count shared neighbours; this term does.
"""
from __future__ import annotations

import copy
import math
from itertools import product
from typing import List, Optional, Protocol, Sequence, Tuple, TypeGuard

import torch
from torch import nn

from mmsc_dgl.ops.neighbours import content_neighbours
from mmsc_dgl.ops.paths import PairTable, PathCounter, pair_table, with_edges

SIMILAR = "similar"
"""The name of the content-neighbour graph (MMSC's ``content_paths``): not a relation, so never
a link bonus of the calibration and never dropped by ``evidence_dropout``."""



def look_alike_edges(counter: PathCounter, content: torch.Tensor, k: int,
                     sources: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """The :data:`SIMILAR` graph's edges: each source item's ``k`` nearest items in content space
    (cosine of ``content`` [N, D], pooled features) among the items with an edge in one of
    ``counter``'s relation graphs (a look-alike without edges leads no path anywhere).  The rule
    of training (MMSC's ``content_paths``) and of items added afterwards
    (:meth:`ItemModel.add_items <mmsc_dgl.runs.item_model.ItemModel.add_items>`): ``content`` may
    hold more rows than the counter has items (the added ones, never candidates).
    ``sources``: a bool mask of the items to link (default: all with content)."""
    has_edge = torch.zeros(content.shape[0], dtype=torch.bool)
    for name in counter.graphs:
        if name != SIMILAR:
            degrees = counter.degrees(name).cpu()
            has_edge[: degrees.numel()] |= degrees > 0
    return content_neighbours(content.float().cpu(), k, candidates=has_edge, sources=sources)


ROW_BLOCK = 1 << 22
"""Most dense path counts (rows x items) held at once while ranking."""


class PathEvidence(nn.Module):
    r"""For a pair :math:`(i, j)` and each two-hop meta-path :math:`xy` over the relation graphs
    :math:`x, y`, the Adamic-Adar-weighted path count :math:`C_{xy}(i, j)` (see
    :mod:`mmsc_dgl.ops.paths`); per target relation :math:`r` a small MLP maps
    :math:`\log(1 + C(i, j))` to a score term :math:`g_r(i, j)`.

    With ``links`` the MLP of relation :math:`r` also sees :math:`A_x(i, j)` for every graph
    :math:`x \ne r`: whether the pair is a training edge of another relation (on Amazon data a
    quarter to a half of the held-out complements are also-viewed pairs, and the reverse).  A
    pair's own relation is never a feature: every training pair is an edge of it and no
    held-out pair is, so the term would learn what cannot transfer.  The counts keep a column
    per graph; relation :math:`r`'s MLP zeroes its own.

    Args:
        counter: path counts over the training graphs (:class:`~mmsc_dgl.ops.paths.PathCounter`).
        relations: the target relations (one MLP each).
        hidden: width of each MLP.
        links: add the other relations' direct edges as features.
    """

    def __init__(self, counter: PathCounter, relations: Sequence[str], hidden: int = 32, links: bool = True):
        super().__init__()
        self.counter = counter
        names = list(counter.graphs)
        self.metapaths: List[Tuple[str, str]] = list(product(names, names))
        self.links: List[str] = names if links else []
        width = len(self.metapaths) + len(self.links)
        self.mlp = nn.ModuleDict({r: nn.Sequential(nn.Linear(width, hidden), nn.ReLU(),
                                                   nn.Linear(hidden, 1)) for r in relations})
        # 1 where relation r may see a feature: every path count, and the links of other graphs.
        for r in relations:
            keep = torch.ones(width)
            keep[len(self.metapaths):] = torch.tensor([float(x != r) for x in self.links])
            self.register_buffer(f"_keep_{r}", keep, persistent=False)
            linked = keep.clone()
            linked[: len(self.metapaths)] = 0
            linked[len(self.metapaths):] *= torch.tensor([float(x != SIMILAR) for x in self.links])
            self.register_buffer(f"_linked_{r}", linked, persistent=False)  # the other relations' links
            # Set after training (mmsc_dgl.models.calibration) and saved with the weights: a bonus
            # for a pair that is an edge of another relation, a weight on log(1 + its paths), and
            # which meta-paths those paths are (1 each: all of them until calibrated).
            self.register_buffer(f"link_bonus_{r}", torch.zeros(()))
            self.register_buffer(f"path_bonus_{r}", torch.zeros(()))
            self.register_buffer(f"path_mask_{r}", torch.ones(len(self.metapaths)))
        # What a pair whose source has no edge of any relation can still have: the paths that
        # leave it through its content neighbours, and those links.
        self.register_buffer("_edgeless", torch.tensor([float(x == SIMILAR) for x, _ in self.metapaths]
                                                       + [float(x == SIMILAR) for x in self.links]),
                             persistent=False)
        # Every pair's features, once: a step looks its pairs up instead of walking their paths
        # (None where the table would not fit PAIR_TABLE_BYTES; then they are walked).
        self._table: Optional[PairTable] = pair_table(counter, self.metapaths, self.links)
        self._register_load_state_dict_pre_hook(self._pad_legacy)

    def _pad_legacy(self, state_dict, prefix, *args) -> None:
        """Weights saved before the link features existed load with zero weight on them, and
        weights saved before the calibration with none: the same function as before."""
        for r, mlp in self.mlp.items():
            for name in ("link_bonus", "path_bonus"):
                state_dict.setdefault(f"{prefix}{name}_{r}", torch.zeros(()))
            state_dict.setdefault(f"{prefix}path_mask_{r}", torch.ones(len(self.metapaths)))  # before the choice of paths
            key = f"{prefix}mlp.{r}.0.weight"
            saved = state_dict.get(key)
            width = mlp[0].in_features
            if saved is not None and saved.shape[1] < width:
                state_dict[key] = torch.cat([saved, saved.new_zeros(saved.shape[0], width - saved.shape[1])], 1)

    def reset_parameters(self) -> None:
        for mlp in self.mlp.values():
            for layer in mlp:
                if hasattr(layer, "reset_parameters"):
                    layer.reset_parameters()

    def _move(self, device) -> None:
        if self.counter.device != torch.device(device):
            self.counter = self.counter.to(device)
            self._table = None if self._table is None else self._table.to(device)

    @property
    def names(self) -> List[str]:
        """Each feature's name: a meta-path (``substitute-complement``), then a link
        (``substitute``: the pair is a training edge of that relation)."""
        return [f"{x}-{y}" for x, y in self.metapaths] + self.links

    @torch.no_grad()
    def counts(self, src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
        """Raw features [*shape, num_features] of pairs of any (equal) shape: the weighted path
        counts, then the 0/1 links (:attr:`names`)."""
        self._move(src.device)
        if self._table is not None:
            return self._table.lookup(src, dst)
        counter = self.counter
        if _fetches(counter):  # graphs on DistDGL's servers: count over the pairs' neighbourhood
            counter, _, (src, dst) = counter.around(src, dst)
        return torch.stack([counter.pairs(x, y, src, dst) for x, y in self.metapaths]
                           + [counter.linked(x, src, dst) for x in self.links], -1)

    @torch.no_grad()
    def candidate_counts(self, src: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """Counts [B, K, num_metapaths] of each query ``src[b]`` with its ``candidates[b]``:
        dense rows of path counts, gathered (cheaper than pairs when K is large)."""
        self._move(src.device)
        n = self.counter.num_items
        block = max(1, ROW_BLOCK // max(n, 1))
        out = []
        for s, c in zip(src.split(block), candidates.split(block)):
            hops = {x: self.counter.first_hop(x, s) for x in {x for x, _ in self.metapaths}}
            out.append(torch.stack([self.counter.rows(x, y, s, hop=hops[x]).gather(1, c)
                                    for x, y in self.metapaths]
                                   + [self.counter.linked(x, s.unsqueeze(1).expand_as(c), c) for x in self.links], -1))
        return torch.cat(out) if out else torch.zeros(0, candidates.shape[1], len(self.names), device=src.device)

    @torch.no_grad()
    def reached(self, src: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The pairs of each query ``src[b]`` with every item that has a non-zero feature (a
        two-hop path of some meta-path, or an edge of some graph), sparse: ``(row [P], col [P],
        features [P, num_features])``, ``row`` an index into ``src``.  Every other item's
        features are all zero.  Costs the paths, not ``len(src) x N``."""
        self._move(src.device)
        counter, nodes = self.counter, None
        if _fetches(counter):  # graphs on DistDGL's servers: the paths stay within two hops of src
            counter, nodes, (src,) = counter.around(src, hops=2)
        parts: List[Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]] = [
            counter.reached(x, y, src) for x, y in self.metapaths]
        parts += [(*counter.neighbours(x, src), None) for x in self.links]
        n = counter.num_items
        keys, inverse = torch.unique(torch.cat([r * n + c for r, c, _ in parts]), return_inverse=True)
        features = torch.zeros(keys.numel(), len(self.names), device=src.device)
        start = 0
        for f, (r, _, value) in enumerate(parts):
            at = inverse[start: start + r.numel()]
            features[at, f] = 1.0 if value is None else value
            start += r.numel()
        col = keys % n
        return keys // n, col if nodes is None else nodes[col], features

    def forward(self, counts: torch.Tensor, relation: str) -> torch.Tensor:
        """The score term of ``relation`` for pairs with these ``counts`` [..., M] -> [...]."""
        return _term(self.mlp[relation], getattr(self, f"_keep_{relation}"), counts, self._calibration(relation))

    def _calibration(self, relation: str) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(link_bonus_r`` times the mask of the other relations' link features [M],
        ``path_bonus_r`` [], ``path_mask_r`` padded to [M]: the path counts that it weighs)``."""
        mask = getattr(self, f"path_mask_{relation}")
        return (getattr(self, f"link_bonus_{relation}") * getattr(self, f"_linked_{relation}"),
                getattr(self, f"path_bonus_{relation}"), torch.cat([mask, mask.new_zeros(len(self.links))]))

    @property
    def path_names(self) -> List[str]:
        """The meta-paths' names, in the order of ``path_mask_r`` (``substitute-complement``)."""
        return [f"{x}-{y}" for x, y in self.metapaths]

    def calibration_features(self, src: torch.Tensor, candidates: torch.Tensor, relation: str,
                             counts: Optional[torch.Tensor] = None) -> torch.Tensor:
        """[B, K, 1 + num_metapaths] for each pair ``(src[b], candidates[b, k])``: how many other
        relations it is a training edge of (what ``link_bonus_r`` multiplies), then its
        Adamic-Adar-weighted path count per meta-path (``path_bonus_r`` multiplies log(1 + the
        sum of those that ``path_mask_r`` keeps)).  ``counts``: the pairs' :meth:`query_counts`,
        where the caller has them already."""
        if counts is None:
            counts = self.query_counts(src, candidates)
        return torch.cat([(counts * getattr(self, f"_linked_{relation}")).sum(-1, keepdim=True),
                          counts[..., : len(self.metapaths)]], -1)

    def pair_counts(self, pairs: Sequence[Tuple[torch.Tensor, torch.Tensor]]) -> List[torch.Tensor]:
        """:meth:`counts` of several sets of pairs ``(src, dst)`` in one call (each set its own
        shape): a training step's positives and negatives of both relations, so that a counter
        on DistDGL's servers fetches one neighbourhood per step.  The same counts as one call
        per set."""
        src = torch.cat([s.reshape(-1) for s, _ in pairs])
        dst = torch.cat([d.reshape(-1) for _, d in pairs])
        flat = self.counts(src, dst)
        return [c.view(*s.shape, c.shape[-1]) for c, (s, _) in zip(flat.split([s.numel() for s, _ in pairs]), pairs)]

    def pair_scores(self, src: torch.Tensor, dst: torch.Tensor, relation: str,
                    edgeless: Optional[torch.Tensor] = None, counts: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The term of ``relation`` for pairs ``(src, dst)``; where ``edgeless`` (bool, the
        pairs' shape) is set, only what a source without edges would have counts (training's
        ``evidence_dropout``).  ``counts``: the pairs' :meth:`counts`, where the caller has them
        (:meth:`pair_counts`)."""
        if counts is None:
            counts = self.counts(src, dst)
        if edgeless is not None:
            counts = torch.where(edgeless.unsqueeze(-1), counts * self._edgeless, counts)
        return self(counts, relation)

    @property
    def behaviour_paths(self) -> List[int]:
        """Indices of the meta-paths over behaviour graphs only (what the calibration weighs)."""
        return [i for i, (x, y) in enumerate(self.metapaths) if SIMILAR not in (x, y)]

    def candidate_scores(self, src: torch.Tensor, candidates: torch.Tensor, relation: str) -> torch.Tensor:
        return self(self.query_counts(src, candidates), relation)

    def query_counts(self, src: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """Features of each query ``src[b]`` with its ``candidates[b]``, by the cheaper route
        (:meth:`dense_rows_cheaper`): dense rows (:meth:`candidate_counts`), or each pair's
        walks (:meth:`counts`).  The two give the same counts, summed in another order."""
        if self.dense_rows_cheaper(candidates.shape[-1]):
            return self.candidate_counts(src, candidates)
        return self.counts(src.unsqueeze(1).expand_as(candidates), candidates)

    def dense_rows_cheaper(self, candidates: int) -> bool:
        """Whether a query's features against ``candidates`` items cost less as dense rows over
        the catalog than as walks of each pair.  Per query and meta-path, a dense row costs about
        ``N + E`` (the first hop written into ``N`` slots, then a product with the second graph's
        ``E`` nonzeros); the walks about ``K (1 + E / N) log2 E`` (each pair expands the end with
        fewer neighbours, then a binary search per neighbour).  By that estimate, for 1,001
        candidates, the dense rows win on the real datasets (about 9x on Gift Cards, 1.5x on
        Beauty's 12,101 items and 40 edges an item) and the walks win about 40x on a million items
        with ten edges each (where validation and calibration spent their time in dense rows)."""
        if candidates < 64 or _fetches(self.counter):  # no dense rows over a catalog on the servers
            return False
        n = max(self.counter.num_items, 1)
        edges = max(sum(g.num_edges for g in self.counter.graphs.values()) / max(len(self.counter.graphs), 1), 1.0)
        return n + edges <= candidates * (1 + edges / n) * math.log2(edges + 2)

    def with_edges(self, extra, num_items: Optional[int] = None) -> "PathEvidence":
        """The same weights counting paths and links over the training graphs plus ``extra``
        edges (per relation, ``(src, dst)`` node ids), on ``num_items`` items (new items may
        join): a new item's first edges, without training.  Shares every weight with this
        module; only the graphs differ."""
        out = copy.copy(self)  # a shallow copy: the same parameters and buffers
        out.__dict__ = dict(self.__dict__)
        out.counter = with_edges(self.counter, extra, num_items)
        out._table = None  # the extra edges change the counts; a few new items' pairs are walked
        return out

    def frozen(self, relation: str):
        """``f(src [B], candidates [B, K]) -> [B, K]``: :meth:`candidate_scores` of ``relation``
        with a copy of the weights held now (the path counts are shared); ``f.catalog(src [B])
        -> [B, N]`` is the same against every item, by the sparse route (:meth:`reached`).
        Loading other weights into this module later does not change it: an evaluation that
        loads each relation's selected epoch in turn scores each relation with its own."""
        mlp = copy.deepcopy(self.mlp[relation]).eval()
        keep = getattr(self, f"_keep_{relation}").clone()
        links, weight, paths = self._calibration(relation)
        bonus = (links.clone(), weight.clone(), paths.clone())

        @torch.no_grad()
        def scores(src: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
            return _term(mlp, keep, self.query_counts(src, candidates), bonus)

        @torch.no_grad()
        def sparse(src: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
            """``(row [P], col [P], term [P], base [])``: the term of each query ``src[row]``
            with each item ``col`` that a path or an edge reaches (:meth:`reached`); every other
            pair has all-zero features and scores ``base``."""
            row, col, features = self.reached(src)
            base = _term(mlp, keep, features.new_zeros(1, features.shape[1]), bonus)[0]
            return row, col, _term(mlp, keep, features, bonus), base

        @torch.no_grad()
        def catalog(src: torch.Tensor) -> torch.Tensor:
            """The term of each query ``src[b]`` with every item [B, N], by :func:`sparse`."""
            row, col, term, base = sparse(src)
            out = base.expand(src.numel(), self.counter.num_items).clone()
            out[row, col] = term
            return out
        setattr(scores, "sparse", sparse)
        setattr(scores, "catalog", catalog)
        return scores

    def extra_repr(self) -> str:
        return f"features={self.names}"


class Neighbourhoods(Protocol):
    """A counter whose graphs' rows are pulled per call
    (:class:`~mmsc_dgl.distributed.sharded_evidence.FetchedPathCounter`, which this floor does
    not import): ``around(*items, hops)`` gives a :class:`PathCounter` over the items'
    neighbourhood, its items' ids, and ``items`` in those ids."""

    def around(self, *items: torch.Tensor, hops: int = 1) -> Tuple[PathCounter, torch.Tensor, List[torch.Tensor]]:
        ...


def _fetches(counter) -> TypeGuard[Neighbourhoods]:
    """Whether ``counter`` counts over the neighbourhood of a call's items (:class:`Neighbourhoods`)
    instead of whole graphs."""
    return hasattr(counter, "around")


def _term(mlp: nn.Module, keep: torch.Tensor, counts: torch.Tensor,
          calibration: Tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """One relation's score term: its MLP over the log counts, its own-relation links zeroed, plus
    what the calibration after training set: a bonus per other-relation link and a weight on
    log(1 + the path counts of the meta-paths it chose).  Both are 0 for a pair with no path and no link, and exactly 0 before
    the calibration (adding them then changes no bit, and needs no host sync to skip)."""
    links, weight, paths = calibration
    return (mlp(torch.log1p(counts) * keep).squeeze(-1) + (counts * links).sum(-1)
            + weight * torch.log1p((counts * paths).sum(-1)))
