"""Category and brand tokens as learnable content, and items without content."""
import numpy as np
import pyarrow as pa
import torch

from mmsc_dgl.eval.cold_start import ColdStart
from mmsc_dgl.features.categorical import categorical_features
from mmsc_dgl.models.inputs import ItemInput


def catalog():
    return pa.table({
        "item_id": ["a", "b", "c", "d", "e"],
        "category": [["Beauty", "Makeup"], ["Beauty", "Makeup", "Face"], ["Beauty", "Skin"], None, ["Rare"]],
        "brand": ["Acme", "Acme", None, "Zed", None],
    })


def test_tokens_vocabulary_and_pooled_content():
    feats = categorical_features(catalog())
    # tokens on fewer than 2 items (Face, Skin, Zed, Rare) are left out
    assert feats.vocabulary == ["brand:Acme", "category:Beauty", "category:Makeup"]
    assert feats.has_content.tolist() == [True, True, True, False, False]
    pooled = feats.pooled()
    assert pooled.shape == (5, 3)
    torch.testing.assert_close(pooled[0] @ pooled[1], torch.tensor(1.0))      # a and b share every kept token
    assert float(pooled[3].abs().sum()) == 0.0


def test_item_input_learns_token_embeddings():
    feats = categorical_features(catalog())
    torch.manual_seed(0)
    layer = ItemInput(5, 8, feats, id_embeddings=True)
    assert "categories(vocabulary=3)+id-embeddings" in repr(layer)
    q = layer.of(torch.tensor([0, 1, 3]))
    q.sum().backward()
    grad = layer.token_embedding.weight.grad
    assert grad[1:].abs().sum() > 0 and grad[0].abs().sum() == 0   # padding never learns
    torch.testing.assert_close(layer()[torch.tensor([0, 1, 3])], q.detach())


def test_cold_items_without_content_keep_their_embeddings():
    emb = torch.randn(5, 4)
    content = torch.tensor([[1.0, 0], [0.9, 0.1], [0, 1.0], [0, 0], [0, 0]])
    out = ColdStart(k=1).fill("complement", emb, content, np.array([0, 3]))
    torch.testing.assert_close(out[3], emb[3])          # no content: nothing to borrow from
    torch.testing.assert_close(out[0], torch.nn.functional.normalize(emb[1], dim=0))  # nearest warm item
    torch.testing.assert_close(out[[1, 2, 4]], emb[[1, 2, 4]])


def test_an_id_only_graph_gets_id_embeddings_not_empty_content(tmp_path):
    from mmsc_dgl.data.prepare import prepare
    from mmsc_dgl.features.load import load_features
    rng = np.random.default_rng(0)
    lines = [f"{'s' if i % 2 else 'c'} {a} {b}" for i, (a, b) in enumerate(rng.integers(0, 60, (400, 2))) if a != b]
    (tmp_path / "e.txt").write_text("\n".join(lines) + "\n")
    ds = prepare([tmp_path / "e.txt"], out=tmp_path / "ds", progress=False)
    assert load_features("auto", ds, 32) is None
    assert load_features("hashed", ds, 32) is None
