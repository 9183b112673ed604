"""Feature backends, the resumable cache, and training picking the cache up."""
import importlib.util

import numpy as np
import pyarrow as pa
import pytest

from mmsc_dgl.config import SyntheticConfig
from mmsc_dgl.data.catalog import ItemCatalog
from mmsc_dgl.data.prepare import prepare
from mmsc_dgl.errors import DataError
from mmsc_dgl.features.base import FeatureExtractor
from mmsc_dgl.features.cache import extract_features, load_feature_cache, read_meta


class CountingExtractor(FeatureExtractor):
    """Deterministic stand-in that counts the items it computes."""

    backend, model, tokens, dim = "counting", "toy", 3, 4

    def __init__(self):
        self.calls = 0

    def extract(self, items):
        self.calls += items.num_rows
        ids = items.column("item_id").to_pylist()
        seed = np.array([sum(map(ord, i)) for i in ids], dtype=np.float32)
        tokens = np.stack([np.outer(seed + t, np.arange(1, 5)) for t in range(3)], axis=1).astype(np.float32)
        mask = np.ones((len(ids), 3), dtype=bool)
        mask[:, 2] = seed % 2 == 0
        return tokens, mask


@pytest.fixture
def small_dataset(tmp_path):
    prepare(synthetic=SyntheticConfig(num_items=90, seed=2), out=tmp_path / "ds")
    return tmp_path / "ds"


def test_cache_round_trip_and_resume(small_dataset, tmp_path):
    full = extract_features(small_dataset, extractor=CountingExtractor(), chunk_size=20, batch_size=7,
                            out=tmp_path / "full.parquet", progress=False)
    assert full.complete and full.computed_items == 90
    first = CountingExtractor()
    part = extract_features(small_dataset, extractor=first, chunk_size=20, batch_size=7,
                            out=tmp_path / "resumed.parquet", progress=False, stop_after_chunks=1)
    assert not part.complete and first.calls == 20
    assert (tmp_path / "resumed.parquet.parts" / "chunk-000000.parquet").exists()
    second = CountingExtractor()
    done = extract_features(small_dataset, extractor=second, chunk_size=20, batch_size=7,
                            out=tmp_path / "resumed.parquet", progress=False)
    assert done.complete and second.calls == 70  # the finished chunk was not recomputed
    assert (tmp_path / "full.parquet").read_bytes() == (tmp_path / "resumed.parquet").read_bytes()
    assert not (tmp_path / "resumed.parquet.parts").exists()
    catalog = ItemCatalog.load(small_dataset / "items.parquet")
    feats = load_feature_cache(tmp_path / "full.parquet", catalog)
    assert feats.tokens.shape == (90, 3, 4) and feats.mask.shape == (90, 3)
    expect, expect_mask = CountingExtractor().extract(catalog.table)
    assert np.array_equal(feats.tokens.numpy(), expect) and np.array_equal(feats.mask.numpy(), expect_mask)
    meta = read_meta(tmp_path / "full.parquet")
    assert meta["backend"] == "counting" and meta["dim"] == 4 and meta["tokens"] == 3
    # A second call with the same settings does nothing.
    again = CountingExtractor()
    assert extract_features(small_dataset, extractor=again, out=tmp_path / "full.parquet",
                            chunk_size=20, progress=False).computed_items == 0 and again.calls == 0


def test_a_slow_chunk_shows_progress_inside_it(small_dataset, tmp_path, monkeypatch, caplog):
    """Magazine is one 4,096-item chunk, about 5 minutes of the text model on 2 cores, which
    printed nothing until it ended (issue 34.17): lines now come within a chunk too."""
    import mmsc_dgl.features.cache as cache
    monkeypatch.setattr(cache, "PROGRESS_EVERY", 0.0)
    with caplog.at_level("INFO", logger="mmsc_dgl.progress"):
        extract_features(small_dataset, extractor=CountingExtractor(), chunk_size=100, batch_size=30,
                         out=tmp_path / "f.parquet", progress=False)
    inside = [r.getMessage() for r in caplog.records if "of 90 items" in r.getMessage()]
    assert [line.split("|")[0].strip() for line in inside] == [f"features: chunk 1/1, {n} of 90 items"
                                                              for n in (30, 60)], caplog.text
    assert all("ETA" in line for line in inside)


def test_cache_refuses_other_settings_and_other_catalogs(small_dataset, tmp_path):
    out = tmp_path / "f.parquet"
    extract_features(small_dataset, extractor=CountingExtractor(), out=out, progress=False)
    other = CountingExtractor()
    other.dim = 8
    with pytest.raises(DataError, match=r"made differently.*dim: 4 -> 8.*overwrite=True"):
        extract_features(small_dataset, extractor=other, out=out, progress=False)
    foreign = ItemCatalog.from_ids([f"X{i}" for i in range(90)])
    with pytest.raises(DataError, match="extract features for this dataset"):
        load_feature_cache(out, foreign)
    extract_features(small_dataset, extractor=CountingExtractor(), out=tmp_path / "p.parquet",
                     chunk_size=30, progress=False, stop_after_chunks=1)
    with pytest.raises(DataError, match="unfinished extraction with other settings"):
        extract_features(small_dataset, extractor=CountingExtractor(), out=tmp_path / "p.parquet",
                         chunk_size=10, progress=False)


def test_training_picks_up_the_cache(small_dataset):
    from mmsc_dgl.data.dataset import load_dataset
    from mmsc_dgl.features.load import load_features
    extract_features(small_dataset, extractor=CountingExtractor(), progress=False)
    feats = load_features("auto", load_dataset(small_dataset), dim=16)
    assert feats.tokens.shape == (90, 3, 4) and feats.source == "counting:toy"


def test_text_backend_on_real_magazines(magazine_path, tmp_path):
    pytest.importorskip("sentence_transformers")
    from mmsc_dgl.data.amazon import read_amazon
    from mmsc_dgl.features.text import TextExtractor
    catalog = read_amazon([magazine_path], progress=False).catalog
    # Pairs picked by reading the file: two quilting, two golf, two guitar, two cycling magazines.
    pairs = {"quilt": ("B000060MIH", "B000063XJJ"), "golf": ("B00005N7QD", "B00005N7QE"),
             "guitar": ("B00005N7QL", "B00007B9MB"), "cycling": ("B00005NINB", "B00006KOMK")}
    ids = [i for pair in pairs.values() for i in pair]
    rows = catalog.table.take(pa.array(catalog.index_of(ids)))
    extractor = TextExtractor()
    tokens, mask = extractor.extract(rows)
    assert tokens.shape == (8, 1, 384) and mask.all() and extractor.dim == 384
    vec = {i: tokens[k, 0] for k, i in enumerate(ids)}
    names = list(pairs)
    for a, (x, y) in pairs.items():
        related = float(vec[x] @ vec[y])
        for b in names:
            if b != a:
                assert related > float(vec[x] @ vec[pairs[b][0]]), (a, b)


def test_clip_random_init_images_and_masks(tmp_path):
    pytest.importorskip("open_clip")
    from PIL import Image
    from mmsc_dgl.features.clip import ClipExtractor
    Image.new("RGB", (40, 30), (200, 10, 10)).save(tmp_path / "red.png")
    items = pa.table({"item_id": ["a", "b", "c", "d"], "title": ["red mug", "blue mug", "", "phone"],
                      "category": pa.array([["Home"], ["Home"], [], ["Phones"]], pa.list_(pa.string())),
                      "description": ["", "", "", ""],
                      "image": ["red.png", "http://example.invalid/x.jpg", None, "missing.png"]})
    with pytest.raises(DataError, match="needs local weights.*--random-init"):
        ClipExtractor("ViT-B-32")
    extractor = ClipExtractor("ViT-B-32", random_init=True, image_root=str(tmp_path))
    tokens, mask = extractor.extract(items)
    assert tokens.shape == (4, 2, extractor.dim) and extractor.describe()["checkpoint_hash"] == "random-init"
    assert mask[:, 0].tolist() == [True, False, False, False]   # only the local image loads
    assert mask[:, 1].tolist() == [True, True, False, True]     # item c has no text at all
    assert np.allclose(np.linalg.norm(tokens[0, 0]), 1, atol=1e-4)
    report = extractor.report()
    assert report["images_loaded"] == 1 and report["items_without_image"] == 1
    assert sum(report["image_failures"].values()) == 2          # unreachable URL, missing file


def test_blip2_needs_lavis_or_says_how(tmp_path):
    from mmsc_dgl.features.blip2 import Blip2Extractor, INSTALL_RECIPE
    if importlib.util.find_spec("lavis") is not None:
        with pytest.raises(DataError, match="blip2_pretrained.pth"):
            Blip2Extractor(checkpoint=str(tmp_path / "nope.pth"))
        pytest.skip("LAVIS is installed here: only the missing-weights message was checked")
    with pytest.raises(DataError) as err:
        Blip2Extractor(checkpoint="x.pth")
    assert "its own venv" in str(err.value) and "salesforce-lavis" in str(err.value)
    assert "pip install" in INSTALL_RECIPE


def test_unknown_backend_and_nan_cache(small_dataset, tmp_path):
    from mmsc_dgl.features.cache import make_extractor
    with pytest.raises(DataError, match="unknown feature backend"):
        make_extractor("sound")

    class NaNExtractor(CountingExtractor):
        def extract(self, items):
            tokens, mask = super().extract(items)
            tokens[0, 0, 0] = np.nan
            return tokens, mask

    extract_features(small_dataset, extractor=NaNExtractor(), out=tmp_path / "nan.parquet", progress=False)
    with pytest.raises(DataError, match="NaN or inf"):
        load_feature_cache(tmp_path / "nan.parquet")
