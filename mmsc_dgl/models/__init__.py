"""Models answering one small contract (:class:`~mmsc_dgl.models.base.Recommender`): MMSC and
the baselines it is compared with, one a file."""
from mmsc_dgl.models.base import Recommender
from mmsc_dgl.models.content import ContentCosine
from mmsc_dgl.models.decgcn import DecGCN
from mmsc_dgl.models.gat import GATPerRelation
from mmsc_dgl.models.han import HAN
from mmsc_dgl.models.heuristic import NeighbourhoodHeuristic
from mmsc_dgl.models.lightgcn import LightGCN
from mmsc_dgl.models.mmsc import MMSC
from mmsc_dgl.models.registry import ARCHITECTURES, build_model

__all__ = ["Recommender", "MMSC", "HAN", "GATPerRelation", "LightGCN", "DecGCN", "ContentCosine",
           "NeighbourhoodHeuristic", "ARCHITECTURES", "build_model"]
