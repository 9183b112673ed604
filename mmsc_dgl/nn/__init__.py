"""Layers of the MMSC encoder, one per file.  They take plain tensors and :class:`~mmsc_dgl.ops.CSR`
adjacencies and never import DGL, so they run on machines without it."""
from mmsc_dgl.nn.content_tower import ContentTower
from mmsc_dgl.nn.fusion import FUSIONS, BehaviourFusion, ConcatFusion, GateFusion
from mmsc_dgl.nn.gate import NeuralGate, TaskGate
from mmsc_dgl.nn.graph_conv import NormalisedConv
from mmsc_dgl.nn.han_conv import HANConv
from mmsc_dgl.nn.metapath_attention import MetaPathAttention
from mmsc_dgl.nn.multimodal_attention import MultiModalAttention
from mmsc_dgl.nn.path_evidence import PathEvidence
from mmsc_dgl.nn.semantic_attention import SemanticAttention

__all__ = ["MetaPathAttention", "SemanticAttention", "MultiModalAttention", "NeuralGate", "PathEvidence", "NormalisedConv", "ContentTower", "HANConv",
           "TaskGate", "GateFusion", "ConcatFusion", "BehaviourFusion", "FUSIONS"]
