"""The experiment grid: cells, caching, tables, improvement arithmetic, plots, CLI."""
import json
import shutil

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from mmsc_dgl import RELATIONS
from mmsc_dgl.cli import main
from mmsc_dgl.errors import DataError
from mmsc_dgl.experiments import ExperimentConfig, load_experiment, run_experiment
from mmsc_dgl.experiments.report import seconds_to_match, summarise, time_to_best

TINY_TRAIN = {"epochs": 1, "batch_size": 512, "val_queries": 100, "metapaths": "hops:2", "max_neighbors": 4, "cold_rounds": 2,
              "model": {"hidden": 16, "heads": 2, "semantic_hidden": 8, "ssl_nodes": 32}}


def tiny_config(**extra) -> dict:
    config = {
        "name": "tiny", "seeds": [0, 1], "train": TINY_TRAIN,
        "datasets": {"syn": {"synthetic": {"num_items": 250, "seed": 3}},
                     "missing": {"inputs": ["no/such/file.json.gz"], "optional": True}},
        "models": {"mmsc": {"role": "reference", "label": "MMSC"},
                   "content": {"role": "baseline", "train": {"architecture": "content"}},
                   "adamic-adar": {"role": "baseline", "train": {"architecture": "adamic-adar"}},
                   "mmsc-hops1": {"train": {"metapaths": "hops:1"}},
                   "mmsc-e-llm": {"e_llm": {"threshold": 0.5}}},
        "noise": {"rates": [0.0, 0.3], "models": ["mmsc", "best-baseline"]},
        "cold_start": {"models": ["mmsc", "content"]},
        "depth": {"models": {1: "mmsc-hops1", 2: "mmsc"}},
        "e_llm": {"models": ["mmsc", "mmsc-e-llm"]},
    }
    config.update(extra)
    return config


def test_grid_runs_caches_and_reports(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_config()))
    config = load_experiment(path)
    result = run_experiment(config, tmp_path / "exp", progress=False)
    best = result.best_baseline["syn"]
    assert best in ("content", "adamic-adar")
    # main grid: 5 variants x 2 seeds; noise: 2 models x 1 extra rate x 2 seeds
    assert len(result.rows) == 10 + 4 and result.computed == 14 and result.cached == 0
    assert result.skipped == {"missing": "inputs missing (optional dataset)"}
    out = tmp_path / "exp"
    for name in ("results.md", "results.json", "noise.png", "cold_start.png", "depth.png"):
        assert (out / name).stat().st_size > 0
    assert (out / "noise.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    payload = json.loads((out / "results.json").read_text())
    # The improvement is (MMSC - best baseline) / best baseline, per relation and metric.
    for rel in RELATIONS:
        mine = np.mean([r["test"][rel]["NDCG@10"] for r in result.rows if r["variant"] == "mmsc" and r["noise"] == 0])
        base = max(np.mean([r["test"][rel]["NDCG@10"] for r in result.rows if r["variant"] == b and r["noise"] == 0])
                   for b in ("content", "adamic-adar"))
        got = payload["improvement"]["syn"][f"{rel} NDCG@10"]
        assert got["improvement_pct"] == pytest.approx(100 * (mine - base) / base)
    md = (out / "results.md").read_text()
    assert "## syn" in md and "## Noise robustness" in md and "## Cold start" in md and "skipped" in md
    assert "±" in md and "| seeds |" in md and "s to best epoch" in md
    # the CPU time to the later relation's best validation epoch, from each cell's history
    for row in result.rows:
        if row["variant"] in ("content", "adamic-adar"):  # nothing to train
            assert row["seconds_to_best"] is None
        else:
            assert 0 < row["seconds_to_best"] <= row["epoch_seconds"] * row["epochs_run"] + 1e-6
    # A rerun computes nothing; a new seed computes only its cells.
    again = run_experiment(config, out, progress=False)
    assert again.computed == 0 and again.cached == 14
    assert [r["test"] for r in again.rows] == [r["test"] for r in result.rows]
    # Cells know their dataset by content, not by path: a moved or copied experiment stays finished.
    moved = tmp_path / "elsewhere" / "exp"
    shutil.copytree(out, moved)
    assert run_experiment(config, moved, progress=False).computed == 0
    # The new seed's cells in two processes: the rows come in the grid's order, and a cell
    # computed alone gives the same figures.
    more = run_experiment(config, out, seeds=[0, 1, 2], progress=False, jobs=2)
    assert more.computed == 7
    assert [(r["variant"], r["seed"]) for r in more.rows[:15]] == [(v, s) for v in config.models for s in (0, 1, 2)]
    alone = next(r for r in more.rows if r["variant"] == "mmsc" and r["seed"] == 2 and r["noise"] == 0)
    shutil.rmtree(out / "cells" / "syn" / "mmsc" / "noise-0" / "seed-2")
    again = run_experiment(config, out, seeds=[0, 1, 2], progress=False)
    assert again.computed == 1
    assert next(r for r in again.rows if r["variant"] == "mmsc" and r["seed"] == 2 and r["noise"] == 0)["test"] \
        == alone["test"]
    # A changed setting recomputes exactly the cells it touches.
    changed = config.model_copy(update={"models": {**config.models, "content": config.models["content"].model_copy(
        update={"train": {"architecture": "content", "feature_dim": 64}})}})
    assert run_experiment(changed, out, progress=False).computed == 2 + (4 if best == "content" else 0) // 2


def test_summary_statistics():
    rows = [{"dataset": "d", "variant": "v", "label": "v", "seed": s, "noise": 0.0, "epoch_seconds": 1.0,
             "wall_seconds": 2.0, "test": {r: {"HR@10": x, "NDCG@10": x / 2} for r in RELATIONS}, "cold": None}
            for s, x in enumerate([0.2, 0.4])]
    summary = summarise(rows)
    mean, std, n = summary[("d", "v", 0.0)]["test"]["substitute"]["HR@10"]
    assert (mean, n) == (pytest.approx(0.3), 2) and std == pytest.approx(np.std([0.2, 0.4], ddof=1))
    assert "cold" not in summary[("d", "v", 0.0)]


def test_time_to_best_compares_mmsc_with_the_strongest_baseline_that_trains():
    def row(variant, ndcg, seconds):
        return {"dataset": "d", "variant": variant, "label": variant, "seed": 0, "noise": 0.0,
                "epoch_seconds": 1.0, "wall_seconds": 1.0, "seconds_to_best": seconds, "cold": None,
                "test": {r: {"HR@10": ndcg, "NDCG@10": ndcg} for r in RELATIONS}}
    config = ExperimentConfig.model_validate(tiny_config(models={
        "mmsc": {"role": "reference"}, "adamic-adar": {"role": "baseline", "train": {"architecture": "adamic-adar"}},
        "lightgcn": {"role": "baseline", "label": "LightGCN", "train": {"architecture": "lightgcn"}},
        "gat": {"role": "baseline", "train": {"architecture": "gat"}}}, noise=None, cold_start=None, depth=None,
        e_llm=None))
    # Adamic-Adar is the best baseline but trains nothing; LightGCN beats GAT among those that train.
    rows = [row("mmsc", 0.5, 30.0), row("adamic-adar", 0.45, None), row("lightgcn", 0.4, 12.0), row("gat", 0.3, 5.0)]
    timing = time_to_best(config, summarise(rows), "d")
    assert timing == {"mmsc_seconds": 30.0, "baseline": "LightGCN", "baseline_seconds": 12.0, "ratio": 2.5,
                      "match_seconds": None, "matched": 0, "seeds": 0, "match_ratio": None}
    assert time_to_best(config, summarise(rows[:2]), "d") is None


def test_time_to_the_baselines_quality_needs_both_relations_at_once():
    def curve(*points):
        return [{"seconds": t, "substitute": s, "complement": c} for t, s, c in points]
    lightgcn = curve((4.0, 0.30, 0.20), (8.0, 0.40, 0.35), (12.0, 0.38, 0.36))   # best: 0.40 and 0.36
    # substitutes pass 0.40 at 10 s, complements pass 0.36 only at 20 s
    mmsc = curve((10.0, 0.41, 0.30), (20.0, 0.42, 0.36), (30.0, 0.45, 0.40))
    assert seconds_to_match(mmsc, lightgcn) == 20.0
    assert seconds_to_match(mmsc[:1], lightgcn) is None and seconds_to_match(mmsc, []) is None

    def row(variant, seed, seconds, validation):
        return {"dataset": "d", "variant": variant, "label": variant, "seed": seed, "noise": 0.0,
                "epoch_seconds": 1.0, "wall_seconds": 1.0, "seconds_to_best": seconds, "cold": None,
                "validation": validation, "test": {r: {"HR@10": 0.5, "NDCG@10": 0.5} for r in RELATIONS}}
    config = ExperimentConfig.model_validate(tiny_config(models={
        "mmsc": {"role": "reference"}, "lightgcn": {"role": "baseline", "label": "LightGCN",
                                                    "train": {"architecture": "lightgcn"}}},
        noise=None, cold_start=None, depth=None, e_llm=None))
    # seed 1: MMSC never reaches LightGCN's complements; it counts among the seeds, not the mean
    rows = [row("mmsc", 0, 30.0, mmsc), row("lightgcn", 0, 12.0, lightgcn),
            row("mmsc", 1, 30.0, mmsc[:1]), row("lightgcn", 1, 12.0, lightgcn)]
    timing = time_to_best(config, summarise(rows), "d", rows)
    assert (timing["match_seconds"], timing["matched"], timing["seeds"]) == (20.0, 1, 2)
    assert timing["match_ratio"] == pytest.approx(20.0 / 12.0)
    # a baseline whose recorded time rounds to 0 gives an infinite ratio, as "ratio" does
    instant = [dict(r, seconds_to_best=0.0) if r["variant"] == "lightgcn" else r for r in rows]
    timing = time_to_best(config, summarise(instant), "d", instant)
    assert timing["ratio"] == timing["match_ratio"] == float("inf")


def test_config_errors(tmp_path):
    with pytest.raises(DataError, match="reference"):
        ExperimentConfig.from_mapping({**tiny_config(), "models": {"a": {"role": "baseline",
                                                                         "train": {"architecture": "content"}}}})
    with pytest.raises(DataError, match="unknown models"):
        ExperimentConfig.from_mapping({**tiny_config(), "cold_start": {"models": ["nope"]}})
    with pytest.raises(DataError, match="architecture"):
        ExperimentConfig.from_mapping({**tiny_config(noise=None, cold_start=None, depth=None, e_llm=None),
                                       "models": {"m": {"role": "reference", "train": {"architecture": "gcn"}}}})
    with pytest.raises(DataError, match="exactly one of"):
        ExperimentConfig.from_mapping({**tiny_config(), "datasets": {"x": {}}})
    config = ExperimentConfig.from_mapping({**tiny_config(), "datasets": {
        "x": {"inputs": [str(tmp_path / "absent.json.gz")]}}})
    with pytest.raises(DataError, match="input file missing"):
        run_experiment(config, tmp_path / "exp", progress=False)


def test_cli_experiment_and_report_only(tmp_path):
    cfg = tiny_config(seeds=[4], noise=None, depth=None, e_llm=None,
                      models={"mmsc": {"role": "reference"}, "content": {"role": "baseline",
                                                                          "train": {"architecture": "content"}}})
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    runner = CliRunner()
    res = runner.invoke(main, ["experiment", str(path), "--out", str(tmp_path / "e"), "--seed", "7"])
    assert res.exit_code == 0, res.output
    assert "2 cells (2 computed, 0 cached)" in res.output
    assert (tmp_path / "e" / "cells" / "syn" / "mmsc" / "noise-0" / "seed-7" / "metrics.json").exists()
    res = runner.invoke(main, ["experiment", str(path), "--out", str(tmp_path / "e"), "--report-only"])
    assert res.exit_code == 0 and "2 cells (0 computed, 2 cached)" in res.output
    # a cell made with other settings than the config now asks for is not reported as if it were
    changed = {**cfg, "models": {**cfg["models"], "mmsc": {"role": "reference", "train": {"lr": 0.002}}}}
    path.write_text(yaml.safe_dump(changed))
    res = runner.invoke(main, ["experiment", str(path), "--out", str(tmp_path / "e"), "--report-only"])
    assert res.exit_code == 0 and "1 cells (0 computed, 1 cached)" in res.output, res.output
    assert "made with other settings" in res.output and "syn/mmsc/noise-0/seed-7" in res.output
    res = runner.invoke(main, ["experiment", str(path), "--out", str(tmp_path / "empty"), "--report-only"])
    assert res.exit_code == 2 and "no experiment here" in res.output


def test_fast_config_runs_every_model_and_experiment(tmp_path):
    """The CI-sized grid of examples/experiments/fast.yaml, end to end."""
    from conftest import REPO
    config = load_experiment(REPO / "examples" / "experiments" / "fast.yaml")
    full = load_experiment(REPO / "examples" / "experiments" / "full.yaml")
    assert set(full.models) - set(config.models) <= {"mmsc-hops2"}  # fast covers what full reports
    result = run_experiment(config, tmp_path / "fast", progress=False)
    assert {r["variant"] for r in result.rows} == set(config.models)
    assert all(0 <= r["test"][rel]["NDCG@10"] <= 1 for r in result.rows for rel in RELATIONS)
    # After its one epoch the reference model is above a random ranking (NDCG@10 about 0.013
    # against this catalog's negatives), averaged over both relations.
    for row in (r for r in result.rows if r["variant"] == config.reference and r["noise"] == 0):
        assert sum(row["test"][rel]["NDCG@10"] for rel in RELATIONS) / 2 > 0.025, row["test"]
    assert {r["noise"] for r in result.rows} == {0.0, 0.2}
    for name in ("results.md", "results.json", "noise.png", "cold_start.png", "depth.png"):
        assert (tmp_path / "fast" / name).exists()
    # MMSC's time to its best epoch against the strongest baseline that trains, in both reports
    timing = json.loads((tmp_path / "fast" / "results.json").read_text())["time_to_best"]
    assert all(t["baseline"] in ("LightGCN", "GAT", "HAN", "DecGCN") and t["ratio"] > 0 for t in timing.values())
    # and the time to that baseline's quality, from every seed's validation curves
    assert all(t["seeds"] == len(config.seeds) for t in timing.values())
    assert "CPU time to the best validation epoch" in (tmp_path / "fast" / "results.md").read_text()


def test_real_config_runs_on_a_reduced_grid(tmp_path):
    """examples/experiments/real.yaml, reduced: one seed, one short epoch, every model on Gift
    Cards (hashed text instead of MiniLM, which takes minutes here) and MMSC with category
    tokens on Beauty.  Skipped where ../shared/data is absent."""
    from conftest import REPO, SHARED_DATA
    real = load_experiment(REPO / "examples" / "experiments" / "real.yaml")
    if not all(p.exists() for spec in real.datasets.values() for p in map(real.resolve, spec.inputs)):
        pytest.skip(f"the real datasets are not at {SHARED_DATA}")
    assert set(real.datasets) == {"magazine", "gift-cards", "beauty"}
    assert real.train_config("beauty", "mmsc", 0).features == "categories"
    small = {"epochs": 1, "steps_per_epoch": 2, "val_queries": 50, "test_queries": 100, "max_neighbors": 4,
             "cold_rounds": 2,
             "model": {"hidden": 16, "heads": 2, "semantic_hidden": 8, "ssl_nodes": 32}}
    data = real.model_dump(exclude={"source"})
    data["seeds"], data["train"] = [0], {**data["train"], **small}
    data["datasets"] = {"gift-cards": {**data["datasets"]["gift-cards"], "features": None,
                                       "train": {"features": "hashed"}},
                        "beauty": data["datasets"]["beauty"]}
    for spec in data["datasets"].values():
        spec["inputs"] = [str(real.resolve(p)) for p in spec["inputs"]]
    data["datasets"]["beauty"]["train"].update(steps_per_epoch=2, epochs=1, test_queries=100, metapaths="s,c")
    # every model on Gift Cards; MMSC and Adamic-Adar on Beauty (category tokens, parquet inputs)
    gift = ExperimentConfig.model_validate({**data, "datasets": {"gift-cards": data["datasets"]["gift-cards"]}})
    beauty = ExperimentConfig.model_validate({
        **data, "datasets": {"beauty": data["datasets"]["beauty"]}, "cold_start": None,
        "models": {k: v for k, v in data["models"].items() if k in ("mmsc", "adamic-adar")}})
    rows = run_experiment(gift, tmp_path / "gift", progress=False).rows
    rows += run_experiment(beauty, tmp_path / "beauty", progress=False).rows
    assert {r["variant"] for r in rows if r["dataset"] == "gift-cards"} == set(real.models)
    assert {r["variant"] for r in rows if r["dataset"] == "beauty"} == {"mmsc", "adamic-adar"}
    assert all(0 <= r["test"][rel]["NDCG@10"] <= 1 for r in rows for rel in RELATIONS)


def test_two_experiments_published_to_one_folder_keep_their_own_plots(tmp_path):
    from mmsc_dgl.experiments.grid import report_only
    cfg = tiny_config(seeds=[0], noise=None, depth=None, e_llm=None,
                      models={"mmsc": {"role": "reference"}, "content": {"role": "baseline",
                                                                          "train": {"architecture": "content"}}})
    first = ExperimentConfig.model_validate({**cfg, "name": "first"})
    run_experiment(first, tmp_path / "exp", progress=False, publish=tmp_path / "docs")
    second = ExperimentConfig.model_validate({**cfg, "name": "second"})
    report_only(second, tmp_path / "exp", publish=tmp_path / "docs")
    docs = tmp_path / "docs"
    assert (docs / "first-cold_start.png").exists() and (docs / "second-cold_start.png").exists()
    assert "](first-cold_start.png)" in (docs / "first.md").read_text()
    assert "](second-cold_start.png)" in (docs / "second.md").read_text()
    assert not (docs / "cold_start.png").exists()


def test_a_grid_whose_every_dataset_is_absent_reports_and_draws_nothing(tmp_path):
    """A published grid (cold-start.yaml) run where ../shared/data is absent: every dataset is
    optional and skipped; the report says so and no plot is drawn (matplotlib raised on a figure
    of zero columns, a traceback)."""
    config = ExperimentConfig.model_validate(tiny_config(
        seeds=[0], datasets={"missing": {"inputs": ["no/such/file.json.gz"], "optional": True}}))
    result = run_experiment(config, tmp_path / "exp", progress=False)
    assert result.rows == [] and result.skipped == {"missing": "inputs missing (optional dataset)"}
    assert "skipped" in (tmp_path / "exp" / "results.md").read_text()
    assert not list((tmp_path / "exp").glob("*.png"))
