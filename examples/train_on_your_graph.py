"""Use mmsc_dgl from another graph project: your heterograph in, item embeddings and
recommendations out.

    python examples/train_on_your_graph.py

Steps: build (or load) a DGL heterograph with node type 'item' and edge types 'substitute' and
'complement'; turn it into a dataset with splits; train MMSC; embed; query.
"""
from __future__ import annotations

import logging

import dgl
import torch

import mmsc_dgl

logger = logging.getLogger("train_on_your_graph")


def your_graph():
    """Stand-in for your own data: the synthetic catalog's edges as a plain DGL heterograph."""
    data = mmsc_dgl.generate_synthetic(num_items=3000, seed=0)
    graph = dgl.heterograph({("item", r, "item"): (torch.from_numpy(e.src), torch.from_numpy(e.dst))
                             for r, e in data.edges.items()}, num_nodes_dict={"item": 3000})
    titles = data.catalog.titles()
    return graph, titles


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    graph, titles = your_graph()
    # 1. Splits (held-out edges, seeded negatives, cold-start items) from the graph.
    dataset = mmsc_dgl.dataset_from_graph(graph, titles=titles)
    # 2. Train: meta-path tables, content features from the titles, MMSC, early stopping.
    config = mmsc_dgl.TrainConfig(epochs=3, seed=0)
    result = mmsc_dgl.train(dataset, "runs/your_graph", config, overwrite=True, progress=False)
    logger.info("test NDCG@10: %s", {r: round(m["NDCG@10"], 4) for r, m in result.metrics["test"].items()})
    # 3. Embed and query from Python.
    trainer = mmsc_dgl.load_run("runs/your_graph")
    # Each relation keeps the weights of its best validation epoch.
    complements = trainer.use_relation("complement").embed("complement")   # [items, 64], L2-normalised
    item = 0
    scores = complements @ complements[item]
    scores[item] = float("-inf")
    top = torch.topk(scores, 5).indices.tolist()
    logger.info("complements of %r: %s", titles[item], [titles[j] for j in top])


if __name__ == "__main__":
    main()
