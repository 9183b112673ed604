"""E_LLM: judging training edges and keeping a clean subset for the supervised loss.  No DGL."""
from mmsc_dgl.augment.judge import EdgeJudge
from mmsc_dgl.augment.select import augment

__all__ = ["EdgeJudge", "augment"]
