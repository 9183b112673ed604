import numpy as np
import pytest

from mmsc_dgl.data.synthetic import COMPLEMENTS, PRODUCT_TYPES, generate_synthetic
from mmsc_dgl.config import SyntheticConfig
from mmsc_dgl.errors import DataError


@pytest.fixture(scope="module")
def data():
    return generate_synthetic(num_items=3000, seed=4, noise_rate=0.2, cold_fraction=0.1)


def test_titles_look_like_listings(data):
    table = data.catalog.table
    titles = table.column("title").to_pylist()
    types = table.column("product_type").to_pylist()
    brands = table.column("brand").to_pylist()
    for title, kind, brand in zip(titles[:200], types, brands):
        assert title.startswith(brand + " ") and kind in title
    assert set(types) <= set(PRODUCT_TYPES)
    assert table.column("category")[0].as_py()[-1] == types[0]


def test_planted_relations_and_noise(data):
    types = np.array(data.catalog.table.column("product_type").to_pylist())
    pairs = {frozenset(p) for p in COMPLEMENTS}
    sub, comp = data.edges["substitute"], data.edges["complement"]
    clean = ~sub.data["is_noise"]
    assert np.all(types[sub.src[clean]] == types[sub.dst[clean]])
    assert np.all(types[sub.src[~clean]] != types[sub.dst[~clean]])
    clean_c = ~comp.data["is_noise"]
    assert all(frozenset((a, b)) in pairs for a, b in zip(types[comp.src[clean_c]], types[comp.dst[clean_c]]))
    assert not any(frozenset((a, b)) in pairs for a, b in zip(types[comp.src[~clean_c]], types[comp.dst[~clean_c]]))
    for rel in (sub, comp):
        assert 0.17 < rel.data["is_noise"].mean() < 0.23


def test_long_tail_and_cold_items(data):
    degree = data.edges["substitute"].degrees(3000)
    assert degree.max() > 8 * np.median(degree)
    cold = data.catalog.table.column("is_cold_start").to_numpy()
    assert 0.07 < cold.mean() < 0.13


def test_deterministic_and_seed_sensitive():
    a = generate_synthetic(num_items=500, seed=1)
    b = generate_synthetic(SyntheticConfig(num_items=500, seed=1))
    c = generate_synthetic(num_items=500, seed=2)
    assert a.catalog.table.equals(b.catalog.table)
    assert np.array_equal(a.edges["complement"].src, b.edges["complement"].src)
    assert not a.catalog.table.equals(c.catalog.table)


def test_config_is_validated():
    with pytest.raises(Exception):
        SyntheticConfig(num_items=10)
    with pytest.raises(DataError, match="noise_rate"):
        SyntheticConfig.from_mapping({"noise_rate": 1.5})
