"""A synthetic product catalog with planted substitutes and complements (no download needed).

Items come from a small built-in taxonomy of product types.  Each item has a brand and variant
attributes, so titles read like real listings ("Acme 128GB smartphone, black").

* Substitute edges join items of the same product type (another brand or variant).
* Complement edges join items of paired types (smartphone - phone case, camera - memory card).
* Popularity is Pareto distributed and both ends of an edge are drawn by popularity, so degrees
  are long-tailed.
* A share of edges is noise (a random item of an unrelated type); ``is_noise`` records which.
* A share of items is marked ``is_cold_start``; splits hold them out with all their edges.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Dict, List, Tuple

import numpy as np
import pyarrow as pa

from mmsc_dgl.schema import RELATIONS
from mmsc_dgl.config import SyntheticConfig
from mmsc_dgl.data.catalog import ItemCatalog
from mmsc_dgl.data.edges import RelationEdges, canonical_edges
from mmsc_dgl.data.report import SkipReport

logger = logging.getLogger(__name__)

BRANDS = ["Acme", "Zeno", "Nimbus", "Orion", "Vertex", "Lumo", "Kestrel", "Pico", "Halcyon",
          "Tundra", "Arbor", "Quill", "Brio", "Cobalt", "Fathom", "Juniper", "Solano", "Ridge",
          "Marlow", "Opal", "Ferro", "Aster", "Boreal", "Cinder"]
COLORS = ["black", "white", "silver", "blue", "red", "green", "graphite", "rose gold"]

# name: (top category, sub category, [variant choices], uses colour)
PRODUCT_TYPES: Dict[str, Tuple[str, str, List[str], bool]] = {
    "smartphone": ("Electronics", "Phones", ["64GB", "128GB", "256GB", "512GB"], True),
    "phone case": ("Electronics", "Phone Accessories", ["silicone", "leather", "clear", "rugged"], True),
    "phone charger": ("Electronics", "Phone Accessories", ["20W USB-C", "30W USB-C", "65W GaN", "wireless"], False),
    "screen protector": ("Electronics", "Phone Accessories", ["tempered glass", "matte", "privacy"], False),
    "wireless earbuds": ("Electronics", "Audio", ["noise-cancelling", "sport", "compact"], True),
    "laptop": ("Electronics", "Computers", ["13-inch 8GB", "14-inch 16GB", "15-inch 16GB", "16-inch 32GB"], True),
    "laptop sleeve": ("Electronics", "Computer Accessories", ["13-inch", "14-inch", "15-inch", "16-inch"], True),
    "wireless mouse": ("Electronics", "Computer Accessories", ["ergonomic", "travel", "silent"], True),
    "mechanical keyboard": ("Electronics", "Computer Accessories", ["tenkeyless", "full-size", "60%"], True),
    "USB-C hub": ("Electronics", "Computer Accessories", ["4-port", "7-in-1", "10-in-1"], False),
    "external SSD": ("Electronics", "Storage", ["500GB", "1TB", "2TB", "4TB"], False),
    "monitor": ("Electronics", "Computers", ["24-inch", "27-inch", "32-inch 4K"], False),
    "mirrorless camera": ("Electronics", "Cameras", ["24MP", "33MP", "45MP"], False),
    "camera lens": ("Electronics", "Cameras", ["35mm f/1.8", "50mm f/1.4", "85mm f/1.8", "24-70mm f/2.8"], False),
    "memory card": ("Electronics", "Storage", ["64GB", "128GB", "256GB"], False),
    "camera bag": ("Electronics", "Camera Accessories", ["sling", "backpack", "shoulder"], True),
    "tripod": ("Electronics", "Camera Accessories", ["travel", "carbon", "tabletop"], False),
    "coffee maker": ("Home & Kitchen", "Coffee", ["10-cup", "12-cup", "single-serve"], True),
    "espresso machine": ("Home & Kitchen", "Coffee", ["manual", "semi-automatic", "super-automatic"], True),
    "coffee grinder": ("Home & Kitchen", "Coffee", ["burr", "blade", "hand"], True),
    "coffee filters": ("Home & Kitchen", "Coffee", ["100-count", "200-count", "500-count"], False),
    "coffee beans": ("Grocery", "Coffee", ["light roast", "medium roast", "dark roast", "decaf"], False),
    "frying pan": ("Home & Kitchen", "Cookware", ["8-inch", "10-inch", "12-inch"], False),
    "chef's knife": ("Home & Kitchen", "Cutlery", ["6-inch", "8-inch", "10-inch"], False),
    "cutting board": ("Home & Kitchen", "Cutlery", ["bamboo", "maple", "plastic"], False),
    "knife sharpener": ("Home & Kitchen", "Cutlery", ["whetstone", "pull-through", "electric"], False),
    "tennis racket": ("Sports & Outdoors", "Tennis", ["100 sq in", "98 sq in", "junior"], True),
    "tennis balls": ("Sports & Outdoors", "Tennis", ["3-pack", "4-pack", "pressureless"], False),
    "grip tape": ("Sports & Outdoors", "Tennis", ["overgrip", "replacement grip"], True),
    "running shoes": ("Sports & Outdoors", "Running", ["road", "trail", "racing"], True),
    "running socks": ("Sports & Outdoors", "Running", ["ankle", "crew", "compression"], True),
    "sports watch": ("Sports & Outdoors", "Running", ["GPS", "GPS + heart rate", "solar"], True),
    "water bottle": ("Sports & Outdoors", "Running", ["500ml", "750ml", "1L insulated"], True),
    "fountain pen": ("Office Products", "Writing", ["fine nib", "medium nib", "broad nib"], True),
    "ink cartridges": ("Office Products", "Writing", ["6-pack", "12-pack", "converter"], False),
    "notebook": ("Office Products", "Paper", ["A5 dotted", "A5 lined", "A4 grid"], True),
    "dog food": ("Pet Supplies", "Dogs", ["chicken", "salmon", "grain-free"], False),
    "dog bowl": ("Pet Supplies", "Dogs", ["stainless", "ceramic", "slow-feed"], True),
    "dog leash": ("Pet Supplies", "Dogs", ["6 ft", "retractable", "hands-free"], True),
}

COMPLEMENTS: List[Tuple[str, str]] = [
    ("smartphone", "phone case"), ("smartphone", "phone charger"), ("smartphone", "screen protector"),
    ("smartphone", "wireless earbuds"), ("laptop", "laptop sleeve"), ("laptop", "wireless mouse"),
    ("laptop", "USB-C hub"), ("laptop", "external SSD"), ("laptop", "monitor"),
    ("monitor", "mechanical keyboard"), ("mechanical keyboard", "wireless mouse"),
    ("mirrorless camera", "camera lens"), ("mirrorless camera", "memory card"),
    ("mirrorless camera", "camera bag"), ("mirrorless camera", "tripod"), ("camera lens", "camera bag"),
    ("coffee maker", "coffee filters"), ("coffee maker", "coffee beans"), ("espresso machine", "coffee beans"),
    ("espresso machine", "coffee grinder"), ("coffee grinder", "coffee beans"),
    ("frying pan", "chef's knife"), ("chef's knife", "cutting board"), ("chef's knife", "knife sharpener"),
    ("tennis racket", "tennis balls"), ("tennis racket", "grip tape"),
    ("running shoes", "running socks"), ("running shoes", "sports watch"), ("running shoes", "water bottle"),
    ("sports watch", "water bottle"), ("fountain pen", "ink cartridges"), ("fountain pen", "notebook"),
    ("dog food", "dog bowl"), ("dog food", "dog leash"), ("dog bowl", "dog leash"),
]


@dataclass
class SyntheticCatalog:
    """What :func:`generate_synthetic` returns: items and the planted edges, as node ids."""

    catalog: ItemCatalog
    edges: Dict[str, RelationEdges]
    config: SyntheticConfig
    report: SkipReport


def _titles(rng: np.random.Generator, types: np.ndarray, names: List[str], n: int):
    brand = rng.integers(0, len(BRANDS), n)
    colour = rng.integers(0, len(COLORS), n)
    variant_pick = rng.random(n)
    titles, descriptions, categories, brands = [], [], [], []
    for i in range(n):
        name = names[types[i]]
        top, sub, variants, coloured = PRODUCT_TYPES[name]
        variant = variants[int(variant_pick[i] * len(variants))]
        b = BRANDS[brand[i]]
        title = f"{b} {variant} {name}"
        if coloured:
            title += f", {COLORS[colour[i]]}"
        titles.append(title)
        descriptions.append(f"The {b} {name} in the {variant} version. Part of the {sub.lower()} "
                            f"range from {b}.")
        categories.append([top, sub, name])
        brands.append(b)
    return titles, descriptions, categories, brands


def _draw_within(rng: np.random.Generator, groups: np.ndarray, order: np.ndarray, cum: np.ndarray,
                 start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """For each entry of ``groups`` draw one item of that group, by popularity."""
    lo, hi = cum[start[groups]], cum[end[groups]]
    u = lo + rng.random(len(groups)) * (hi - lo)
    pos = np.searchsorted(cum, u, side="right") - 1
    pos = np.clip(pos, start[groups], end[groups] - 1)
    return order[pos]


def generate_synthetic(config: SyntheticConfig | None = None, **overrides) -> SyntheticCatalog:
    """Generate the synthetic catalog.  The same config (seed included) gives the same data.

    Example:
        >>> from mmsc_dgl.data.synthetic import generate_synthetic
        >>> data = generate_synthetic(num_items=1000, seed=1)
        >>> len(data.catalog)
        1000
    """
    config = SyntheticConfig(**{**(config.model_dump() if config else {}), **overrides})
    rng = np.random.default_rng(config.seed)
    n = config.num_items
    names = list(PRODUCT_TYPES)
    n_types = len(names)
    type_weight = rng.dirichlet(np.full(n_types, 4.0))
    types = rng.choice(n_types, size=n, p=type_weight)
    popularity = rng.pareto(config.popularity_shape, n) + 1.0

    titles, descriptions, categories, brands = _titles(rng, types, names, n)
    cold = rng.random(n) < config.cold_fraction
    table = pa.table({
        "item_id": pa.array([f"SYN{i:07d}" for i in range(n)], pa.string()),
        "title": titles,
        "title_source": pa.array(["title"] * n, pa.string()),
        "description": descriptions,
        "category": pa.array(categories, pa.list_(pa.string())),
        "brand": brands,
        "image": pa.nulls(n, pa.string()),
        "product_type": pa.array([names[t] for t in types], pa.string()),
        "is_cold_start": pa.array(cold),
    })
    catalog = ItemCatalog(table)

    # Items sorted by type; a cumulative popularity lets us draw within a type by searchsorted.
    order = np.argsort(types, kind="stable")
    cum = np.concatenate([[0.0], np.cumsum(popularity[order])])
    counts = np.bincount(types, minlength=n_types)
    start = np.concatenate([[0], np.cumsum(counts)[:-1]])
    end = start + counts
    present = counts > 0

    partners: List[List[int]] = [[] for _ in range(n_types)]
    for a, b in COMPLEMENTS:
        ia, ib = names.index(a), names.index(b)
        partners[ia].append(ib)
        partners[ib].append(ia)
    partner_ok = np.zeros((n_types, n_types), dtype=bool)
    for t, ps in enumerate(partners):
        partner_ok[t, ps] = True
    partner_ok &= present[None, :]

    p_src = popularity / popularity.sum()
    report = SkipReport()
    edges: Dict[str, RelationEdges] = {}
    for relation, degree in (("substitute", config.substitute_degree),
                             ("complement", config.complement_degree)):
        n_pairs = int(round(degree * n / 2))
        n_noise = int(round(config.noise_rate * n_pairs))
        n_true = n_pairs - n_noise
        if relation == "substitute":
            eligible = present[types] & (counts[types] > 1)
        else:
            eligible = partner_ok[types].any(axis=1)
        p = np.where(eligible, p_src, 0.0)
        p = p / p.sum()
        # Over-draw, then drop self-loops and repeats, so the planted count is met.
        src_parts, dst_parts = [], []
        have = 0
        seen = np.zeros(0, dtype=np.int64)
        for _ in range(8):
            want = int((n_true - have) * 1.3) + 16
            src = rng.choice(n, size=want, p=p)
            if relation == "substitute":
                dst_type = types[src]
            else:
                ok = partner_ok[types[src]]
                pick = (rng.random(want) * ok.sum(axis=1)).astype(np.int64)
                dst_type = np.argmax(np.cumsum(ok, axis=1) > pick[:, None], axis=1)
            dst = _draw_within(rng, dst_type, order, cum, start, end)
            keep = src != dst
            src, dst = src[keep], dst[keep]
            code = np.minimum(src, dst) * n + np.maximum(src, dst)
            code, first = np.unique(code, return_index=True)
            new = ~np.isin(code, seen)
            first = np.sort(first[new])
            seen = np.concatenate([seen, code[new]])
            src_parts.append(src[first])
            dst_parts.append(dst[first])
            have += len(first)
            if have >= n_true:
                break
        src = np.concatenate(src_parts)[:n_true]
        dst = np.concatenate(dst_parts)[:n_true]

        # Noise: a random (popularity-weighted) item of a type that is wrong for the relation.
        nsrc = rng.choice(n, size=n_noise * 2 + 16, p=p_src)
        ndst = rng.choice(n, size=n_noise * 2 + 16, p=p_src)
        if relation == "substitute":
            wrong = types[nsrc] != types[ndst]
        else:
            wrong = ~partner_ok[types[nsrc], types[ndst]] & (types[nsrc] != types[ndst])
        nsrc, ndst = nsrc[wrong][:n_noise], ndst[wrong][:n_noise]
        all_src = np.concatenate([src, nsrc])
        all_dst = np.concatenate([dst, ndst])
        noise = np.concatenate([np.zeros(len(src), bool), np.ones(len(nsrc), bool)])
        edges[relation] = canonical_edges(all_src, all_dst, n, relation, report,
                                          data={"is_noise": noise}, symmetric=True)
    logger.info("synthetic catalog: %d items, %s", n,
                ", ".join(f"{r} {len(edges[r]):,} edges" for r in RELATIONS))
    return SyntheticCatalog(catalog, edges, config, report)
