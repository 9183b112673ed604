"""Tables (Markdown + JSON) and PNG plots from an experiment's rows.

Every number is a mean ± sample standard deviation over seeds.  MMSC's relative improvement over
the best baseline is computed as the paper reports it: per relation and metric,
``(MMSC - best baseline) / best baseline``, the best baseline chosen separately for each metric.
"""
from __future__ import annotations

import functools
import logging
import os
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from mmsc_dgl.schema import RELATIONS
from mmsc_dgl.eval.evaluate import DEGREE_BUCKETS
from mmsc_dgl.experiments.config import BEST_BASELINE, ExperimentConfig
from mmsc_dgl.io import atomic_write_json, atomic_write_text, atomic_write_with

logger = logging.getLogger(__name__)

METRICS = ("HR@10", "NDCG@10")
DEGREE_NAMES = tuple(name for name, *_ in DEGREE_BUCKETS)


def mean_std(values: Sequence[Optional[float]]) -> Tuple[float, float, int]:
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    if v.size == 0:
        return float("nan"), float("nan"), 0
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0, int(v.size)


def summarise(rows: Sequence[dict]) -> Dict[Tuple[str, str, float], dict]:
    """``(dataset, variant, noise) -> {split: {relation: {metric: (mean, std, n)}}, epoch_seconds, ...}``."""
    groups = defaultdict(list)
    for row in rows:
        groups[(row["dataset"], row["variant"], row["noise"])].append(row)
    out = {}
    for key, group in groups.items():
        entry = {"seeds": sorted(r["seed"] for r in group), "label": group[0]["label"]}
        for split in ("test", "cold"):
            if all(r.get(split) for r in group):
                entry[split] = {rel: {m: mean_std([r[split][rel][m] for r in group]) for m in METRICS}
                                for rel in RELATIONS}
        if all(r.get("test") and "by_bucket" in r["test"][RELATIONS[0]] for r in group):
            entry["test_by_degree"] = {rel: {b: mean_std([r["test"][rel]["by_bucket"].get(b, {}).get("NDCG@10")
                                                          for r in group]) for b in DEGREE_NAMES}
                                       for rel in RELATIONS}
        curves: List[dict] = [r.get("warm_up") or {} for r in group]
        if all(RELATIONS[0] in c for c in curves):
            ks = [k for k in map(str, curves[0]["ks"]) if all(k in c[rel] for c in curves for rel in RELATIONS)]
            entry["warm_up"] = {rel: {k: mean_std([c[rel][k]["NDCG@10"] for c in curves]) for k in ks}
                                for rel in RELATIONS}
            entry["warm_up_items"] = mean_std([c["items"] for c in curves])
        entry["epoch_seconds"] = mean_std([r["epoch_seconds"] for r in group])
        entry["wall_seconds"] = mean_std([r.get("wall_seconds") for r in group])
        entry["seconds_to_best"] = mean_std([r.get("seconds_to_best") for r in group])
        out[key] = entry
    return out


def _fmt(stat, bold: bool = False) -> str:
    mean, std, n = stat
    if n == 0 or np.isnan(mean):
        return "–"
    text = f"{mean:.4f} ± {std:.4f}" if n > 1 else f"{mean:.4f}"
    return f"**{text}**" if bold else text


def improvements(config: ExperimentConfig, summary: dict, dataset: str) -> Dict[str, dict]:
    """Per relation and metric: MMSC's mean, the best baseline's, and the relative change (%)."""
    ref = summary.get((dataset, config.reference, 0.0))
    out: Dict[str, dict] = {}
    if ref is None or "test" not in ref:
        return out
    for rel in RELATIONS:
        for m in METRICS:
            best: Optional[float] = None
            best_name = ""
            for b in config.baselines:
                entry = summary.get((dataset, b, 0.0))
                if entry and "test" in entry and (best is None or entry["test"][rel][m][0] > best):
                    best, best_name = entry["test"][rel][m][0], b
            if best is None:
                continue
            mine = ref["test"][rel][m][0]
            out[f"{rel} {m}"] = {"mmsc": mine, "best_baseline": config.label(best_name), "baseline": best,
                                 "improvement_pct": 100.0 * (mine - best) / best if best > 0 else float("inf")}
    return out


def seconds_to_match(curve: Sequence[dict], target: Sequence[dict]) -> Optional[float]:
    """The CPU seconds after which ``curve`` (a run's validation after each epoch: ``{"seconds":
    spent so far, relation: NDCG@10}``) first reaches the best validation NDCG@10 that
    ``target``'s run reached, on every relation at once; ``None`` if it never does (or either
    run has no validation)."""
    if not curve or not target:
        return None
    best = {r: max(e[r] for e in target) for r in RELATIONS}
    return next((e["seconds"] for e in curve if all(e[r] >= best[r] for r in RELATIONS)), None)


def time_to_best(config: ExperimentConfig, summary: dict, dataset: str,
                 rows: Sequence[dict] = ()) -> Optional[dict]:
    """MMSC's CPU seconds to its best validation epoch (the later relation's; mean over seeds)
    against the strongest baseline that trains: of the baselines with a training time, the one
    with the best mean test NDCG@10 over both relations.  ``None`` where either is missing.

    With the cells' ``rows`` (their validation curves) it also gives the time to the baseline's
    quality: per seed, MMSC's seconds until its validation NDCG@10 first reaches the baseline's
    best on both relations (:func:`seconds_to_match`), the mean over the seeds where it does
    (``match_seconds``, ``matched`` of ``seeds``), and that against the baseline's own seconds to
    its best (``match_ratio``)."""
    ref = summary.get((dataset, config.reference, 0.0))
    if ref is None or not ref["seconds_to_best"][2]:
        return None
    trained = {b: e for b in config.baselines
               if (e := summary.get((dataset, b, 0.0))) and e["seconds_to_best"][2] and "test" in e}
    if not trained:
        return None
    best = max(trained, key=lambda b: np.mean([trained[b]["test"][rel]["NDCG@10"][0] for rel in RELATIONS]))
    mine, theirs = ref["seconds_to_best"][0], trained[best]["seconds_to_best"][0]
    curves: Dict[str, dict] = defaultdict(dict)
    for r in rows:
        if r["dataset"] == dataset and r["noise"] == 0.0 and r["variant"] in (config.reference, best):
            curves[r["seed"]][r["variant"]] = r.get("validation")
    paired = [c for c in curves.values() if c.get(config.reference) and c.get(best)]
    matched = [t for c in paired if (t := seconds_to_match(c[config.reference], c[best])) is not None]
    match = float(np.mean(matched)) if matched else None
    return {"mmsc_seconds": mine, "baseline": config.label(best), "baseline_seconds": theirs,
            "ratio": mine / theirs if theirs > 0 else float("inf"),
            "match_seconds": match, "matched": len(matched), "seeds": len(paired),
            "match_ratio": None if match is None else match / theirs if theirs > 0 else float("inf")}


def _table(header: List[str], rows: List[List[str]]) -> List[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def _ordered_variants(config: ExperimentConfig) -> List[str]:
    roles = {"reference": 0, "baseline": 1, "ablation": 2}
    return sorted(config.models, key=lambda v: (roles[config.models[v].role], list(config.models).index(v)))


def markdown(config: ExperimentConfig, result, summary: dict, plot_prefix: str = "") -> str:
    """The report; plots are linked as ``{plot_prefix}NAME.png``."""
    datasets = [d for d in config.datasets if d not in result.skipped]
    source = config.source or f"{config.name}.yaml"
    try:
        source = str(Path(source).resolve().relative_to(Path.cwd()))
    except ValueError:
        pass
    walls = [r["wall_seconds"] for r in result.rows if r.get("wall_seconds")]
    lines = [f"# Experiment `{config.name}`", "",
             f"Generated by `mmsc-dgl experiment {source}` (tables and plots are written by the code).", "",
             f"Seeds: {', '.join(map(str, sorted({r['seed'] for r in result.rows})))}. "
             "Test split, 1000 sampled negatives per held-out edge; mean ± std over seeds.  "
             f"{len(result.rows)} cells, {sum(walls) / 60:.1f} minutes of training and evaluation in all "
             f"(sum over cells, {os.cpu_count()} CPU cores).", ""]
    for name, why in result.skipped.items():
        lines += [f"Dataset `{name}` was skipped: {why}.", ""]
    for d in datasets:
        lines += [f"## {d}", ""]
        cols = [f"{rel[:5]}. {m}" for rel in RELATIONS for m in METRICS]
        present = [v for v in _ordered_variants(config) if (d, v, 0.0) in summary]
        best = {}
        for rel in RELATIONS:
            for m in METRICS:
                best[(rel, m)] = max(summary[(d, v, 0.0)]["test"][rel][m][0] for v in present)
        rows = []
        for v in present:
            e = summary[(d, v, 0.0)]
            to_best = e["seconds_to_best"]
            rows.append([f"{config.label(v)} ({config.models[v].role})", str(len(e["seeds"]))]
                        + [_fmt(e["test"][rel][m], e["test"][rel][m][0] == best[(rel, m)]) for rel in RELATIONS for m in METRICS]
                        + [f"{e['epoch_seconds'][0]:.1f}", f"{to_best[0]:.0f}" if to_best[2] else "–",
                           f"{e['wall_seconds'][0]:.0f}"])
        lines += _table(["model", "seeds"] + cols + ["s/epoch", "s to best epoch", "s/run"], rows) + [""]
        imp = improvements(config, summary, d)
        if imp:
            lines += [f"MMSC against the best baseline on {d} (relative change, as the paper reports it):", ""]
            lines += _table(["relation, metric", "MMSC", "best baseline", "baseline", "change"],
                            [[k, f"{v['mmsc']:.4f}", v["best_baseline"], f"{v['baseline']:.4f}",
                              f"{v['improvement_pct']:+.1f}%"] for k, v in imp.items()]) + [""]
        timing = time_to_best(config, summary, d, result.rows)
        if timing:
            text = (f"CPU time to the best validation epoch on {d} (mean over seeds): MMSC "
                    f"{timing['mmsc_seconds']:.0f} s, {timing['baseline']} (the strongest baseline that trains) "
                    f"{timing['baseline_seconds']:.0f} s: {timing['ratio']:.1f}x.")
            if timing["matched"]:
                text += (f" MMSC's validation NDCG@10 first reaches {timing['baseline']}'s best on both relations "
                         f"after {timing['match_seconds']:.0f} s ({timing['matched']} of {timing['seeds']} seeds): "
                         f"{timing['match_ratio']:.1f}x the baseline's time to that best.")
            elif timing["seeds"]:
                text += (f" MMSC's validation NDCG@10 does not reach {timing['baseline']}'s best on both "
                         f"relations in any of {timing['seeds']} seeds.")
            lines += [text, ""]
    if config.cold_start:
        lines += ["## Cold start", "", "Items held out with all their edges.  Behaviour models place them by "
                  "their `cold_start` setting: `eq12`, MMSC's Eq. 12 (the mean embedding of the 10 nearest warm "
                  "items in content space), `tower` (the default: a content tower fit to the model's rows "
                  "after training, mixed with Eq. 12; docs/training.md) or `aldi` (the tower also distilled "
                  "from the model's scores); the content baseline ranks by its own "
                  "features.", ""]
        rows = []
        for d in datasets:
            for v in config.cold_start.models:
                e = summary.get((d, v, 0.0))
                if e and "cold" in e:
                    rows.append([d, config.label(v)] + [_fmt(e["cold"][rel][m]) for rel in RELATIONS for m in METRICS])
        lines += _table(["dataset", "model"] + [f"{rel[:5]}. {m}" for rel in RELATIONS for m in METRICS], rows)
        lines += ["", f"![cold start]({plot_prefix}cold_start.png)", ""]
        rows = []
        ks: List[str] = []
        for d in datasets:
            for v in config.cold_start.models:
                e = summary.get((d, v, 0.0))
                if e and "warm_up" in e:
                    ks = ks or list(e["warm_up"][RELATIONS[0]])
                    rows.append([d, config.label(v), f"{e['warm_up_items'][0]:.0f}"]
                                + [_fmt(e["warm_up"][rel].get(k, (float("nan"), 0.0, 0))) for rel in RELATIONS for k in ks])
        if rows:
            lines += ["### Warm-up: new items with their first edges", "",
                      "Cold items with more than 5 held-out edges: k of them are revealed (both relations, a seeded "
                      "order; the model moves the item toward the revealed partners and MMSC also counts paths "
                      "through them, as `ItemModel.add_items` does), and the item's held-out edges after the first 5 "
                      "are ranked, the same targets at every k (test NDCG@10; k = 0 is cold start on these items).", ""]
            lines += _table(["dataset", "model", "items"] + [f"{rel[:5]}. k={k}" for rel in RELATIONS for k in ks], rows)
            lines += ["", f"![warm-up]({plot_prefix}warm_up.png)", ""]
    degree_rows = []
    for d in datasets:
        for v in config.models:
            e = summary.get((d, v, 0.0))
            if e and "test_by_degree" in e:
                degree_rows.append([d, config.label(v)] + [_fmt(e["test_by_degree"][rel][b]) for rel in RELATIONS
                                                           for b in DEGREE_NAMES])
    if degree_rows:
        lines += ["## Test NDCG@10 by the query item's training degree", "",
                  "Test queries grouped by how many training neighbours their source item has (both relations): "
                  "the long tail is where content has to carry the ranking.", ""]
        lines += _table(["dataset", "model"] + [f"{rel[:5]}. {b}" for rel in RELATIONS for b in DEGREE_NAMES],
                        degree_rows) + [""]
    if config.depth:
        lines += ["## Meta-path depth", ""]
        rows = []
        for d in datasets:
            for hops, v in sorted(config.depth.models.items()):
                e = summary.get((d, v, 0.0))
                if e:
                    rows.append([d, str(hops), config.label(v)] + [_fmt(e["test"][rel]["NDCG@10"]) for rel in RELATIONS]
                                + [f"{e['epoch_seconds'][0]:.1f}"])
        lines += _table(["dataset", "hops", "model", "subst. NDCG@10", "compl. NDCG@10", "s/epoch"], rows)
        lines += ["", f"![meta-path depth]({plot_prefix}depth.png)", ""]
    if config.e_llm:
        lines += ["## E_LLM", ""]
        rows = []
        for d in datasets:
            for v in config.e_llm.models:
                e = summary.get((d, v, 0.0))
                if e:
                    rows.append([d, config.label(v)] + [_fmt(e["test"][rel]["NDCG@10"]) for rel in RELATIONS])
        lines += _table(["dataset", "model", "subst. NDCG@10", "compl. NDCG@10"], rows) + [""]
    if config.noise:
        seeds_note = (f" Rate 0 is the main grid's cells (every seed); the other rates use the first "
                      f"{config.noise.num_seeds} seed(s).") if config.noise.num_seeds else ""
        lines += ["## Noise robustness", "",
                  "Random false edges added to the training graph (a share of its edges); evaluation unchanged."
                  + seeds_note, ""]
        rows = []
        for d in [d for d in (config.noise.datasets or datasets) if d in datasets]:
            for v in _noise_variants(config, result, d):
                for rate in config.noise.rates:
                    e = summary.get((d, v, float(rate)))
                    if e:
                        rows.append([d, config.label(v), f"{rate:g}"] + [_fmt(e["test"][rel]["NDCG@10"]) for rel in RELATIONS])
        lines += _table(["dataset", "model", "noise", "subst. NDCG@10", "compl. NDCG@10"], rows)
        lines += ["", f"![noise robustness]({plot_prefix}noise.png)", ""]
    return "\n".join(lines) + "\n"


def _noise_variants(config: ExperimentConfig, result, dataset: str) -> List[str]:
    out: List[str] = []
    assert config.noise is not None  # a noise experiment is configured
    for name in config.noise.models:
        v = result.best_baseline.get(dataset) if name == BEST_BASELINE else name
        if v is not None and v not in out:
            out.append(v)
    return out


def _finish(fig, path: Path) -> Path:
    """Lay out, write atomically as PNG, and release the figure."""
    import matplotlib.pyplot as plt
    fig.tight_layout()
    atomic_write_with(path, lambda tmp: fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png"))
    plt.close(fig)
    return path


def plots(config: ExperimentConfig, result, summary: dict) -> List[Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    datasets = [d for d in config.datasets if d not in result.skipped]
    written: List[Path] = []
    if not datasets:  # every dataset skipped (optional inputs absent): the report says so, no plot
        return written
    if config.noise:
        noise_sets = [d for d in (config.noise.datasets or datasets) if d in datasets]
        if noise_sets:
            fig, axes = plt.subplots(len(noise_sets), 2, figsize=(10, 3.6 * len(noise_sets)), squeeze=False)
            for i, d in enumerate(noise_sets):
                for j, rel in enumerate(RELATIONS):
                    ax = axes[i][j]
                    for v in _noise_variants(config, result, d):
                        pts = [(r, summary[(d, v, float(r))]["test"][rel]["NDCG@10"]) for r in config.noise.rates
                               if (d, v, float(r)) in summary]
                        if pts:
                            ax.errorbar([100 * p[0] for p in pts], [p[1][0] for p in pts], yerr=[p[1][1] for p in pts],
                                        marker="o", capsize=3, label=config.label(v))
                    ax.set_title(f"{d}: {rel}")
                    ax.set_xlabel("false training edges (%)")
                    ax.set_ylabel("test NDCG@10")
                    ax.grid(alpha=0.3)
                    ax.legend(fontsize=8)
            written.append(_finish(fig, result.out / "noise.png"))
    if config.cold_start:
        fig, axes = plt.subplots(1, len(datasets), figsize=(5 * len(datasets), 3.6), squeeze=False)
        for i, d in enumerate(datasets):
            ax = axes[0][i]
            models = [v for v in config.cold_start.models if (d, v, 0.0) in summary and "cold" in summary[(d, v, 0.0)]]
            width = 0.8 / max(len(models), 1)
            for k, v in enumerate(models):
                stats = [summary[(d, v, 0.0)]["cold"][rel]["NDCG@10"] for rel in RELATIONS]
                ax.bar(np.arange(len(RELATIONS)) + k * width, [s[0] for s in stats], width,
                       yerr=[s[1] for s in stats], capsize=3, label=config.label(v))
            ax.set_xticks(np.arange(len(RELATIONS)) + width * (len(models) - 1) / 2, RELATIONS)
            ax.set_title(f"{d}: cold-start items")
            ax.set_ylabel("cold NDCG@10")
            ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2)  # below: bars stay visible
        written.append(_finish(fig, result.out / "cold_start.png"))
        curved = [d for d in datasets if any("warm_up" in summary.get((d, v, 0.0), {}) for v in config.cold_start.models)]
        if curved:
            fig, axes = plt.subplots(len(curved), 2, figsize=(10, 3.4 * len(curved)), squeeze=False)
            for i, d in enumerate(curved):
                for j, rel in enumerate(RELATIONS):
                    ax = axes[i][j]
                    for v in config.cold_start.models:
                        e = summary.get((d, v, 0.0), {})
                        if "warm_up" in e:
                            ks = list(e["warm_up"][rel])
                            stats = [e["warm_up"][rel][k] for k in ks]
                            ax.errorbar([int(k) for k in ks], [s[0] for s in stats], yerr=[s[1] for s in stats],
                                        marker="o", capsize=3, label=config.label(v))
                    ax.set_title(f"{d}: {rel}")
                    ax.set_xlabel("edges revealed per new item (k)")
                    ax.set_ylabel("NDCG@10 of its other edges")
                    ax.grid(alpha=0.3)
                    ax.legend(fontsize=8)
            written.append(_finish(fig, result.out / "warm_up.png"))
    if config.depth:
        fig, axes = plt.subplots(1, len(datasets), figsize=(5 * len(datasets), 3.6), squeeze=False)
        for i, d in enumerate(datasets):
            ax = axes[0][i]
            hops = [h for h, v in sorted(config.depth.models.items()) if (d, v, 0.0) in summary]
            for rel in RELATIONS:
                stats = [summary[(d, config.depth.models[h], 0.0)]["test"][rel]["NDCG@10"] for h in hops]
                ax.errorbar(hops, [s[0] for s in stats], yerr=[s[1] for s in stats], marker="o", capsize=3, label=rel)
            ax.set_xticks(hops)
            ax.set_xlabel("meta-path hops (at most)")
            ax.set_ylabel("test NDCG@10")
            ax.set_title(f"{d}: meta-path depth")
            twin = ax.twinx()
            twin.plot(hops, [summary[(d, config.depth.models[h], 0.0)]["epoch_seconds"][0] for h in hops],
                      "k--", marker="s", label="s/epoch")
            twin.set_ylabel("seconds per epoch")
            ax.legend(loc="upper left", fontsize=8)
            twin.legend(loc="lower right", fontsize=8)
        written.append(_finish(fig, result.out / "depth.png"))
    return written


def write_report(config: ExperimentConfig, result, publish=None) -> dict:
    """``results.json``, ``results.md`` and the PNG plots in the experiment directory, and a copy
    of the Markdown (as ``NAME.md``) and the plots (as ``NAME-PLOT.png``) in ``publish`` (e.g.
    ``docs/results``)."""
    summary = summarise(result.rows)
    datasets = [d for d in config.datasets if d not in result.skipped]
    payload = {
        "name": config.name, "config": config.model_dump(exclude={"source"}),
        "rows": result.rows, "skipped": result.skipped, "best_baseline": result.best_baseline,
        "improvement": {d: improvements(config, summary, d) for d in datasets},
        "time_to_best": {d: time_to_best(config, summary, d, result.rows) for d in datasets},
        "summary": [{"dataset": d, "variant": v, "noise": n, **e} for (d, v, n), e in sorted(summary.items())],
    }
    atomic_write_json(result.out / "results.json", payload)
    atomic_write_text(result.out / "results.md", markdown(config, result, summary))
    written = plots(config, result, summary)
    if publish is not None:
        publish = Path(publish)
        publish.mkdir(parents=True, exist_ok=True)
        # Plots carry the experiment's name: two experiments published to one folder keep their own.
        prefix = f"{config.name}-"
        atomic_write_text(publish / f"{config.name}.md", markdown(config, result, summary, plot_prefix=prefix))
        for path in written:
            atomic_write_with(publish / f"{prefix}{path.name}", functools.partial(_copy_to, path))
        atomic_write_json(publish / f"{config.name}.json", {k: v for k, v in payload.items() if k != "rows"})
    logger.info("report: %s, %s and %d plots", result.out / "results.md", result.out / "results.json", len(written))
    return payload


def _copy_to(source: Path, target: Path) -> None:
    import shutil
    shutil.copyfile(source, target)
