"""Prepare a dataset and use it from another graph project: the heterograph, the catalog,
the training graph and seeded negatives.

    python examples/prepare_and_inspect.py                       # synthetic catalog, 5k items
    python examples/prepare_and_inspect.py --amazon ../shared/data/amazon-2018-magazine/meta_Magazine_Subscriptions.json.gz
"""
from __future__ import annotations

import argparse
import logging

import numpy as np

import mmsc_dgl

logger = logging.getLogger("prepare_and_inspect")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--amazon", help="Amazon metadata file (.json or .json.gz).")
    parser.add_argument("--items", type=int, default=5000, help="Synthetic catalog size.")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    config = mmsc_dgl.PrepareConfig(split=mmsc_dgl.SplitConfig(seed=args.seed))
    if args.amazon:
        ds = mmsc_dgl.prepare([args.amazon], config=config)
    else:
        ds = mmsc_dgl.prepare(synthetic=mmsc_dgl.SyntheticConfig(num_items=args.items, seed=args.seed),
                              config=config)
    logger.info("\n".join(ds.format_summary()))

    g = ds.graph()                 # dgl.heterograph over ('item', relation, 'item')
    train_g = ds.train_graph()     # what a model may learn from
    logger.info("full graph: %s", g)
    logger.info("training graph keeps %d of %d complement edges", train_g.num_edges("complement"),
                g.num_edges("complement"))

    # Three test queries for complements, each with its item's title and 5 of its negatives.
    titles = ds.catalog.titles()
    test = ds.splits.test["complement"]
    sampler = ds.negative_sampler()
    rows = np.arange(min(3, len(test)))
    negatives = sampler.sample("complement", "test", rows, test.src[rows])
    for r, negs in zip(rows, negatives):
        logger.info("%-45s -> %-45s | negatives: %s", titles[test.src[r]][:45], titles[test.dst[r]][:45],
                    "; ".join(titles[n][:25] for n in negs[:5]))


if __name__ == "__main__":
    main()
