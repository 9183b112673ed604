"""Training with and without E_LLM (the judged, filtered training edges) on noisy synthetic catalogs.

    python examples/e_llm_experiment.py --items 3000 --noise 0.2 0.4 --seeds 0 1 2

For each noise rate and seed: prepare the synthetic catalog, judge its training edges with the
offline similarity judge, keep the top half per relation (--keep), and train MMSC on all training
edges and on E_LLM only.  Prints mean and std of test NDCG@10 per relation; writes JSON.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from mmsc_dgl import RELATIONS
from mmsc_dgl.augment.select import augment
from mmsc_dgl.config import SyntheticConfig, TrainConfig
from mmsc_dgl.data.prepare import prepare
from mmsc_dgl.io import atomic_write_json
from mmsc_dgl.runs.training import train

logger = logging.getLogger("e_llm_experiment")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=3000)
    parser.add_argument("--noise", type=float, nargs="*", default=[0.2, 0.4])
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    parser.add_argument("--keep", type=float, default=0.5, help="share of training edges kept per relation")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("runs/e_llm"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    results = []
    for noise in args.noise:
        for seed in args.seeds:
            data_dir = args.out / f"noise{noise}-seed{seed}" / "dataset"
            if not data_dir.exists():
                prepare(synthetic=SyntheticConfig(num_items=args.items, noise_rate=noise, seed=seed), out=data_dir)
            from mmsc_dgl.data.dataset import load_dataset
            n_train = max(len(e) for e in load_dataset(data_dir).splits.train.values())
            e_llm = augment(data_dir, "similarity", top_n=int(args.keep * n_train), progress=False, overwrite=True)
            config = TrainConfig(epochs=args.epochs, seed=seed)
            for name, edges in (("all training edges", None), ("E_LLM", str(e_llm.path))):
                cfg = config.model_copy(update={"train_edges": edges})
                run_dir = args.out / f"noise{noise}-seed{seed}" / ("all" if edges is None else "e_llm")
                metrics = train(data_dir, run_dir, cfg, progress=False,
                                resume=(run_dir / "run.json").exists()).metrics
                results.append({"noise": noise, "seed": seed, "train_edges": name,
                                **{r: metrics["test"][r]["NDCG@10"] for r in RELATIONS}})
    lines = [f"{'noise':>6} {'training edges':<20}" + "".join(f"{r + ' NDCG@10':>26}" for r in RELATIONS)]
    for noise in args.noise:
        for name in ("all training edges", "E_LLM"):
            rows = [x for x in results if x["noise"] == noise and x["train_edges"] == name]
            cells = "".join(f"{np.mean([x[r] for x in rows]):>17.4f} ± {np.std([x[r] for x in rows]):.4f}"
                            for r in RELATIONS)
            lines.append(f"{noise:>6} {name:<20}{cells}")
    logger.info("\n".join(lines))
    atomic_write_json(args.out / "results.json", results)


if __name__ == "__main__":
    main()
