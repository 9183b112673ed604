"""The experiment grid's configuration: datasets x model variants x seeds, plus the paper's
checks (noise robustness, cold start, meta-path depth, E_LLM) as views over that grid."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional

from pydantic import Field, model_validator

from mmsc_dgl.config import MODEL_CONFIGS, Config, PrepareConfig, Seed, SyntheticConfig, TrainConfig, merge
from mmsc_dgl.ownership import name_problem

BEST_BASELINE = "best-baseline"
"""In an experiment's model list: the baseline with the best mean test NDCG@10 (both relations)
on that dataset, chosen after the main grid has run."""


class DatasetSpec(Config):
    """One dataset of the grid: the built-in synthetic catalog, input files, or a prepared directory."""

    synthetic: Optional[SyntheticConfig] = None
    inputs: List[str] = Field(default_factory=list, description="files for mmsc-dgl prepare, relative to "
                                                                "the config file")
    path: Optional[str] = Field(None, description="an already prepared dataset directory")
    prepare: PrepareConfig = Field(default_factory=PrepareConfig)
    train: Dict[str, Any] = Field(default_factory=dict, description="TrainConfig overrides for this dataset")
    optional: bool = Field(False, description="skip (and report) the dataset when its inputs are missing, "
                                              "instead of failing")
    features: Optional[Literal["text", "clip"]] = Field(
        None, description="extract this backend's frozen features into the prepared dataset once "
                          "(features.parquet, resumable), which train's features: auto then uses")

    @model_validator(mode="after")
    def _one_source(self):
        given = sum([self.synthetic is not None, bool(self.inputs), self.path is not None])
        if given != 1:
            raise ValueError("give exactly one of synthetic, inputs or path")
        return self


class ELLMSpec(Config):
    """Filter the training edges with an edge judge before training (``mmsc-dgl augment``)."""

    judge: Literal["similarity", "seq2seq"] = "similarity"
    model: Optional[str] = None
    threshold: Optional[float] = Field(0.5, ge=0, le=1)
    top_n: Optional[int] = Field(None, ge=1)


class VariantSpec(Config):
    """One row of the results table: a model (MMSC, an ablation or a baseline) and its settings."""

    role: Literal["reference", "ablation", "baseline"] = "ablation"
    label: Optional[str] = Field(None, description="name in tables and plots (default: the key)")
    train: Dict[str, Any] = Field(default_factory=dict, description="TrainConfig overrides")
    e_llm: Optional[ELLMSpec] = None


class NoiseExperiment(Config):
    datasets: Optional[List[str]] = Field(None, description="default: every dataset")
    rates: List[float] = Field(default_factory=lambda: [0.0, 0.1, 0.2, 0.4])
    models: List[str] = Field(default_factory=lambda: ["mmsc", "mmsc-ssl", BEST_BASELINE])
    num_seeds: Optional[int] = Field(None, ge=1, description="the first N of the grid's seeds (default: all)")


class ColdStartExperiment(Config):
    models: List[str] = Field(default_factory=lambda: ["mmsc", "content"])


class DepthExperiment(Config):
    models: Dict[int, str] = Field(default_factory=lambda: {1: "mmsc-hops1", 2: "mmsc-hops2", 3: "mmsc"},
                                   description="meta-path hops -> variant")


class ELLMExperiment(Config):
    models: List[str] = Field(default_factory=lambda: ["mmsc", "mmsc-e-llm"])


class ExperimentConfig(Config):
    """``mmsc-dgl experiment CONFIG`` reads this (YAML or TOML).

    Example:
        >>> config = ExperimentConfig.load("examples/experiments/real.yaml")  # doctest: +SKIP
        >>> list(config.models)[:3]                                          # doctest: +SKIP
    """

    name: str = "experiment"
    seeds: List[Seed] = Field(default_factory=lambda: [0, 1, 2], min_length=1)
    train: Dict[str, Any] = Field(default_factory=dict, description="TrainConfig fields shared by every cell")
    datasets: Dict[str, DatasetSpec]
    models: Dict[str, VariantSpec]
    noise: Optional[NoiseExperiment] = None
    cold_start: Optional[ColdStartExperiment] = None
    depth: Optional[DepthExperiment] = None
    e_llm: Optional[ELLMExperiment] = None
    source: Optional[str] = Field(None, description="the file this was read from (set by load)")

    @model_validator(mode="after")
    def _check(self):
        if not self.datasets or not self.models:
            raise ValueError("name at least one dataset and one model")
        named_paths = [("name", self.name)] + [("datasets key", k) for k in self.datasets] + \
                      [("models key", k) for k in self.models]
        for where, value in named_paths:  # each becomes a directory or file name under --out
            problem = name_problem(value)
            if problem is not None:
                raise ValueError(f"{where} {problem}; names become paths, so each must be a plain name "
                                 f"(letters, digits, '.', '_' and '-', not starting with '.' or '-')")
        references = [k for k, v in self.models.items() if v.role == "reference"]
        if len(references) != 1:
            raise ValueError(f"exactly one model needs role: reference, found {references or 'none'}")
        named = set(self.models) | {BEST_BASELINE}
        wanted = []
        if self.noise:
            wanted += self.noise.models
            for d in self.noise.datasets or []:
                if d not in self.datasets:
                    raise ValueError(f"noise.datasets names {d!r}, which is not a dataset")
        if self.cold_start:
            wanted += self.cold_start.models
        if self.depth:
            wanted += list(self.depth.models.values())
        if self.e_llm:
            wanted += self.e_llm.models
        unknown = sorted(set(wanted) - named)
        if unknown:
            raise ValueError(f"experiments name unknown models {unknown}; define them under models")
        shared = [dict(self.train.get("model") or {})] + [dict(d.train.get("model") or {}) for d in self.datasets.values()]
        unknown = sorted({k for block in shared for k in block
                          if not any(k in c.model_fields for c in MODEL_CONFIGS.values())})
        if unknown:
            raise ValueError(f"train.model names settings no model has: {unknown}")
        for key, variant in self.models.items():
            self.train_config(next(iter(self.datasets)), key, 0)  # validate every combination early
        return self

    @property
    def reference(self) -> str:
        return next(k for k, v in self.models.items() if v.role == "reference")

    @property
    def baselines(self) -> List[str]:
        return [k for k, v in self.models.items() if v.role == "baseline"]

    def label(self, variant: str) -> str:
        return self.models[variant].label or variant

    def train_config(self, dataset: str, variant: str, seed: int, noise: float = 0.0) -> TrainConfig:
        """The full TrainConfig of one cell: shared fields, then the dataset's, then the variant's.

        Model settings given for the whole grid or a dataset (``train.model``) apply to each
        variant whose model has them (``hidden`` to every learned model, ``heads`` to the
        attention models, ...); a variant's own ``train.model`` must fit its architecture."""
        shared = merge(self.train, self.datasets[dataset].train)
        own = self.models[variant].train
        architecture = own.get("architecture") or shared.get("architecture") or "mmsc"
        fields = MODEL_CONFIGS[architecture].model_fields if architecture in MODEL_CONFIGS else {}
        shared_model = {k: v for k, v in (shared.pop("model", None) or {}).items() if k in fields}
        data = merge(merge(shared, {"model": shared_model}), own)
        data = merge(data, {"seed": seed, "train_noise": noise})
        return TrainConfig.from_mapping(data, source=self.source)

    def resolve(self, relative: str) -> Path:
        path = Path(os.path.expanduser(relative))
        if path.is_absolute() or self.source is None:
            return path
        return (Path(self.source).parent / path).resolve()


def load_experiment(path: os.PathLike | str) -> ExperimentConfig:
    """An experiment grid from a YAML/TOML file (its relative paths are relative to the file).

    Example:
        >>> config = mmsc_dgl.load_experiment("examples/experiments/real.yaml")  # doctest: +SKIP
        >>> mmsc_dgl.run_experiment(config, out="runs/experiments/real")         # doctest: +SKIP
    """
    config = ExperimentConfig.from_file(path)
    return config.model_copy(update={"source": str(Path(path).resolve())})
