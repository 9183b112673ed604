"""Training MMSC: mini-batches over training edges, Adam, early stopping on validation NDCG@10,
an atomic checkpoint every epoch, and ``resume`` that ends where an uninterrupted run would."""
from __future__ import annotations

import contextlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Union

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from tqdm.auto import tqdm

from mmsc_dgl import RELATIONS
from mmsc_dgl.config import TrainConfig
from mmsc_dgl.data.edges import RelationEdges
from mmsc_dgl.errors import DataError
from mmsc_dgl.eval.evaluate import cold_start_embeddings, evaluate_embeddings
from mmsc_dgl.features.base import ContentFeatures
from mmsc_dgl.features.hashed import hashed_text_features
from mmsc_dgl.io import atomic_write_json, atomic_write_text
from mmsc_dgl.metapath.table import MetaPathTables
from mmsc_dgl.models.registry import USES_METAPATHS, build_model
from mmsc_dgl.progress import duration, eta, report
from mmsc_dgl.train.batches import edge_batches, full_steps
from mmsc_dgl.train.checkpoint import load_checkpoint, save_checkpoint

logger = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
MODEL = "model.pt"
METRICS = "metrics.json"
TABLES = "metapaths.pt"


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except RuntimeError:
        raise DataError(f"--device {device!r} is not a device.", fix="use auto, cpu, cuda or cuda:N.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DataError(f"--device {device} was asked for, but no CUDA device is visible.", fix="use --device cpu.")
    return device


def resolve_impl(impl: str, device: torch.device) -> str:
    """On CPU, DGL's kernels when DGL is installed (2-4x the reference there); Triton on CUDA."""
    if impl != "auto":
        return impl
    if device.type == "cpu":
        import importlib.util
        return "dgl" if importlib.util.find_spec("dgl") is not None else "reference"
    return "auto"


def load_features(spec: str, dataset, dim: int) -> Optional[ContentFeatures]:
    """``auto`` (the dataset's ``features.parquet`` cache if present, else ``hashed``), ``hashed``,
    ``none``, a feature cache (``.parquet``), or a torch file ``{"item_ids", "tokens", "mask"}``."""
    from mmsc_dgl.features.cache import CACHE_NAME, load_feature_cache
    if spec == "auto":
        cache = Path(dataset.root) / CACHE_NAME if dataset.root else None
        if cache is not None and cache.exists():
            logger.info("content features from the cache %s", cache)
            return load_feature_cache(cache, dataset.catalog)
        spec = "hashed"
    if spec == "none":
        return None
    if spec == "hashed":
        return hashed_text_features(dataset.catalog.table, dim=dim)
    path = Path(spec)
    if path.suffix == ".parquet":
        return load_feature_cache(path, dataset.catalog)
    if not path.exists():
        raise DataError("no feature file here.", path=path, fix="pass --features hashed, none, or a feature file.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a pickle of anything else, a text file, a damaged file
        raise DataError("not a torch feature file (or a damaged one); arbitrary pickles are refused.", path=path,
                        fix="pass a feature cache (.parquet, mmsc-dgl features) or torch.save({'item_ids', "
                            "'tokens', 'mask'}).") from None
    if not isinstance(state, dict):
        raise DataError(f"the feature file holds a {type(state).__name__}, not a dict.", path=path,
                        fix="torch.save({'item_ids': [...], 'tokens': [N, T, D], 'mask': [N, T]}).")
    for key in ("item_ids", "tokens", "mask"):
        if key not in state:
            raise DataError(f"the feature file has no {key!r}.", path=path,
                            fix="write item_ids, tokens [N, T, D] and mask [N, T].")
    ids = dataset.catalog.ids.to_pylist()
    if list(state["item_ids"]) != ids:
        given = set(state["item_ids"])
        missing = [i for i in ids if i not in given][:3]
        raise DataError(f"the feature file's {len(state['item_ids'])} item ids do not match the catalog's "
                        f"{len(ids)} (in order); missing e.g. {missing}.", path=path,
                        fix="extract features for this dataset's items.parquet, in its order.")
    try:
        return ContentFeatures(state["tokens"].float(), state["mask"].bool(), source=str(path))
    except ValueError as err:
        raise DataError(str(err), path=path, fix="re-extract the features.") from err


def load_train_edges(dataset, path: Optional[str]) -> Dict[str, RelationEdges]:
    """The supervised training edges: the split's, or a filtered subset (E_LLM) from a file."""
    if path is None:
        edges = dataset.splits.train
    else:
        try:
            table = pq.read_table(path)
        except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid is a ValueError
            raise DataError(f"not a parquet edge table ({type(err).__name__}).", path=path,
                            fix="pass the parquet file written by mmsc-dgl augment (relation, src, dst).") from None
        for col in ("relation", "src", "dst"):
            if col not in table.column_names:
                raise DataError(f"the training edge file has no {col!r} column.", path=path,
                                fix="write relation, src, dst (node ids).")
        relation = table.column("relation").cast("string")
        edges = {}
        for r in RELATIONS:
            part = table.filter(pc.equal(relation, r))
            src, dst = part.column("src").to_numpy(), part.column("dst").to_numpy()
            if len(src) and (min(src.min(), dst.min()) < 0 or max(src.max(), dst.max()) >= dataset.num_items):
                raise DataError(f"{r} edges refer to node ids outside 0..{dataset.num_items - 1}.", path=path,
                                fix="use node ids of this dataset.")
            edges[r] = RelationEdges(src, dst)
    for r in RELATIONS:
        if len(edges[r]) == 0:
            raise DataError(f"relation {r!r} has no training edges.", path=path,
                            fix="check the dataset or the training edge file.")
    return edges


@dataclass
class TrainResult:
    run_dir: Path
    metrics: dict
    history: List[dict] = field(default_factory=list)
    best_epoch: Dict[str, int] = field(default_factory=dict)
    dataset: object = None
    """The dataset the run was trained on (set by :func:`mmsc_dgl.train.run.train`)."""


@contextlib.contextmanager
def deterministic_algorithms(enabled: bool):
    """torch's deterministic algorithms for the duration of a block, then the caller's setting.
    On CPU, index_add_/index_put_ otherwise accumulate in a thread-dependent order, and runs
    with the same seed drift apart in the last bits (then in the metrics)."""
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    if enabled:
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])


def _config_fingerprint(config: TrainConfig) -> str:
    return json.dumps(config.resume_identity(), sort_keys=True)


class Trainer:
    """Owns one run directory.  ``fit()`` trains (or resumes) and ``evaluate()`` tests.

    Args:
        dataset: a :class:`~mmsc_dgl.data.dataset.Dataset` (its splits and catalog).
        run_dir: where checkpoints, tables and metrics go.
        config: :class:`~mmsc_dgl.config.TrainConfig`.
        tables: meta-path tables; built from the training graph (needs DGL) when omitted and
            not already in ``run_dir``.
        model: a ready model answering :class:`~mmsc_dgl.models.base.Recommender` (on any
            device), trained in place of ``config.architecture`` (benchmarks compare
            outside encoders this way).
        features: content features already loaded for ``config.features`` (``None``: none);
            by default they are loaded here.
    """

    def __init__(self, dataset, run_dir: Union[str, Path], config: TrainConfig,
                 tables: Optional[MetaPathTables] = None, progress: bool = True, model=None,
                 features: Union[ContentFeatures, None, str] = "config"):
        if config.train_noise > 0:
            if config.train_edges is not None:
                raise DataError("train_noise and train_edges were both given.",
                                fix="inject noise or filter the training edges (E_LLM), not both in one run.")
            from mmsc_dgl.data.noise import inject_training_noise
            dataset = inject_training_noise(dataset, config.train_noise, config.seed)
        self.dataset = dataset
        self.run_dir = Path(run_dir)
        self.config = config
        self.progress = progress
        self.device = resolve_device(config.device)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        # Inputs that can be wrong are read before anything is built or written.
        self.features = (load_features(config.features, dataset, config.feature_dim) if isinstance(features, str)
                         else features)
        self.train_edges = load_train_edges(dataset, config.train_edges)
        needs_tables = model is None and config.architecture in USES_METAPATHS
        self.tables = (tables or self._tables()) if needs_tables else tables
        self.sampler = dataset.negative_sampler()
        torch.manual_seed(config.seed)
        if model is None:
            try:
                model = build_model(config.architecture, dataset.num_items, config.model, tables=self.tables,
                                    train_edges=self.train_edges, features=self.features,
                                    impl=resolve_impl(config.impl, self.device))
            except ValueError as err:
                raise DataError(f"cannot build {config.architecture}: {err}",
                                fix="change the model settings or the features named above.") from err
        self.model = model.to(self.device)
        params = list(self.model.parameters())
        self.optimizer = (torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
                          if self.model.trainable and params else None)

    def _tables(self) -> MetaPathTables:
        from mmsc_dgl.metapath.spec import parse_metapaths
        path = self.run_dir / TABLES
        wanted = {"strategy": "walk", "max_neighbors": self.config.max_neighbors, "num_walks": self.config.num_walks,
                  "seed": self.config.seed, "metapaths": [p.name for p in parse_metapaths(self.config.metapaths)],
                  "train_noise": self.config.train_noise}
        if path.exists():
            tables = MetaPathTables.load(path)
            if {k: tables.info.get(k) for k in wanted} == wanted:
                return tables
            logger.info("%s was built with other settings; rebuilding it", path)
        from mmsc_dgl.metapath.build import build_metapath_tables
        tables = build_metapath_tables(self.dataset.train_graph(), self.config.metapaths, strategy="walk",
                                       max_neighbors=self.config.max_neighbors, num_walks=self.config.num_walks,
                                       seed=self.config.seed, progress=self.progress, device=str(self.device))
        tables.info["train_noise"] = self.config.train_noise
        tables.save(path)
        return tables

    # --- training --------------------------------------------------------------------------
    def _edge_tensors(self) -> dict:
        return {r: (torch.from_numpy(self.train_edges[r].src), torch.from_numpy(self.train_edges[r].dst))
                for r in RELATIONS}

    def _full_steps(self) -> int:
        return full_steps({r: len(e) for r, e in self.train_edges.items()}, self.config.batch_size)

    def steps_per_epoch(self) -> int:
        full = self._full_steps()
        return min(full, self.config.steps_per_epoch) if self.config.steps_per_epoch else full

    def _batches(self, generator: torch.Generator):
        cfg = self.config
        return edge_batches(self._edge_tensors(), self.dataset.num_items, cfg.batch_size, cfg.model.negatives,
                            generator, cfg.steps_per_epoch, self.device)

    def validate(self) -> dict:
        self.model.eval()
        scorers = self._scorers(self.model.embed_all() if self.model.has_embeddings else None)
        result = evaluate_embeddings(scorers, self.dataset.splits.val, self.sampler, "val", ks=[10],
                                     max_queries=self.config.val_queries, seed=self.config.seed, device=self.device)
        self.model.train()
        return result

    def _scorers(self, embeddings: Optional[Dict[str, torch.Tensor]]) -> dict:
        """Per relation, what ranks candidates: an embedding matrix, or the model's ``score``."""
        if embeddings is not None:
            return embeddings
        model = self.model
        return {r: (lambda src, cand, r=r: model.score(src.unsqueeze(1).expand_as(cand), cand, r))
                for r in RELATIONS}

    def fit(self, resume: bool = False, stop_after: Optional[int] = None) -> TrainResult:
        """Train until ``epochs`` or early stopping.  ``stop_after`` ends after that many epochs
        of this call (used to test interrupted runs)."""
        with deterministic_algorithms(self.config.deterministic):
            return self._fit(resume, stop_after)

    def _fit(self, resume: bool, stop_after: Optional[int]) -> TrainResult:
        cfg = self.config
        ckpt_path = self.run_dir / CHECKPOINT
        # Model selection per relation: each relation keeps the weights of its best validation
        # epoch, and training stops when no relation has improved for `patience` epochs.
        state = {"epoch": 0, "best": {r: -1.0 for r in RELATIONS}, "best_epoch": {r: -1 for r in RELATIONS},
                 "bad_epochs": 0, "history": [], "best_state": {r: None for r in RELATIONS}}
        if resume and ckpt_path.exists():
            ckpt = load_checkpoint(ckpt_path)
            missing = [k for k in ("config", "model", "optimizer", "rng_state", *state) if k not in ckpt]
            if missing:
                raise DataError(f"the checkpoint lacks {', '.join(missing)}.", path=ckpt_path,
                                fix="train the run again from scratch with --overwrite.")
            if ckpt["config"] != _config_fingerprint(cfg):
                raise DataError("the checkpoint was made with another config.", path=ckpt_path,
                                fix="resume with the same config, or train into a new --out.")
            self.model.load_state_dict(ckpt["model"])
            self.optimizer.load_state_dict(ckpt["optimizer"])
            torch.set_rng_state(ckpt["rng_state"])
            state = {k: ckpt[k] for k in state}
            logger.info("resumed %s at epoch %d", self.run_dir, state["epoch"])
        elif ckpt_path.exists() and not resume:
            raise DataError(f"{self.run_dir} already holds a run.", path=ckpt_path,
                            fix="pass --resume to continue it, --overwrite to replace it, or choose another --out.")
        atomic_write_text(self.run_dir / "config.json", cfg.model_dump_json(indent=2))
        self.model.train()
        ran = 0
        fit_started = time.perf_counter()
        if self.optimizer is None:  # nothing to learn (content cosine, heuristics): evaluate as is
            logger.info("%r has nothing to train; evaluating it as it is", self.model)
            state["epoch"] = cfg.epochs
        while state["epoch"] < cfg.epochs and state["bad_epochs"] < cfg.patience:
            epoch = state["epoch"]
            generator = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
            started = time.perf_counter()
            sums: Dict[str, float] = {}
            steps = edges = 0
            bar = tqdm(self._batches(generator), desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False,
                       total=self.steps_per_epoch(),
                       disable=None if self.progress else True)
            for batch in bar:
                parts = self.model.loss(batch)
                self.optimizer.zero_grad(set_to_none=True)
                parts["total"].backward()
                self.optimizer.step()
                for k, v in parts.items():
                    sums[k] = sums.get(k, 0.0) + float(v)
                steps += 1
                edges += sum(batch[r][0].numel() for r in RELATIONS if r in batch)
                bar.set_postfix(loss=f"{float(parts['total']):.4f}")
            train_seconds = time.perf_counter() - started
            val = self.validate()
            record = {"epoch": epoch + 1, **{f"loss_{k}": v / steps for k, v in sums.items()},
                      "train_seconds": round(train_seconds, 3), "steps": steps, "edges": edges,
                      **{f"val_{r}_{m}": val[r][m] for r in RELATIONS for m in ("HR@10", "NDCG@10")},
                      "seconds": round(time.perf_counter() - started, 2)}
            state["history"].append(record)
            improved = False
            for r in RELATIONS:
                if val[r]["NDCG@10"] > state["best"][r]:
                    improved = True
                    state["best"][r] = val[r]["NDCG@10"]
                    state["best_epoch"][r] = epoch + 1
                    state["best_state"][r] = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
            state["bad_epochs"] = 0 if improved else state["bad_epochs"] + 1
            state["epoch"] = epoch + 1
            save_checkpoint(ckpt_path, {**state, "model": self.model.state_dict(),
                                        "optimizer": self.optimizer.state_dict(),
                                        "rng_state": torch.get_rng_state(), "config": _config_fingerprint(cfg)})
            # Printed once the epoch's checkpoint is on disk: a line seen is an epoch kept.
            report("epoch %d/%d: loss %.4f | val NDCG@10 substitute %.4f, complement %.4f | %s | ETA %s (at most)",
                   epoch + 1, cfg.epochs, record.get("loss_total", float("nan")),
                   val["substitute"]["NDCG@10"], val["complement"]["NDCG@10"], duration(record["seconds"]),
                   eta(ran + 1, ran + 1 + cfg.epochs - epoch - 1, time.perf_counter() - fit_started))
            ran += 1
            if stop_after is not None and ran >= stop_after:
                return TrainResult(self.run_dir, {}, state["history"], dict(state["best_epoch"]))
        self.relation_states = {r: state["best_state"][r] or self.model.state_dict() for r in RELATIONS}
        save_checkpoint(self.run_dir / MODEL, {"states": self.relation_states, "config": cfg.model_dump_json(),
                                                "best_epoch": state["best_epoch"]})
        metrics = self.evaluate()
        metrics["best_epoch"] = state["best_epoch"]
        metrics["epochs_run"] = state["epoch"]
        atomic_write_json(self.run_dir / METRICS, metrics)
        atomic_write_json(self.run_dir / "history.json", state["history"])
        return TrainResult(self.run_dir, metrics, state["history"], dict(state["best_epoch"]))

    # --- evaluation ------------------------------------------------------------------------
    relation_states: Optional[Dict[str, dict]] = None

    @torch.no_grad()
    def embeddings(self) -> Optional[Dict[str, torch.Tensor]]:
        """Each relation's embeddings, from that relation's selected weights (None for a model
        that scores pairs without embeddings)."""
        self.model.eval()
        if not self.model.has_embeddings:
            return None
        if not self.relation_states:
            return self.model.embed_all()
        out = {}
        for r in RELATIONS:
            self.model.load_state_dict(self.relation_states[r])
            out[r] = self.model.embed(r)
        return out

    def use_relation(self, relation: str):
        """The model holding ``relation``'s selected weights."""
        if self.relation_states:
            self.model.load_state_dict(self.relation_states[relation])
        self.model.eval()
        return self.model

    @torch.no_grad()
    def evaluate(self, pairs=None) -> dict:
        """Test and cold-start ranking metrics (and labelled pairs, if the dataset has them)."""
        with deterministic_algorithms(self.config.deterministic):
            return self._evaluate(pairs)

    def _evaluate(self, pairs) -> dict:
        cfg = self.config
        emb = self.embeddings()
        splits = self.dataset.splits
        scorers = self._scorers(emb)
        out = {"test": evaluate_embeddings(scorers, splits.test, self.sampler, "test", ks=cfg.ks, device=self.device,
                                           max_queries=cfg.test_queries, seed=cfg.seed)}
        if len(splits.cold_items):
            if emb is None or self.model.content_only:
                cold_emb = scorers
                out["cold_start_method"] = ("the model's own scores (no embeddings)" if emb is None
                                            else "the content embedding itself")
            elif self.features is not None:
                content = self.features.pooled().to(emb["substitute"].device)
                cold_emb = {r: cold_start_embeddings(emb[r], content, splits.cold_items, cfg.cold_neighbors)
                            for r in RELATIONS}
                out["cold_start_method"] = f"mean of {cfg.cold_neighbors} nearest items in content space"
            else:
                cold_emb = emb
                out["cold_start_method"] = "none (no content features: id embeddings of unseen items)"
            out["cold"] = evaluate_embeddings(cold_emb, splits.cold, self.sampler, "cold", ks=cfg.ks, device=self.device,
                                              max_queries=cfg.test_queries, seed=cfg.seed)
        pair_table = pairs if pairs is not None else splits.pairs
        if pair_table is not None and pair_table.num_rows:
            out["pairs"] = self._pair_metrics(scorers, pair_table)
        self.model.train()
        return out

    def _pair_metrics(self, scorers, table) -> dict:
        from mmsc_dgl.eval.evaluate import embedding_scores
        from mmsc_dgl.eval.pairs import best_f1_threshold, pair_metrics
        relation = table.column("relation").cast("string").to_pylist()
        src = table.column("src").to_numpy()
        dst = table.column("dst").to_numpy()
        label = table.column("label").to_numpy()
        result = {}

        def pair_scores(score, a: np.ndarray, b: np.ndarray) -> np.ndarray:
            a_t = torch.from_numpy(np.asarray(a, dtype=np.int64)).to(self.device)
            b_t = torch.from_numpy(np.asarray(b, dtype=np.int64)).to(self.device)
            return score(a_t, b_t.unsqueeze(1))[:, 0].cpu().numpy()

        for r in RELATIONS:
            pick = np.array([x == r for x in relation])
            if not pick.any():
                continue
            if len(np.unique(label[pick])) < 2:
                nan = float("nan")
                result[r] = {"ROC-AUC": nan, "PR-AUC": nan, "F1": nan, "pairs": int(pick.sum()),
                             "reason": f"every {r} pair is labelled {int(label[pick][0])}; the metrics need both labels"}
                continue
            score = embedding_scores(scorers[r]) if isinstance(scorers[r], torch.Tensor) else scorers[r]
            scores = pair_scores(score, src[pick], dst[pick])
            # The F1 threshold comes from validation: val edges against their first negative.
            val = self.dataset.splits.val[r]
            q = np.arange(len(val))
            neg = self.sampler.sample(r, "val", q, val.src)[:, 0]
            v_pos = pair_scores(score, val.src, val.dst)
            v_neg = pair_scores(score, val.src, neg)
            threshold = best_f1_threshold(np.r_[np.ones(len(v_pos)), np.zeros(len(v_neg))], np.r_[v_pos, v_neg])
            result[r] = pair_metrics(label[pick], scores, threshold)
        return result
