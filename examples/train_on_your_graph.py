"""Use mmsc_dgl from another graph project: your graph, in your schema, in; a model that answers
by your ids out.

    python examples/train_on_your_graph.py

Steps: a DGL heterograph with its own names (node type 'product', edge types 'also_viewed' and
'also_bought', a 'user' node type, features in ndata); a dataset with splits; train MMSC, with
a meta-path through users; query by SKU; save one file and load it back.
"""
from __future__ import annotations

import logging

import dgl
import torch

import mmsc_dgl

logger = logging.getLogger("train_on_your_graph")


def your_graph():
    """Stand-in for your own data: the synthetic catalog's edges and titles, renamed as a shop
    would name them, with a user node type and 64-d node features."""
    data = mmsc_dgl.generate_synthetic(num_items=3000, seed=0)
    names = {"substitute": "also_viewed", "complement": "also_bought"}
    edges = {("product", names[r], "product"): (torch.from_numpy(e.src), torch.from_numpy(e.dst))
             for r, e in data.edges.items()}
    gen = torch.Generator().manual_seed(0)
    users, rated = torch.randint(0, 500, (5000,), generator=gen), torch.randint(0, 3000, (5000,), generator=gen)
    edges[("user", "rated", "product")] = (users, rated)
    edges[("product", "rated_by", "user")] = (rated, users)  # the reverse type: walks go back to products
    graph = dgl.heterograph(edges, num_nodes_dict={"product": 3000, "user": 500})
    # your features: here a random projection of hashed titles stands in for your encoder's output
    from mmsc_dgl.features.hashed import hashed_text_features
    hashed = hashed_text_features(data.catalog.table, dim=256).tokens[:, 0]
    graph.nodes["product"].data["feat"] = hashed @ torch.randn(256, 64, generator=gen)
    return graph, data.catalog.titles(), [f"SKU-{i:05d}" for i in range(3000)]


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    graph, titles, skus = your_graph()
    # 1. Your schema in: which node type holds items, which edge types are which relation.
    dataset = mmsc_dgl.dataset_from_graph(graph, ntype="product", feat="feat", item_ids=skus, titles=titles,
                                          relations={"also_viewed": "substitute", "also_bought": "complement"})
    logger.info("left out: %s; kept for meta-paths: %s", dataset.report.format(), dataset.side)
    # 2. Train: meta-path tables (s and c up to 2 hops, and products that share a user), your
    #    features, MMSC, early stopping.
    through_users = [("product", "rated_by", "user"), ("user", "rated", "product")]
    config = mmsc_dgl.TrainConfig(epochs=3, seed=0, metapaths=["s", "c", "s-c", "c-s", "s-s", "c-c", through_users])
    result = mmsc_dgl.train(dataset, "runs/your_graph", config, overwrite=True, progress=False)
    logger.info("test NDCG@10: %s", {r: round(m["NDCG@10"], 4) for r, m in result.metrics["test"].items()})
    # 3. Query by your ids.
    model = mmsc_dgl.load_model("runs/your_graph")
    top = model.topk([skus[0]], "complement", k=5)
    logger.info("complements of %r: %s", titles[0], [titles[int(j)] for j in top.nodes[0]])
    # 4. One file, loadable where neither DGL nor the dataset is.
    path = model.save("runs/your_graph.mmsc", overwrite=True)
    logger.info("saved to %s; loads back with mmsc_dgl.load_model(%r)", path, str(path))


if __name__ == "__main__":
    main()
