"""Training teaches MMSC something: four epochs beat the untrained model and the content-only
cosine baseline on validation NDCG@10 by a clear margin, and the same criterion fails when the
loss is broken (positive and negative scores swapped)."""
import pytest
import torch

from mmsc_dgl.config import SyntheticConfig, TrainConfig
from mmsc_dgl.data.prepare import prepare
from mmsc_dgl.eval.evaluator import Evaluator
from mmsc_dgl.train.build import build_run
from mmsc_dgl.train.trainer import Trainer

CONFIG = TrainConfig(epochs=4, patience=4, batch_size=256, metapaths="s,c,s-c,c-s", max_neighbors=8,
                     features="hashed", val_queries=None)
"""Measured (2026-12-03): trained, validation NDCG@10 0.29 against thresholds of 0.18 (untrained 0.08 + 0.1)
and 0.18 (1.3 x content 0.14); either loss broken, 0.002 or less."""


NO_PATHS = CONFIG.model_copy(update={"model": CONFIG.model.model_copy(update={"content_paths": 0})})
"""The same without content paths: the tests of the embedding's own cold-start placement (the
content tower) and of the signature measure those parts alone."""


def mean_ndcg(metrics: dict) -> float:
    return sum(m["NDCG@10"] for m in metrics.values()) / len(metrics)


@pytest.fixture(scope="module")
def catalog():
    return prepare(synthetic=SyntheticConfig(num_items=800, seed=0), progress=False)


@pytest.fixture(scope="module")
def content_baseline(catalog):
    parts = build_run(catalog, CONFIG.with_architecture("content"), progress=False)
    return mean_ndcg(Evaluator(catalog, CONFIG, parts.features).validate(parts.model))


def train_and_judge(catalog, content_baseline, config=CONFIG) -> dict:
    """Validation NDCG@10 (mean of both relations) before and after training, and whether that
    is a clear win over both references: at least 0.1 above the untrained model and 1.3 times
    the content baseline."""
    parts = build_run(catalog, config, progress=False)
    evaluator = Evaluator(parts.dataset, config, parts.features)
    before = mean_ndcg(evaluator.validate(parts.model))
    Trainer(parts.model, config, progress=False).fit(parts.batches(), evaluator.validate)
    after = mean_ndcg(evaluator.validate(parts.model))
    return {"before": before, "after": after,
            "learned": after >= before + 0.1 and after >= 1.3 * content_baseline}


def test_mmsc_learns(catalog, content_baseline):
    result = train_and_judge(catalog, content_baseline)
    assert result["learned"], (result, content_baseline)


@pytest.mark.parametrize("loss", ["triplet", "softmax"])
def test_a_broken_loss_fails_the_same_check(catalog, content_baseline, monkeypatch, loss):
    import mmsc_dgl.models.mmsc as mmsc
    triplet, softmax = mmsc.triplet_loss, mmsc.sampled_softmax_loss
    # rewards negatives over positives
    monkeypatch.setattr(mmsc, "triplet_loss", lambda pos, neg, margin: triplet(-pos, -neg, margin))
    monkeypatch.setattr(mmsc, "sampled_softmax_loss", lambda pos, neg: softmax(-pos, -neg))
    config = CONFIG.model_copy(update={"model": CONFIG.model.model_copy(update={"loss": loss})})
    result = train_and_judge(catalog, content_baseline, config)
    assert not result["learned"], result


def _complement_picks_of_the_same_type(catalog, config) -> tuple:
    """Train, then: the share of every item's top-10 complements (the model's full score) that
    are of its own product type (planted substitutes, not complements), and validation NDCG@10
    of complements."""
    import numpy as np

    from mmsc_dgl.eval.retrieval import topk_all
    from mmsc_dgl.runs.item_model import catalog_pair_term
    parts = build_run(catalog, config, progress=False)
    evaluator = Evaluator(parts.dataset, config, parts.features)
    Trainer(parts.model, config, progress=False).fit(parts.batches(), evaluator.validate)
    model = parts.model.eval()
    emb = model.embed("complement")
    _, top = topk_all(emb, 10, pair_term=catalog_pair_term(model.pair_term("complement"), catalog.num_items),
                      targets=model.targets("complement", emb))
    kind = np.array(catalog.catalog.table.column("product_type").to_pylist())
    return float((kind[top.numpy()] == kind[:, None]).mean()), evaluator.validate(model)["complement"]["NDCG@10"]


def test_a_signature_keeps_look_alikes_out_of_the_complements(catalog):
    """A dot product scores an item's look-alikes (same type, same complements) as its best
    complements: x.x is the largest product.  With half the complement dimensions counted
    negatively, the planted substitutes leave the complement picks, and complements rank better
    (issue 34.18; the quickstart's figures are in docs/results.md)."""
    # content paths off: the path evidence's look-alike link would keep look-alikes out by itself
    plain = NO_PATHS.model_copy(update={"model": NO_PATHS.model.model_copy(update={"complement_signature": 0.0})})
    signed = NO_PATHS.model_copy(update={"model": NO_PATHS.model.model_copy(update={"complement_signature": 0.5})})
    share_plain, ndcg_plain = _complement_picks_of_the_same_type(catalog, plain)
    share_signed, ndcg_signed = _complement_picks_of_the_same_type(catalog, signed)
    assert share_signed < 0.5 * share_plain and ndcg_signed > ndcg_plain, \
        (share_plain, share_signed, ndcg_plain, ndcg_signed)


@pytest.fixture(scope="module")
def trained(catalog):
    """MMSC trained on the catalog (4 epochs, no content paths), with its evaluator."""
    parts = build_run(catalog, NO_PATHS, progress=False)
    evaluator = Evaluator(parts.dataset, NO_PATHS, parts.features)
    Trainer(parts.model, NO_PATHS, progress=False).fit(parts.batches(), evaluator.validate)
    states = {r: {k: v.clone() for k, v in parts.model.state_dict().items()} for r in ("substitute", "complement")}
    return parts, evaluator, states


def _cold_ndcg(evaluator, model, states, cold_start) -> float:
    evaluator.cold_start = cold_start
    return mean_ndcg(evaluator.evaluate(model, states)["cold"])


def test_the_content_tower_places_cold_items_better_than_eq12_and_content(catalog, trained):
    """Cold items (held out with all their edges) ranked by MMSC with the content tower beat
    MMSC's Eq. 12 and the content-cosine baseline.  Measured (2026-12-05): cold NDCG@10, mean of
    both relations, 0.326 with the tower (complements 0.233 -> 0.279; substitutes keep Eq. 12,
    which on this catalog's type-named titles is hard to beat), Eq. 12 0.303, content 0.121."""
    from mmsc_dgl.eval.cold_start import ColdStart
    from mmsc_dgl.train.cold_start import fit_cold_start
    parts, evaluator, states = trained
    eq12 = _cold_ndcg(evaluator, parts.model, states, ColdStart(k=CONFIG.cold_neighbors))
    content_parts = build_run(catalog, CONFIG.with_architecture("content"), progress=False)
    content = mean_ndcg(Evaluator(catalog, CONFIG, content_parts.features).evaluate(content_parts.model)["cold"])
    cold, report = fit_cold_start(parts.model, states, evaluator, k=CONFIG.cold_neighbors, seed=0)
    tower = _cold_ndcg(evaluator, parts.model, states, cold)
    assert tower >= 1.05 * eq12 and tower >= 1.5 * content, (tower, eq12, content, report)
    assert set(report) == {"substitute", "complement"} and report["complement"]["tower_share"] > 0


def test_the_content_tower_with_its_loss_broken_does_not(catalog, trained, monkeypatch):
    from mmsc_dgl.eval.cold_start import ColdStart
    import mmsc_dgl.train.cold_start as cold_start
    parts, evaluator, states = trained
    eq12 = _cold_ndcg(evaluator, parts.model, states, ColdStart(k=CONFIG.cold_neighbors))
    entropy = cold_start.F.cross_entropy
    monkeypatch.setattr(cold_start.F, "cross_entropy", lambda logits, target: entropy(-logits, target))
    cold, report = cold_start.fit_cold_start(parts.model, states, evaluator, k=CONFIG.cold_neighbors, seed=0)
    tower = _cold_ndcg(evaluator, parts.model, states, cold)
    assert tower < 1.05 * eq12, (tower, eq12, report)


def test_aldi_alignment_alone_teaches_the_tower(trained, monkeypatch):
    """``cold_start: aldi`` adds ALDI's alignment with the trained model's scores to the tower's
    loss.  With the tower's own softmax reversed, the alignment alone still teaches it to rank
    pseudo-cold items' partners; without the alignment the same tower learns nothing.
    Measured (2026-12-06, 10 rounds of 20 batches): pseudo-cold NDCG@10 of the tower
    0.283 / 0.347 (substitute / complement) with the alignment, 0.0 / 0.0 without; Eq. 12 0.440 / 0.373."""
    import mmsc_dgl.train.cold_start as cold_start
    parts, evaluator, states = trained
    entropy = cold_start.F.cross_entropy
    monkeypatch.setattr(cold_start.F, "cross_entropy", lambda logits, target: entropy(-logits, target))
    towers = {}
    for distill in (True, False):
        _, report = cold_start.fit_cold_start(parts.model, states, evaluator, k=CONFIG.cold_neighbors, seed=0,
                                              rounds=10, steps_per_round=20, distill=distill)
        towers[distill] = [report[r]["pseudo_cold_NDCG@10"]["tower"] for r in ("substitute", "complement")]
        assert all(report[r]["distilled"] is distill for r in report)
    assert min(towers[True]) >= 0.2 and max(towers[False]) <= 0.1, towers


def _two_tower_cold(catalog, broken: bool = False, monkeypatch=None) -> tuple:
    import mmsc_dgl.models.two_tower as two_tower
    if broken:  # rewards every other candidate over the positive (the masked ones stay last)
        entropy = two_tower.F.cross_entropy
        monkeypatch.setattr(two_tower.F, "cross_entropy",
                            lambda logits, target: entropy((-logits).nan_to_num(posinf=-1e4), target))
    config = CONFIG.with_architecture("two-tower")
    parts = build_run(catalog, config, progress=False)
    evaluator = Evaluator(parts.dataset, config, parts.features)
    before = mean_ndcg(evaluator.evaluate(parts.model)["cold"])
    Trainer(parts.model, config, progress=False).fit(parts.batches(), evaluator.validate)
    return before, mean_ndcg(evaluator.evaluate(parts.model)["cold"])


def test_the_content_two_tower_learns_to_place_cold_items(catalog, content_baseline, monkeypatch):
    """The content two-tower baseline (issue 31.2) is trained on warm edges and ranks cold items
    by the same towers; it beats its untrained self and content cosine on them, and does not
    when its loss is reversed.  Measured (2026-12-05): cold NDCG@10 0.277 trained, 0.119
    untrained, content cosine 0.121; reversed 0.016."""
    content_parts = build_run(catalog, CONFIG.with_architecture("content"), progress=False)
    content = mean_ndcg(Evaluator(catalog, CONFIG, content_parts.features).evaluate(content_parts.model)["cold"])
    before, after = _two_tower_cold(catalog)
    assert after >= before + 0.05 and after >= 1.2 * content, (before, after, content)
    _, broken = _two_tower_cold(catalog, broken=True, monkeypatch=monkeypatch)
    assert broken < before + 0.05 or broken < 1.2 * content, (before, broken, content)



def _evidence_ranks_cold_items(catalog, monkeypatch=None, shuffle: bool = False) -> tuple:
    """Cold NDCG@10 (mean of both relations) of MMSC's path-evidence term alone (every embedding
    row zero), before and after training with content paths; ``shuffle`` gives every item
    random look-alikes instead of its nearest ones in content space."""
    import mmsc_dgl.nn.path_evidence as path_evidence
    from mmsc_dgl.eval.evaluate import evaluate_embeddings
    if shuffle:
        nearest = path_evidence.content_neighbours

        def random_neighbours(content, k, candidates=None, sources=None):
            src, dst = nearest(content, k, candidates=candidates, sources=sources)
            return src, dst[torch.randperm(dst.numel(), generator=torch.Generator().manual_seed(0))]
        monkeypatch.setattr(path_evidence, "content_neighbours", random_neighbours)
    torch.manual_seed(0)
    parts = build_run(catalog, CONFIG, progress=False)
    evaluator = Evaluator(parts.dataset, CONFIG, parts.features)
    model = parts.model

    def evidence_alone() -> float:
        model.eval()
        rows = torch.zeros(catalog.num_items, model.embed("substitute").shape[1])
        scorers = {r: model.ranking_scorer(r, rows) for r in ("substitute", "complement")}
        return mean_ndcg(evaluate_embeddings(scorers, catalog.splits.cold, evaluator.sampler, "cold", ks=[10]))
    before = evidence_alone()
    Trainer(model, CONFIG, progress=False).fit(parts.batches(), evaluator.validate)
    return before, evidence_alone()


def test_content_paths_rank_cold_items_by_their_look_alikes_partners(catalog, monkeypatch):
    """Issue 31: with content paths (the default) the path evidence scores an item without edges
    by the partners of its nearest items in content space.  Alone (no embedding), after training
    it ranks cold items' held-out partners far above its untrained self; with the look-alikes
    drawn at random (the content signal switched off, everything else equal) the same criterion
    fails.  Measured (2026-12-06): cold NDCG@10 of the evidence alone, mean of both relations,
    0.228 trained with the nearest look-alikes (untrained: 0.063), 0.026 with random ones
    (untrained: 0.010).
    The real-data figures are in docs/results.md ("Content paths")."""
    assert CONFIG.model.content_paths > 0
    before, after = _evidence_ranks_cold_items(catalog)
    assert after >= before + 0.1 and after >= 0.15, (before, after)
    before_random, after_random = _evidence_ranks_cold_items(catalog, monkeypatch, shuffle=True)
    assert not (after_random >= before_random + 0.1 and after_random >= 0.15), (before_random, after_random)
