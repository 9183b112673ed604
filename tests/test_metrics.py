import math

import numpy as np
import pytest
import torch

from mmsc_dgl.eval.evaluate import cold_start_embeddings
from mmsc_dgl.eval.pairs import best_f1_threshold, pair_metrics
from mmsc_dgl.eval.ranking import ranking_metrics, ranks
from mmsc_dgl.models.losses import info_nce, triplet_loss


def test_ranks_and_metrics_by_hand():
    pos = torch.tensor([0.9, 0.5, 0.1, 0.7])
    neg = torch.tensor([[0.1, 0.2, 0.3],    # rank 1
                        [0.6, 0.4, 0.7],    # two above: rank 3
                        [0.2, 0.3, 0.4],    # rank 4
                        [0.7, 0.0, 0.0]])   # a tie counts against: rank 2
    r = ranks(pos, neg)
    assert r.tolist() == [1, 3, 4, 2]
    m = ranking_metrics(r, ks=[1, 3])
    assert m["HR@1"] == pytest.approx(1 / 4)
    assert m["HR@3"] == pytest.approx(3 / 4)
    assert m["MRR@3"] == pytest.approx((1 + 1 / 3 + 1 / 2) / 4)
    assert m["NDCG@3"] == pytest.approx((1 + 1 / math.log2(4) + 1 / math.log2(3)) / 4)
    assert m["NDCG@1"] == pytest.approx(1 / 4)
    with pytest.raises(ValueError):
        ranks(pos, neg[:2])


def test_pair_metrics_against_hand_values():
    labels = np.array([1, 1, 0, 0, 1, 0])
    scores = np.array([0.9, 0.8, 0.7, 0.1, 0.3, 0.2])
    m = pair_metrics(labels, scores, threshold=0.5)
    # 9 positive-negative pairs; the positive wins 8 (0.3 loses to 0.7).
    assert m["ROC-AUC"] == pytest.approx(8 / 9)
    assert m["F1"] == pytest.approx(2 * (2 / 3) * (2 / 3) / (4 / 3))  # tp=2, fp=1, fn=1
    assert m["threshold_from_validation"]
    assert best_f1_threshold(labels, scores) in scores
    assert not pair_metrics(labels, scores)["threshold_from_validation"]
    with pytest.raises(ValueError, match="both positive and negative"):
        pair_metrics(np.ones(3), np.ones(3))


def test_losses():
    pos = torch.tensor([0.9, 0.2])
    neg = torch.tensor([[0.1, 0.5], [0.4, 0.0]])
    # margins: max(0, 0.5 - 0.9 + 0.1)=0, max(0, 0.5-0.9+0.5)=0.1, max(0, 0.5-0.2+0.4)=0.7, 0.3
    assert triplet_loss(pos, neg, 0.5).item() == pytest.approx((0 + 0.1 + 0.7 + 0.3) / 4)
    g = torch.Generator().manual_seed(0)  # the global RNG's state depends on the tests run before
    x = torch.randn(16, 8, generator=g)
    aligned = info_nce(x, x + 0.01 * torch.randn(16, 8, generator=g), 0.1)
    shuffled = info_nce(x, x[torch.randperm(16, generator=g)], 0.1)
    assert aligned < shuffled and aligned < 0.1


def test_cold_start_is_mean_of_nearest_in_content_space():
    content = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [1.0, 0.05]])
    behaviour = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0],
                                                            [0.0, 0.0, 1.0], [5.0, 5.0, 5.0]]), dim=1)
    out = cold_start_embeddings(behaviour, content, np.array([3]), k=2)
    expect = torch.nn.functional.normalize(behaviour[[0, 1]].mean(0), dim=0)
    assert torch.allclose(out[3], expect) and torch.equal(out[:3], behaviour[:3])
