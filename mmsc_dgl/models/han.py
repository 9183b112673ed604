r"""HAN (Wang, Ji, Shi, Wang, Ye, Cui, Yu: "Heterogeneous Graph Attention Network", WWW 2019) on
the substitute/complement meta-paths.

.. math::
    p_i^{\Phi} = \mathrm{GAT}_\Phi(q;\ \mathcal N_\Phi(i)), \qquad
    z_i^{r} = \sum_\Phi \beta^{r}_{i,\Phi}\, p_i^{\Phi}, \qquad
    \mathrm{score}_r(i, j) = \langle W_r z_i^r, W_r z_j^r \rangle

(a dot product, as MMSC's default ``score: dot``; ``score: cosine`` normalises both sides first).

Node-level attention per meta-path, then semantic attention across meta-paths: MMSC's behaviour
branch alone, with no content gate, no task gate and no self-supervision.  It shares MMSC's
layers, meta-path tables and training loop, so HAN vs MMSC isolates those three parts.

Two choices differ from the paper, both shared with MMSC: the semantic weights are per item (the
paper averages them over all nodes, which makes an embedding depend on its mini-batch), and an
item with no neighbour under any meta-path keeps its input representation instead of a zero.
"""
from __future__ import annotations

from typing import Mapping, Optional, Union

from mmsc_dgl.config import ModelConfig
from mmsc_dgl.features.base import ItemFeatures
from mmsc_dgl.metapath.table import MetaPathTables
from mmsc_dgl.ops import CSR
from mmsc_dgl.models.mmsc import MMSC


class HAN(MMSC):
    """HAN as a configuration of MMSC's parts: ``semantic_fusion="none"``, no task gate, no SSL.

    Args:
        num_items, tables, config, features, impl: as :class:`~mmsc_dgl.models.MMSC`; the three
            switches above override ``config``.
    """

    def __init__(self, num_items: int, tables: Union[MetaPathTables, Mapping[str, CSR]], config: Optional[ModelConfig] = None,
                 features: Optional[ItemFeatures] = None, impl: str = "auto"):
        # HAN's settings, with MMSC's three extra parts switched off.
        base = config.model_dump() if config is not None else {}
        config = ModelConfig.from_mapping({**base, "architecture": "mmsc", "semantic_fusion": "none",
                                           "task_gate": False, "ssl_weight": 0.0,
                                           "path_evidence": False, "full_first_hop": False, "propagate_ids": 0,
                                           "graph_branch": 0,
                                           "loss": "triplet"})
        super().__init__(num_items, tables, config, features, impl)

    def __repr__(self) -> str:
        return super().__repr__().replace("MMSC(", "HAN(", 1)
