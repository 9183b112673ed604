"""MMSC: multi-modal relational item representations for substitutes and complements."""
from __future__ import annotations

from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Tuple, Union, cast

import torch
from torch import nn
from torch.nn import functional as F

from mmsc_dgl.schema import RELATIONS
from mmsc_dgl.models.base import GraphStateModule, Recommender, reset_children
from mmsc_dgl.models.graph_branch import GraphBranch, IdSmoothing
from mmsc_dgl.models.inputs import ItemInput
from mmsc_dgl.models.losses import info_nce, sampled_softmax_loss, triplet_loss
from mmsc_dgl.nn import FUSIONS, MetaPathAttention, NormalisedConv, PathEvidence, SemanticAttention, TaskGate
from mmsc_dgl.nn.path_evidence import SIMILAR, look_alike_edges
from mmsc_dgl.ops import CSR
from mmsc_dgl.ops.csr import DroppedEdges, is_compiling
from mmsc_dgl.ops.paths import EdgeArrays, PathCounter, adamic_adar_counter, normalised_adjacency

if TYPE_CHECKING:  # torch-only imports at run time: MMSC trains on GPU hosts without pydantic/pyarrow
    from mmsc_dgl.config import ModelConfig
    from mmsc_dgl.features.base import ItemFeatures
    from mmsc_dgl.metapath.table import MetaPathTables

__all__ = ["MMSC"]


class MMSC(GraphStateModule, Recommender):
    r"""MMSC (arXiv 2507.22268), composed from :mod:`mmsc_dgl.nn`.

    For item :math:`i` and relation :math:`r \in \{s, c\}`:

    .. math::
        q_i &= \mathrm{MultiModalAttention}(x_{i,1..T}) + e_i \quad\text{(content + id embedding)} \\
        p_i^{\Phi} &= \mathrm{MetaPathAttention}_\Phi(q;\ \mathcal{N}_\Phi(i)) \\
        p_i^{r} &= \mathrm{SemanticAttention}_r(\{p_i^\Phi\}_\Phi) \quad\text{(item-specific path weights)} \\
        h_i^{r} &= \mathrm{Gate}^{sem}_r(q_i, p_i^r) \\
        z_i^{r} &= \mathrm{Gate}^{task}_r(h_i^r, h_i^{\bar r}), \qquad
        \mathrm{score}_r(i, j) = (W_r z_i^r)^\top (W_r z_j^r)

    For real co-purchase graphs (docs/real-data.md) the score gains two parts, both defaults and
    both switchable: a **graph branch** :math:`L^r` (LightGCN over relation :math:`r`'s full
    graph, concatenated to :math:`W_r z^r`, ``graph_branch``) and **path evidence**
    :math:`g_r(C(i, j))` added to the dot product (the Adamic-Adar-weighted two-hop meta-path
    counts joining the pair, ``path_evidence``, and whether the pair is a training edge of the
    other relation, ``evidence_links``).  The ranking loss is the paper's triplet, or a
    sampled softmax (``loss: softmax``).

    Two more defaults go beyond the paper, both switchable in :class:`~mmsc_dgl.config.ModelConfig`:
    ``id_embeddings`` adds a learnable id embedding :math:`e_i` to the content (items of one
    product type have near-identical content, and only an identity tells them apart), and
    ``score="dot"`` scores with a dot product instead of a cosine (the norm can carry
    popularity, which co-purchase data rewards).  On the synthetic catalog the two together
    lift test NDCG@10 from 0.17 / 0.04 to 0.34 / 0.24 (substitutes / complements; docs/results.md).
    Without content features, :math:`q_i = e_i`.

    The meta-path layers are shared by both relations; each relation has its own semantic
    attention, gates and scoring projection.  The loss is
    ``ranking + ssl_weight * InfoNCE(view 1, view 2)``: the ranking term uses the tables as they
    are; the two views each drop ``edge_drop`` of the meta-path edges (graph-level dropout) for
    ``ssl_nodes`` items of the batch.

    Args:
        num_items: number of items.
        tables: meta-path neighbour tables (a precomputed transform; built from training edges).
        config: :class:`~mmsc_dgl.config.ModelConfig`.
        features: frozen content tokens; ``None`` uses learnable id embeddings.
        impl: kernel of the meta-path layers.

    Parts (attributes, each present only when configured, ``None`` otherwise): ``fusion`` (the
    class ``semantic_fusion`` names in :data:`~mmsc_dgl.nn.FUSIONS`), ``task_gate``
    (:class:`~mmsc_dgl.nn.TaskGate`), ``evidence`` (:class:`~mmsc_dgl.nn.PathEvidence`),
    ``graph_branch`` (:class:`~mmsc_dgl.models.graph_branch.GraphBranch`), ``smooth_ids``
    (:class:`~mmsc_dgl.models.graph_branch.IdSmoothing`), ``first_hop`` (the
    :class:`~mmsc_dgl.nn.NormalisedConv` of each relation).  ``ModelConfig(preset="paper")`` is
    MMSC as in the paper.

    Note:
        An item with no neighbour under any meta-path keeps its content representation: the
        semantic gate's mask falls back to :math:`q_i`, never to a bias-only embedding.

    Example:
        >>> tables = mmsc_dgl.build_metapath_tables(dataset.train_graph(), "s,c,s-c")  # doctest: +SKIP
        >>> model = MMSC(dataset.num_items, tables, ModelConfig(path_evidence=False, graph_branch=0))  # doctest: +SKIP
        >>> model.embed("complement").shape                                           # doctest: +SKIP

    """

    _graph_state = ("_csr", "_full")

    def __init__(self, num_items: int, tables: Union["MetaPathTables", Mapping[str, CSR]],
                 config: Optional["ModelConfig"] = None, features: Optional["ItemFeatures"] = None,
                 impl: str = "auto", graph_edges: Optional[Mapping[str, "EdgeArrays"]] = None):
        super().__init__()
        if config is None:
            from mmsc_dgl.config import ModelConfig
            config = ModelConfig()
        if config.hidden % config.heads:
            raise ValueError(f"hidden={config.hidden} must be a multiple of heads={config.heads}")
        # A CSR, a MetaPathTable (its CSR), or rows read on demand like a CSR (select_rows,
        # padded, drop_edges, max_degree: the sharded tables of mmsc_dgl.distributed).
        csrs: Dict[str, CSR] = {name: (cast(CSR, table) if isinstance(table, CSR) or hasattr(table, "select_rows")
                                       else table.csr()) for name, table in tables.items()}
        covered = {c.num_rows for c in csrs.values()} | {c.num_src for c in csrs.values()}
        if covered - {num_items}:
            raise ValueError(f"the meta-path tables cover {sorted(covered)} items, the model {num_items}; "
                             "rebuild them for this dataset")
        self.num_items = num_items
        self.config = config
        # read once: exports written before it have none, and a traced forward cannot ask
        self._signature_share = float(getattr(config, "complement_signature", 0.0))
        self.metapaths: List[str] = list(csrs)
        self._csr: Dict[str, CSR] = csrs
        hidden = config.hidden
        self.input = ItemInput(num_items, hidden, features, id_embeddings=config.id_embeddings)
        self.path_layers = nn.ModuleList([
            MetaPathAttention(hidden, hidden // config.heads, num_heads=config.heads, feat_drop=config.feat_drop,
                              activation=F.elu, impl=impl) for _ in self.metapaths])
        # Item-specific path weights: an item's embedding must not depend on its mini-batch.
        self.semantic = nn.ModuleDict({r: SemanticAttention(hidden, config.semantic_hidden, per_item=True)
                                       for r in RELATIONS})
        # The parts below exist only when configured (an absent part has no state_dict keys).
        self.fusion = FUSIONS[config.semantic_fusion](hidden, RELATIONS)
        self.task_gate = TaskGate(hidden, RELATIONS) if config.task_gate else None
        self.project = nn.ModuleDict({r: nn.Linear(hidden, hidden) for r in RELATIONS})
        needs_graph = [name for name in ("path_evidence", "full_first_hop", "propagate_ids", "graph_branch")
                       if getattr(config, name)]
        if needs_graph and graph_edges is None:
            one = len(needs_graph) == 1
            raise ValueError(f"{', '.join(needs_graph)} need{'s' if one else ''} the training graph's edges: pass "
                             f"graph_edges, or turn {'it' if one else 'them'} off in the config")
        if config.propagate_ids and self.input.item_embedding is None:
            raise ValueError("propagate_ids smooths the id embeddings; it needs id_embeddings=True")
        counter = adamic_adar_counter(num_items, graph_edges) if needs_graph and graph_edges is not None else None
        self.evidence = (PathEvidence(self._evidence_counter(counter, graph_edges or {}, features), RELATIONS,
                                      config.evidence_hidden, links=config.evidence_links)
                         if counter is not None and config.path_evidence else None)
        # read once (a traced step cannot ask the config): 0 without a content-neighbour graph
        self._evidence_dropout = (float(getattr(config, "evidence_dropout", 0.0))
                                  if self.evidence is not None and SIMILAR in self.evidence.counter.graphs else 0.0)
        self.smooth_ids = (IdSmoothing(config.propagate_ids, normalised_adjacency(counter.graphs.values(), num_items))
                           if counter is not None and config.propagate_ids else None)
        self.graph_branch = (GraphBranch(num_items, hidden, config.graph_branch,
                                         {r: normalised_adjacency([counter.graphs[r]], num_items) for r in RELATIONS},
                                         cap=int(getattr(config, "graph_branch_cap", 0)))
                             if counter is not None and config.graph_branch else None)
        self._full: Dict[str, CSR] = dict(counter.graphs) if counter is not None and config.full_first_hop else {}
        self.first_hop = (nn.ModuleDict({r: NormalisedConv(hidden, hidden) for r in RELATIONS})
                          if self._full else None)
        # The widths of the padded neighbour lists that a compiled forward reads: each table
        # caches its largest degree (a host sync here, a Python constant in a trace).
        for csr in [*self._csr.values(), *self._full.values()]:
            csr.max_degree()
        self._register_load_state_dict_pre_hook(_legacy_keys)

    def _evidence_counter(self, counter: PathCounter, graph_edges: Mapping[str, "EdgeArrays"],
                          features: Optional["ItemFeatures"]) -> PathCounter:
        """The path evidence's graphs: the relations', and with ``content_paths`` a ``similar``
        graph joining each item with content to its nearest items in content space among those
        with a training edge (a cold item's only way to a path).  The Adamic-Adar weights stay
        those of the relations' graphs."""
        k = int(getattr(self.config, "content_paths", 0))
        if not k or features is None:
            return counter
        src, dst = look_alike_edges(counter, features.pooled(), k)
        edges = {**{r: graph_edges[r] for r in counter.graphs}, SIMILAR: SimpleNamespace(src=src, dst=dst)}
        return adamic_adar_counter(self.num_items, edges, weigh_by=tuple(counter.graphs))

    def reset_parameters(self) -> None:
        """Re-initialise every learnable part."""
        reset_children(self)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def content_all(self) -> torch.Tensor:
        """:math:`q` for every item [num_items, hidden]."""
        return self.content_of(torch.arange(self.num_items, device=self.device))

    def content_of(self, nodes: torch.Tensor) -> torch.Tensor:
        """:math:`q` of ``nodes`` only: a step touches a small part of a large catalog (with
        ``propagate_ids``, the id part is the LightGCN-smoothed table, computed for all items)."""
        if self.smooth_ids is None:
            return self.input.of(nodes)
        smooth = self.smooth_ids(self.input.item_embedding.weight)
        return self.input.of(nodes) - self.input.item_embedding(nodes) + smooth[nodes]

    def encode(self, nodes: torch.Tensor, views: Optional[Dict[str, CSR]] = None,
               get_attention: bool = False, padded: Optional[bool] = None):
        """Per relation, :math:`z^r` of ``nodes`` [B, hidden] (before the scoring projection).
        ``views`` replaces the tables (edge-dropped views during training).  ``padded``: read
        each item's neighbours as padded lists (:meth:`CSR.padded <mmsc_dgl.ops.CSR.padded>`)
        instead of the batch's sub-adjacency, so every shape is static: the default while
        ``torch.compile`` traces, and the same values (``tests/test_compile.py``)."""
        if padded is None:
            padded = is_compiling()
        q, outs, masks = (self._paths_padded if padded else self._paths)(nodes, views)
        stacked = torch.stack(outs, 1)
        mask = torch.stack(masks, 1)
        any_path = mask.any(1)
        h, weights = {}, {}
        for r in RELATIONS:
            p, weights[r] = self.semantic[r](stacked, mask, get_attention=True)
            h[r] = self.fusion(r, q, p, any_path)
        z = h if self.task_gate is None else self.task_gate(h)
        return (z, weights) if get_attention else z

    def _paths(self, nodes: torch.Tensor, views: Optional[Dict[str, CSR]]):
        """``(q [B, hidden], outputs, masks)``: each meta-path layer's output for ``nodes`` and
        which of them it reached, over the batch's rows of the tables."""
        tables = views if views is not None else self._csr
        rows = {name: tables[name].select_rows(nodes) for name in self.metapaths}
        full = {r: self._full[r].select_rows(nodes) for r in self._full}
        # q is computed once for the batch and its meta-path neighbours, never for the whole
        # catalog: this is what lets a step cost O(batch x neighbours) at a million items.
        needed, inverse = torch.unique(torch.cat([nodes] + [rows[n].indices for n in self.metapaths]
                                                 + [full[r].indices for r in full]), return_inverse=True)
        q_needed = self.content_of(needed)
        q = q_needed[inverse[: nodes.numel()]]
        offset = nodes.numel()
        outs, masks = [], []
        for name, layer in zip(self.metapaths, self.path_layers):
            csr = rows[name]
            # Each layer projects only its own neighbours' q (at a million items a path's
            # neighbours are a fraction of all the batch touches).
            own, local_idx = torch.unique(inverse[offset: offset + csr.num_edges], return_inverse=True)
            offset += csr.num_edges
            local = CSR(csr.indptr, local_idx, num_src=own.numel(), validate=False)
            outs.append(layer(local, (q_needed[own], q)).flatten(1))
            masks.append(csr.nonempty)
        for r, csr in full.items():
            assert self.first_hop is not None  # with full_first_hop
            own, local_idx = torch.unique(inverse[offset: offset + csr.num_edges], return_inverse=True)
            offset += csr.num_edges
            degrees = self._full[r].degrees
            outs.append(self.first_hop[r](CSR(csr.indptr, local_idx, num_src=own.numel(), validate=False),
                                          q_needed[own], deg_dst=degrees[nodes], deg_src=degrees[needed[own]]))
            masks.append(csr.nonempty)
        return q, outs, masks

    def _paths_padded(self, nodes: torch.Tensor, views: Optional[Dict[str, CSR]]):
        """:meth:`_paths` over padded neighbour lists: static shapes, no ``torch.unique``; the
        content of a neighbour that several rows share is computed once per row."""
        tables = views if views is not None else self._csr
        lists = [tables[name].padded(nodes) for name in self.metapaths]
        lists += [self._full[r].padded(nodes) for r in self._full]
        q_all = self.content_of(torch.cat([nodes] + [nbr.reshape(-1) for nbr, _ in lists]))
        q = q_all[: nodes.numel()]
        offset = nodes.numel()
        outs, masks = [], []
        for layer, (nbr, mask) in zip(self.path_layers, lists):
            q_nbr = q_all[offset: offset + nbr.numel()].view(*nbr.shape, -1)
            offset += nbr.numel()
            outs.append(layer.forward_padded(q_nbr, q, mask).flatten(1))
            masks.append(mask.any(1))
        for r, (nbr, mask) in zip(self._full, lists[len(self.metapaths):]):
            assert self.first_hop is not None  # with full_first_hop
            q_nbr = q_all[offset: offset + nbr.numel()].view(*nbr.shape, -1)
            offset += nbr.numel()
            degrees = self._full[r].degrees
            outs.append(self.first_hop[r].forward_padded(q_nbr, mask, degrees[nodes], degrees[nbr]))
            masks.append(mask.any(1))
        return q, outs, masks

    def head(self, z: torch.Tensor, relation: str, nodes: Optional[torch.Tensor] = None,
             graph_rows: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The rows whose dot products are the scores: the projection of :math:`z^r` (and, with
        ``graph_branch``, the LightGCN representation of ``nodes``, concatenated; ``graph_rows``:
        those rows, where the caller has them already)."""
        out = self.project[relation](z)
        # Cosine (the paper) cannot express popularity; a dot product can, through the norm.
        out = F.normalize(out, dim=-1) if self.config.score == "cosine" else out
        if self.graph_branch is not None:
            if graph_rows is None:
                if nodes is None:
                    raise ValueError("with graph_branch, head() needs the node ids of z")
                graph_rows = self.graph_branch(relation, nodes)
            out = torch.cat([out, graph_rows], dim=-1)
        return out

    def _whole_graph(self, relation: str) -> Optional[torch.Tensor]:
        """For a pass over the catalog: the graph branch's every row, where it propagates over
        the whole graph (once, instead of once per chunk); ``None`` otherwise."""
        if self.graph_branch is None or self.graph_branch.cap:
            return None
        return self.graph_branch(relation)

    def signature(self, relation: str) -> Optional[torch.Tensor]:
        """With ``complement_signature`` > 0, the complement score counts the last share of the
        projection's dimensions negatively (the graph branch's dimensions keep +1)."""
        share = self._signature_share
        if relation != "complement" or share <= 0:
            return None
        hidden = self.config.hidden
        width = hidden + (hidden if self.graph_branch is not None else 0)
        sign = torch.ones(width, device=self.device)
        sign[hidden - max(1, round(share * hidden)): hidden] = -1.0
        return sign

    def graph_representation(self, relation: str) -> torch.Tensor:
        """LightGCN over ``relation``'s graph: the mean of the layers of the propagated shared plus
        per-relation id embeddings, for every item [num_items, hidden]."""
        if self.graph_branch is None:
            raise ValueError("this model has no graph branch (graph_branch: 0)")
        return self.graph_branch(relation)

    def forward(self, nodes: torch.Tensor, relation: Optional[str] = None):
        """The scoring rows of ``nodes``: ``{relation: [B, dim]}``, or one relation's [B, dim].
        Dot products of these rows (plus :meth:`pair_term`) are :meth:`score`."""
        nodes = torch.as_tensor(nodes, dtype=torch.int64, device=self.device).reshape(-1)
        z = self.encode(nodes)
        if relation is not None:
            return self.head(z[relation], relation, nodes)
        return {r: self.head(z[r], r, nodes) for r in RELATIONS}

    def score(self, src: torch.Tensor, dst: torch.Tensor, relation: str) -> torch.Tensor:
        """Scores of the pairs ``(src[i], dst[i])`` under ``relation`` (node ids: tensors or
        lists of one shape); higher is more related.

        Example:
            >>> model.score([0, 1], [5, 7], "complement")  # doctest: +SKIP
            tensor([0.81, -0.12])
        """
        src = torch.as_tensor(src, dtype=torch.int64, device=self.device)
        dst = torch.as_tensor(dst, dtype=torch.int64, device=self.device)
        shape = src.shape
        src, dst = src.reshape(-1), dst.reshape(-1)
        nodes, inverse = _distinct(torch.cat([src, dst]))
        z = self.head(self.encode(nodes)[relation], relation, nodes)
        out = (z[inverse[: len(src)]] * self.targets(relation, z)[inverse[len(src):]]).sum(-1)
        if self.evidence is not None:
            out = out + self.evidence.pair_scores(src, dst, relation)
        return out.view(shape)

    def pair_term(self, relation: str, extra_edges=None, num_items: Optional[int] = None):
        """The path-evidence term of ``relation`` for query items and their candidates, with the
        weights the model holds now (``None`` without ``path_evidence``); ``extra_edges`` (per
        relation, ``(src, dst)``) are counted with the training graphs, over ``num_items`` items
        (new items' first edges: :meth:`PathEvidence.with_edges`)."""
        if self.evidence is None:
            return None
        if extra_edges is None and num_items is None:
            return self.evidence.frozen(relation)
        return self.evidence.with_edges(extra_edges or {}, num_items).frozen(relation)

    @torch.no_grad()
    def after_training(self, relation_states: Dict[str, dict], evaluator) -> Tuple[Dict[str, dict], dict]:
        """Each relation's path-evidence weights (link bonus, path weight, which meta-paths
        count) chosen on validation (:func:`~mmsc_dgl.models.calibration.calibrate`), unless
        ``calibrate: false``; the report is ``{"calibration": ...}`` (empty without path evidence)."""
        from mmsc_dgl.models.calibration import calibrate
        states, report = calibrate(self, relation_states, evaluator, getattr(self.config, "calibrate", False))
        return states, ({"calibration": report} if report else {})

    @torch.no_grad()
    def embed(self, relation: str, batch_size: int = 16384) -> torch.Tensor:
        """Every item's scoring row for ``relation`` [num_items, dim] (call it on the weights
        selected for that relation: :meth:`ItemModel.for_relation`)."""
        whole = self._whole_graph(relation)
        return torch.cat([self.head(self.encode(nodes)[relation], relation, nodes,
                                    None if whole is None else whole[nodes])
                          for nodes in torch.arange(self.num_items, device=self.device).split(batch_size)])

    @torch.no_grad()
    def embed_all(self, batch_size: int = 16384) -> Dict[str, torch.Tensor]:
        """Both relations' embeddings in one pass."""
        parts: Dict[str, List[torch.Tensor]] = {r: [] for r in RELATIONS}
        whole = {r: self._whole_graph(r) for r in RELATIONS}
        for nodes in torch.arange(self.num_items, device=self.device).split(batch_size):
            z = self.encode(nodes)
            for r in RELATIONS:
                rows = whole[r]
                parts[r].append(self.head(z[r], r, nodes, None if rows is None else rows[nodes]))
        return {r: torch.cat(v) for r, v in parts.items()}

    def _edgeless_sources(self, count: int, generator: Optional[torch.Generator], device) -> Optional[torch.Tensor]:
        """``evidence_dropout``: which of ``count`` training pairs' sources look edgeless to the
        path evidence (None: none, outside training, or without a content-neighbour graph)."""
        if not self.training or not self._evidence_dropout:
            return None
        return (torch.rand(count, generator=generator) < self._evidence_dropout).to(device)

    def views(self, generator: Optional[torch.Generator] = None) -> Dict[str, Any]:
        """The tables with ``edge_drop`` of their edges dropped (one graph-dropout view); while
        ``torch.compile`` traces, as masks on the padded lists (:class:`~mmsc_dgl.ops.csr.DroppedEdges`)."""
        if is_compiling():
            return {k: DroppedEdges(v, self.config.edge_drop, generator) for k, v in self._csr.items()}
        return {k: v.drop_edges(self.config.edge_drop, generator) for k, v in self._csr.items()}

    def loss(self, batch: dict) -> Dict[str, torch.Tensor]:
        """``batch``: per relation present (``substitute`` and/or ``complement``) ``(src [B],
        pos [B], neg [B, M])`` node ids, and optionally a ``generator`` (a CPU
        ``torch.Generator``) for the graph-dropout views; torch's global one otherwise.  Returns
        the loss parts; minimise ``"total"``."""
        cfg = self.config
        generator = batch.get("generator")
        ids = [t.reshape(-1) for r in RELATIONS if r in batch for t in batch[r]]
        nodes, inverse = _distinct(torch.cat(ids))
        use_ssl = cfg.ssl_weight > 0
        z1 = self.encode(nodes)  # the supervised term sees the tables as they are at inference
        parts = {"ranking": torch.zeros((), device=nodes.device)}
        # every pair's path evidence in one call (one neighbourhood fetched where the graphs are
        # on DistDGL's servers): per relation its positives' counts, then its negatives'
        counts = iter(self.evidence.pair_counts([p for r in RELATIONS if r in batch for p in (
            (batch[r][0], batch[r][1]), (batch[r][0].unsqueeze(1).expand_as(batch[r][2]), batch[r][2]))])
            if self.evidence is not None else [])
        offset = 0
        for r in RELATIONS:
            if r not in batch:
                continue
            src, pos, neg = batch[r]
            e = self.head(z1[r], r, nodes)
            b, m = src.numel(), neg.shape[1]
            i_src = inverse[offset: offset + b]
            i_pos = inverse[offset + b: offset + 2 * b]
            i_neg = inverse[offset + 2 * b: offset + 2 * b + b * m].view(b, m)
            offset += 2 * b + b * m
            t = self.targets(r, e)
            s_pos = (e[i_src] * t[i_pos]).sum(-1)
            s_neg = (e[i_src].unsqueeze(1) * t[i_neg]).sum(-1)
            if self.evidence is not None:
                edgeless = self._edgeless_sources(b, generator, src.device)
                s_pos = s_pos + self.evidence.pair_scores(src, pos, r, edgeless, counts=next(counts))
                s_neg = s_neg + self.evidence.pair_scores(src.unsqueeze(1).expand_as(neg), neg, r,
                                                          None if edgeless is None else edgeless.unsqueeze(1).expand_as(neg),
                                                          counts=next(counts))
            if cfg.loss == "softmax":
                parts["ranking"] = parts["ranking"] + sampled_softmax_loss(s_pos, s_neg)
            else:
                parts["ranking"] = parts["ranking"] + triplet_loss(s_pos, s_neg, cfg.margin)
        total = parts["ranking"]
        if use_ssl:
            pick = torch.randperm(nodes.numel(), generator=generator)[: cfg.ssl_nodes].to(nodes.device)
            view1 = self.encode(nodes[pick], self.views(generator))
            view2 = self.encode(nodes[pick], self.views(generator))
            parts["infonce"] = torch.stack([info_nce(view1[r], view2[r], cfg.ssl_temperature)
                                            for r in RELATIONS]).mean()
            total = total + cfg.ssl_weight * parts["infonce"]
        parts["total"] = total
        return parts

    def __repr__(self) -> str:
        content = self.input.kind()
        return (f"MMSC(items={self.num_items:,}, hidden={self.config.hidden}, heads={self.config.heads}, "
                f"metapaths={len(self.metapaths)}, content={content})")


def _distinct(ids: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(nodes, inverse)`` with ``nodes[inverse] == ids``: the distinct ids (each encoded
    once), or, while ``torch.compile`` traces, ``ids`` themselves (``torch.unique``'s size
    depends on the data; a repeated id is encoded again, to the same rows)."""
    if is_compiling():
        return ids, torch.arange(ids.numel(), device=ids.device)
    return torch.unique(ids, return_inverse=True)


_RENAMED = (("content.", "input.content."), ("item_embedding.", "input.item_embedding."),
            ("semantic_gate.", "fusion."), ("semantic_concat.", "fusion."),
            ("graph_shared.", "graph_branch.shared."), ("graph_relation.", "graph_branch.relation."))
"""Keys of weights saved by earlier versions -> today's: before MMSC composed :class:`ItemInput`,
and before the fusion and the graph branch were parts of their own."""


def _legacy_keys(state_dict, prefix, *args) -> None:
    """Weights saved by earlier versions (:data:`_RENAMED`) load under today's names."""
    for key in list(state_dict):
        for old, new in _RENAMED:
            if key.startswith(prefix + old):
                state_dict[prefix + new + key[len(prefix + old):]] = state_dict.pop(key)
                break
