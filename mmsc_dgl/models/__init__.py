"""Models answering one small contract (:class:`~mmsc_dgl.models.base.Recommender`)."""
from mmsc_dgl.models.base import Recommender
from mmsc_dgl.models.mmsc import MMSC

__all__ = ["Recommender", "MMSC"]
