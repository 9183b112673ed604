"""Validated configuration (pydantic), loadable from YAML or TOML and overridden by CLI flags."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, ClassVar, Dict, List, Literal, Mapping, Optional, Type, TypeVar, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_serializer, field_validator, model_validator

from mmsc_dgl.errors import DataError
from mmsc_dgl.io import check_input_file

T = TypeVar("T", bound="Config")

DEVICE_PATTERN = r"^(auto|cpu|mps|cuda(:[0-9]+)?)$"
"""What ``--device`` takes: a device torch can name, or ``auto``."""
SEED_MAX = 2**31 - 1
"""The largest seed: every generator seeded from it (numpy's takes < 2**32, with offsets added
for its streams) accepts it."""
Seed = Annotated[int, Field(ge=0, le=SEED_MAX)]
SYNTHETIC_MAX = 5_000_000
"""The largest built-in synthetic catalog."""


def merge(base: Mapping[str, Any], overrides: Optional[Mapping[str, Any]]) -> dict:
    """``base`` with ``overrides`` on top: nested mappings merge key by key, and a ``None``
    override means "not given" (an unset flag).  The one way settings are combined: a config
    file under command-line flags, and the experiment grid's shared, dataset and variant
    settings."""
    out = dict(base)
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if isinstance(value, Mapping):
            below = out.get(key)
            if isinstance(below, BaseModel):
                below = below.model_dump(by_alias=True)
            out[key] = merge(below if isinstance(below, Mapping) else {}, value)
        else:
            out[key] = value
    return out


def _problem(error: Mapping[str, Any]) -> str:
    """One pydantic error as ``field.path: message``; a nested config's own DataError keeps its
    reason only (its fix would repeat the outer one's)."""
    inner = (error.get("ctx") or {}).get("error")
    message = inner.reason if isinstance(inner, DataError) else error["msg"]
    where = ".".join(map(str, error["loc"]))
    return f"{where}: {message}" if where else message


CONFIG_SIZE_LIMIT = 1 << 20
"""The largest config file read (1 MiB): a config is settings, not data."""
YAML_NODE_LIMIT = 100_000
"""The most YAML nodes a config may expand to, aliases counted at every use: a few hundred
bytes of nested aliases (a "billion laughs") would otherwise expand to gigabytes."""


def read_config_text(path: Path) -> str:
    """The text of a config file: a regular file of at most :data:`CONFIG_SIZE_LIMIT` bytes, in
    UTF-8 (a FIFO, a device such as ``/dev/zero`` or a huge file is refused before reading)."""
    check_input_file(path, empty_ok=True, what="the config")
    try:
        with open(path, "rb") as handle:
            raw = handle.read(CONFIG_SIZE_LIMIT + 1)
    except OSError as err:
        raise DataError(f"cannot read the config: {err.strerror}.", path=path,
                        fix="check the path and its permissions.") from None
    if len(raw) > CONFIG_SIZE_LIMIT:
        raise DataError(f"the config is larger than {CONFIG_SIZE_LIMIT >> 20} MiB.", path=path,
                        fix="a config holds settings; put data in the files it names.")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"the config is not UTF-8 text (byte {err.start}).", path=path,
                        fix="save it as UTF-8 YAML or TOML.") from None


def _load_yaml(text: str, path: Path) -> Any:
    """``yaml.safe_load(text)``, after counting the nodes its aliases expand to: the composed
    tree shares an aliased node, so the count is cheap even where the expansion is not.  The text
    is parsed once."""
    import yaml  # type: ignore[import-untyped]
    loader = yaml.SafeLoader(text)  # what yaml.safe_load does, with the count between its two steps
    try:
        root = loader.get_single_node()
        if root is None:
            return {}
        _expanded_size(root, path)
        return loader.construct_document(root) or {}
    finally:
        loader.dispose()


def _expanded_size(root: Any, path: Path) -> int:
    """The nodes of a composed YAML document with every alias counted at each use (each shared
    node is sized once), refused beyond :data:`YAML_NODE_LIMIT` or when it holds itself."""
    import yaml
    sizes: Dict[int, int] = {}

    def size(node: Any) -> int:
        key = id(node)
        if key in sizes:
            if sizes[key] < 0:
                raise DataError("the YAML refers to itself (a recursive alias).", path=path,
                                fix="write the settings out without recursive anchors.")
            return sizes[key]
        sizes[key] = -1
        total = 1
        if isinstance(node, yaml.SequenceNode):
            total += sum(size(child) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            total += sum(size(k) + size(v) for k, v in node.value)
        if total > YAML_NODE_LIMIT:
            raise DataError(f"the YAML expands to more than {YAML_NODE_LIMIT:,} values through its aliases "
                            f"(*name).", path=path, fix="write the settings out, or use fewer nested aliases.")
        sizes[key] = total
        return total

    return size(root)


def _takes_bool(annotation: Any) -> bool:
    """Whether a field's type admits a bool anywhere (``bool``, ``Optional[bool]``, ``Any``, ...)."""
    import typing
    if annotation is bool or annotation is Any:
        return True
    return any(_takes_bool(arg) for arg in typing.get_args(annotation) if arg is not type(None))


class Config(BaseModel):
    """Base for every config: unknown keys are errors, so a typo never passes silently."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @model_validator(mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, data: Any) -> Any:
        """``true`` is not the number 1: pydantic's lax mode would take ``epochs: true`` as one
        epoch, so a bool (alone or in a list) is refused where the field takes no bool."""
        if not isinstance(data, Mapping):
            return data
        for name, value in data.items():
            field = cls.model_fields.get(name)
            if field is None or _takes_bool(field.annotation):
                continue
            items = value if isinstance(value, (list, tuple)) else [value]
            if any(isinstance(item, bool) for item in items):
                raise ValueError(f"{name}: {value!r} is true/false where a number or name is expected")
        return data

    @classmethod
    def load(cls: Type[T], path: Optional[os.PathLike | str] = None, flags: Optional[Mapping[str, Any]] = None) -> T:
        """The config of a command: the file at ``path`` (if any) under ``flags`` (``None`` values
        are flags not given), merged by :func:`merge`."""
        if path is None:
            return cls.from_mapping({}, flags)
        return cls.from_file(path, flags)

    @classmethod
    def from_file(cls: Type[T], path: os.PathLike | str, overrides: Optional[Mapping[str, Any]] = None) -> T:
        """Load ``path`` (``.yaml``/``.yml``/``.toml``), then apply non-``None`` ``overrides``."""
        path = Path(path)
        text = read_config_text(path)
        if path.suffix == ".toml":
            import tomllib
            try:
                data = tomllib.loads(text)
            except tomllib.TOMLDecodeError as err:
                raise DataError(f"not valid TOML: {err}", path=path, fix="correct the syntax.") from None
        elif path.suffix in (".yaml", ".yml"):
            import yaml
            try:
                data = _load_yaml(text, path)
            except yaml.YAMLError as err:
                problem = " ".join(str(err).split())
                raise DataError(f"not valid YAML: {problem}", path=path, fix="correct the syntax.") from None
        else:
            raise DataError("unknown config format.", path=path, fix="use a .yaml, .yml or .toml file.")
        if not isinstance(data, dict):
            raise DataError(f"the config's top level is a {type(data).__name__}, not a mapping of settings.",
                            path=path, fix=f"write {cls.__name__} fields as 'key: value' lines at the top level.")
        return cls.from_mapping(data, overrides, source=path)

    @classmethod
    def from_mapping(cls: Type[T], data: Mapping[str, Any], overrides: Optional[Mapping[str, Any]] = None,
                     source: Optional[os.PathLike | str] = None) -> T:
        merged = merge(data, overrides)
        try:
            return cls.model_validate(merged)
        except ValidationError as err:
            problems = "; ".join(_problem(e) for e in err.errors())
            raise DataError(f"invalid {cls.__name__}: {problems}", path=source,
                            fix="correct the values named above.") from err


class SplitConfig(Config):
    """How a dataset's edges are split for link prediction and cold start.

    Example:
        >>> SplitConfig().num_negatives, SplitConfig(seed=3).seed
        (1000, 3)
    """

    seed: Seed = 0
    num_negatives: int = Field(default=1000, ge=1, description="sampled negatives per held-out edge")
    min_degree: int = Field(default=2, ge=2, description="items with at least this many edges of a relation "
                                                 "hold out one test and one validation edge of it")
    cold_fraction: Optional[float] = Field(default=
        None, ge=0.0, le=0.5,
        description="fraction of items held out with all their edges; None: the catalog's "
                    "is_cold_start column if it has one, else 0.05")


class SyntheticConfig(Config):
    """The built-in synthetic catalog (the embedded default dataset).

    Example:
        >>> SyntheticConfig(num_items=500).num_items
        500
    """

    num_items: int = Field(default=10_000, ge=50, le=SYNTHETIC_MAX)
    substitute_degree: float = Field(default=8.0, gt=0, description="mean planted substitute degree")
    complement_degree: float = Field(default=6.0, gt=0, description="mean planted complement degree")
    noise_rate: float = Field(default=0.2, ge=0.0, lt=1.0, description="share of edges that are noise")
    cold_fraction: float = Field(default=0.05, ge=0.0, le=0.5, description="share of items marked cold-start")
    popularity_shape: float = Field(default=1.2, gt=0.1, description="Pareto shape of item popularity; "
                                                             "smaller is more long-tailed")
    seed: Seed = 0


class PrepareConfig(Config):
    """Everything ``mmsc-dgl prepare`` decides besides its inputs.

    Example:
        >>> PrepareConfig().symmetric, PrepareConfig(split={"seed": 2}).split.seed
        (True, 2)
    """

    format: Optional[Literal["amazon", "edgelist", "parquet"]] = None
    relation_map: Optional[str] = None
    schema_: Literal["auto", "2014", "2018"] = Field(default="auto", alias="schema")
    id_type: Literal["auto", "int", "str"] = "auto"
    symmetric: bool = True
    strict: bool = False
    holdout: Optional[Literal["per-item", "none"]] = Field(default=
        None, description="per-item: carve validation and test edges out of the inputs (the default for a "
                          "single input); none: hold nothing out, the evaluation edges are the given "
                          "--valid and --test files (the default when they are given)")
    drop_overlap: bool = Field(default=False, description="given splits: remove validation and test positives that are "
                                                  "also training edges from training (default: keep the files "
                                                  "as given, and count them)")
    split: SplitConfig = Field(default_factory=SplitConfig)

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)


class _ModelBase(Config):
    """What every model's config holds: its architecture (the key of the union below) and the
    negatives the trainer samples per positive edge."""

    architecture: str
    negatives: int = Field(default=4, ge=1, description="sampled negatives per positive edge")
    default_lr: ClassVar[float] = 0.01
    """The learning rate a TrainConfig of this architecture gets when none is given."""


class _Learned(_ModelBase):
    hidden: int = Field(default=64, ge=4, description="size of every item representation")
    margin: float = Field(default=0.5, gt=0, description="triplet margin")
    score: Literal["cosine", "dot"] = Field(default="dot", description="pair score: dot product of the projected "
                                                               "representations (default: the norm can carry "
                                                               "popularity) or their cosine (the paper)")


class _ItemInput(_Learned):
    id_embeddings: bool = Field(default=True, description="with content features, add a learnable id embedding to q "
                                                  "(default; False: content only, as the paper)")
    feat_drop: float = Field(default=0.1, ge=0, lt=1)


class _Attention(_ItemInput):
    heads: int = Field(default=4, ge=1, description="attention heads of the meta-path layers (hidden % heads == 0)")


class HANConfig(_Attention):
    """HAN: meta-path attention and semantic attention (MMSC's behaviour branch alone)."""

    architecture: Literal["han"] = "han"
    semantic_hidden: int = Field(default=64, ge=1)


PAPER_PRESET: Dict[str, Any] = {
    "score": "cosine", "id_embeddings": False, "complement_signature": 0.0, "loss": "triplet",
    "ssl_weight": 0.1, "semantic_fusion": "gate", "task_gate": True,
    "path_evidence": False, "content_paths": 0, "evidence_dropout": 0.0, "graph_branch": 0, "propagate_ids": 0,
    "full_first_hop": False,
}
"""MMSC as in the paper (arXiv 2507.22268), ``model: {preset: paper}``: cosine scores of content
(no id embeddings), the triplet loss, InfoNCE between graph-dropout views with weight 0.1, both
gates, none of this project's additions; with it a run places cold items by Eq. 12
(``cold_start: eq12``).  The parts that the real-data ablations reject (InfoNCE on all three
datasets, docs/results.md) are off in the default and kept here."""


class MMSCConfig(HANConfig):
    """MMSC's architecture and losses.

    Example:
        >>> ModelConfig(hidden=32).heads, ModelConfig(loss="softmax").loss
        (4, 'softmax')
        >>> paper = ModelConfig(preset="paper", hidden=32)
        >>> paper.score, paper.ssl_weight, paper.graph_branch, paper.hidden
        ('cosine', 0.1, 0, 32)
    """

    architecture: Literal["mmsc"] = "mmsc"  # type: ignore[assignment]  # HAN's fields, MMSC's name
    preset: Optional[Literal["paper"]] = Field(default=None, description="'paper': MMSC as in the paper "
        "(PAPER_PRESET: cosine score, content only, triplet loss, InfoNCE 0.1, no path evidence or "
        "graph branch, and Eq. 12 cold start); fields given beside it win")

    @model_validator(mode="before")
    @classmethod
    def _fill_preset(cls, data: Any) -> Any:
        """``preset: paper`` fills :data:`PAPER_PRESET`'s fields that are not given."""
        if isinstance(data, Mapping) and data.get("preset") == "paper":
            return {**PAPER_PRESET, **data}
        return data
    # Chosen on validation NDCG@10 of the real-data suite: 0.005 beats 0.01 on both relations of
    # Magazine and Gift Cards and on Beauty substitutes, ties on Beauty complements
    # (docs/results.md); 0.0025 changes validation by under 1.2%.
    default_lr: ClassVar[float] = 0.005
    ssl_weight: float = Field(default=0.0, ge=0, description="lambda of the InfoNCE term; 0 (the default: it fails its ablation on every real dataset, docs/results.md) turns it off; the paper uses 0.1")
    ssl_temperature: float = Field(default=0.2, gt=0)
    edge_drop: float = Field(default=0.2, ge=0, lt=1, description="graph-level dropout of each view")
    ssl_nodes: int = Field(default=256, ge=2, description="items per batch in the InfoNCE term")
    semantic_fusion: Literal["gate", "concat", "none"] = Field(default=
        "gate", description="how content q and behaviour p are mixed: MMSC's semantic gate, 'concat' "
                            "(a linear layer over [q || p], an ablation) or 'none' (p only, as HAN)")
    complement_signature: float = Field(default=0.5, ge=0, le=0.5, description=
        "share of the complement projection's dimensions that score with a minus sign (a "
        "pseudo-Euclidean score, so that an item and its look-alikes need not be each other's best "
        "complements, as a dot product forces; docs/training.md); 0: the dot product, as the paper")
    task_gate: bool = Field(default=True, description="mix the substitute and complement representations "
                                              "(False: an ablation; each relation keeps its own)")
    path_evidence: bool = Field(default=True, description="add a learned term of the Adamic-Adar-weighted two-hop "
                                                  "meta-path counts joining the pair to its score (False: "
                                                  "embeddings only, as the paper)")
    evidence_links: bool = Field(default=True, description="path evidence also sees whether the pair is a training "
                                                   "edge of the other relation (False: path counts only)")
    evidence_hidden: int = Field(default=32, ge=1, description="width of the path-evidence MLP")
    content_paths: int = Field(default=10, ge=0, le=100, description=
        "the path evidence also counts paths through each item's this many nearest items in content "
        "space (a 'similar' graph: content neighbours' substitutes and complements), so an item "
        "without edges is scored by the partners of the items it resembles (0: off; needs content "
        "features and path_evidence)")
    evidence_dropout: float = Field(default=0.3, ge=0, lt=1, description=
        "with content_paths: the share of training pairs whose source looks edgeless to the path "
        "evidence (only its content paths count), so the evidence learns to rank for new items "
        "(0.3: better than 0 on cold and warm Gift Cards, within noise on Magazine; docs/results.md)")
    calibrate: bool = Field(default=True, description="after training, choose per relation by validation NDCG@10 "
                                              "a bonus for pairs that are training edges of the other relation "
                                              "(0-2) and a weight on log(1 + their two-hop path counts) (0-1.6), "
                                              "added to the path-evidence term (mmsc_dgl.models.calibration); "
                                              "training does not depend on it")
    propagate_ids: int = Field(default=0, ge=0, le=8, description="smooth the id embeddings over the union of both "
                                                          "training graphs with this many LightGCN layers "
                                                          "(degree-normalised, every neighbour) before they "
                                                          "enter q; 0: raw id embeddings")
    graph_branch: int = Field(default=3, ge=0, le=8, description="add LightGCN's representation to each relation's "
                                                         "embedding: a shared and a per-relation id embedding "
                                                         "propagated over that relation's full graph with this "
                                                         "many layers (degree-normalised), concatenated (0: off)")
    graph_branch_cap: int = Field(default=0, ge=0, description="0: the graph branch propagates over each "
                                                       "relation's whole graph in every step (exact); above 0: "
                                                       "it reads a table precomputed once, each item's this many "
                                                       "largest propagation weights, so a step costs batch x cap "
                                                       "rows whatever the catalog (docs/training.md)")
    full_first_hop: bool = Field(default=False, description="also aggregate every first-hop neighbour of each relation "
                                                   "with degree normalisation (LightGCN's propagation), beside "
                                                   "the capped meta-path tables (default False: on Gift Cards it did not help)")
    loss: Literal["softmax", "triplet"] = Field(default=
        "triplet", description="ranking loss: the paper's triplet loss with margin (default: better on 3 of "
                               "4 real dataset-relation pairs, docs/real-data.md) or a sampled softmax of each "
                               "positive against its negatives")


class GATConfig(_Attention):
    """GAT per relation on the decoupled homogeneous graphs."""

    architecture: Literal["gat"] = "gat"
    layers: int = Field(default=2, ge=1, le=8, description="GAT layers")


class DecGCNConfig(_ItemInput):
    """DecGCN: a GCN per relation with co-attention between them."""

    architecture: Literal["decgcn"] = "decgcn"
    layers: int = Field(default=2, ge=1, le=8, description="graph convolution layers")


class LightGCNConfig(_Learned):
    """LightGCN: id embeddings propagated over each relation's graph, BPR loss."""

    architecture: Literal["lightgcn"] = "lightgcn"
    layers: int = Field(default=2, ge=1, le=8, description="propagation layers (K)")
    embedding_l2: float = Field(default=1e-4, ge=0, description="L2 weight on the layer-0 embeddings")


class TwoTowerConfig(_Learned):
    """A content two-tower model: an item's frozen content through a tower per relation, trained
    on the warm training edges only; no ids, so a new item is placed as a warm one is."""

    architecture: Literal["two-tower"] = "two-tower"
    default_lr: ClassVar[float] = 0.001
    tower_hidden: int = Field(default=256, ge=4, description="hidden width of each tower")
    dropout: float = Field(default=0.1, ge=0, lt=1, description="dropout inside the towers while training")
    temperature: float = Field(default=0.1, gt=0, description="softmax temperature over the unit rows' scores")
    complement_signature: float = Field(default=0.5, ge=0, le=0.5, description=
        "share of the complement rows' dimensions that score with a minus sign, as MMSC's (0: a dot product)")


class ContentConfig(_ModelBase):
    """Content cosine: nothing to learn."""

    architecture: Literal["content"] = "content"


class HeuristicConfig(_ModelBase):
    """Common neighbours or Adamic-Adar: nothing to learn."""

    architecture: Literal["common-neighbors", "adamic-adar"] = "adamic-adar"
    links: bool = Field(default=False, description="rank pairs that are training edges of the other relation "
                                           "first, then by the heuristic (the baseline for MMSC's evidence_links)")


ARCHITECTURES: Dict[str, tuple] = {
    "mmsc": (MMSCConfig, "MMSC (arXiv 2507.22268): meta-path attention, semantic and task gates, SSL"),
    "han": (HANConfig, "HAN (WWW 2019): meta-path GAT and semantic attention only"),
    "gat": (GATConfig, "GAT (ICLR 2018) per relation on the decoupled homogeneous graphs"),
    "lightgcn": (LightGCNConfig, "LightGCN (SIGIR 2020): shared plus per-relation id embeddings, BPR"),
    "decgcn": (DecGCNConfig, "DecGCN-style (CIKM 2020): two relation spaces with cross-relation fusion"),
    "content": (ContentConfig, "cosine of the frozen content features, no training"),
    "two-tower": (TwoTowerConfig, "content two-tower: frozen content through a trained tower per relation, no ids"),
    "common-neighbors": (HeuristicConfig, "common neighbours on the union of both training graphs"),
    "adamic-adar": (HeuristicConfig, "Adamic-Adar on the union of both training graphs"),
}
"""The single list of architectures: each name, the config of its model, and what it is
(:mod:`mmsc_dgl.models.registry` builds a model for each)."""

MODEL_CONFIGS: Dict[str, Type[_ModelBase]] = {name: spec[0] for name, spec in ARCHITECTURES.items()}

ARCHITECTURE_NAMES = tuple(MODEL_CONFIGS)
Architecture = Literal[ARCHITECTURE_NAMES]  # type: ignore[valid-type]

AnyModelConfig = Annotated[Union[MMSCConfig, HANConfig, GATConfig, LightGCNConfig, DecGCNConfig, ContentConfig,
                                 TwoTowerConfig, HeuristicConfig], Field(discriminator="architecture")]
"""A model config of any architecture, told apart by its ``architecture`` field."""

ModelConfig = MMSCConfig
"""The flagship's model config (the default of :class:`TrainConfig`)."""


def model_config(architecture: str, **fields: Any):
    """The model config of ``architecture`` with ``fields`` set (unknown fields are errors)."""
    if architecture not in MODEL_CONFIGS:
        raise DataError(f"unknown architecture {architecture!r}.", fix=f"use one of {', '.join(MODEL_CONFIGS)}.")
    return MODEL_CONFIGS[architecture].from_mapping({**fields, "architecture": architecture})


def features_digest(value: Any) -> str:
    """``memory:<digest>`` of features handed over from Python: what ``config.json`` and the
    resume fingerprint record of them (the same features give the same name)."""
    import hashlib

    import numpy as np
    parts = [getattr(value, "tokens", None), getattr(value, "mask", None)] if hasattr(value, "tokens") else \
        (list(value) if isinstance(value, (tuple, list)) else [value])
    digest = hashlib.blake2b(digest_size=8)
    for part in parts:
        if part is not None:
            array = np.ascontiguousarray(part.detach().cpu().numpy() if hasattr(part, "detach") else np.asarray(part))
            digest.update(str((array.dtype, array.shape)).encode())
            digest.update(array.tobytes())
    return "memory:" + digest.hexdigest()


class TrainConfig(Config):
    """Everything ``mmsc-dgl train`` decides.  CLI flags override a YAML/TOML file.

    Example:
        >>> config = TrainConfig(epochs=20, model={"hidden": 32, "path_evidence": False})
        >>> config.model.hidden, config.architecture
        (32, 'mmsc')
        >>> TrainConfig(architecture="lightgcn", model={"layers": 3}).model.layers
        3
    """

    architecture: Architecture = Field(default="mmsc", description="the model: mmsc, or a baseline (han, gat, lightgcn, "
                                                  "decgcn, content, common-neighbors, adamic-adar)")
    model: AnyModelConfig = Field(default_factory=MMSCConfig, description="the settings of that model (its own "
                                                                          "fields only; see MODEL_CONFIGS)")

    @model_validator(mode="before")
    @classmethod
    def _model_of_architecture(cls, data: Any) -> Any:
        """``model`` takes the architecture's config: a mapping gets ``architecture`` filled in,
        and a model config of another architecture is an error, not a silent mix."""
        if not isinstance(data, Mapping):
            return data
        data = dict(data)
        model = data.get("model")
        if isinstance(model, BaseModel):
            model = model.model_dump()
        architecture = data.get("architecture") or (model or {}).get("architecture") or "mmsc"
        model = dict(model or {})
        given = model.setdefault("architecture", architecture)
        if given != architecture:
            raise ValueError(f"model settings are for {given!r} but the architecture is {architecture!r}")
        data["architecture"], data["model"] = architecture, model
        if model.get("preset") == "paper":
            data.setdefault("cold_start", "eq12")  # the paper places cold items by Eq. 12
        if data.get("lr") is None and architecture in MODEL_CONFIGS:
            data["lr"] = MODEL_CONFIGS[architecture].default_lr  # recorded in config.json as a number
        return data

    def with_architecture(self, architecture: str, **model_fields: Any) -> "TrainConfig":
        """This config for another architecture, with that architecture's default model settings
        (and ``model_fields``)."""
        data = self.model_dump()
        if self.lr == MODEL_CONFIGS[self.architecture].default_lr:
            data.pop("lr")  # the default of this architecture: the other one's default instead
        return TrainConfig.from_mapping({**data, "architecture": architecture,
                                         "model": {**model_fields, "architecture": architecture}})
    metapaths: Union[str, List[Union[str, List[Union[str, List[str]]]]]] = Field(default=
        "all", description="comma-separated meta-paths, 'all' (up to 3 hops) or 'hops:N' (every meta-path of "
                           "up to N hops); from Python also a list of names and edge-type lists, as PyG's "
                           "AddMetaPaths takes them ([[('item', 'also_viewed', 'item'), ('item', 'also_bought', "
                           "'item')]]), through other node types where the dataset kept them "
                           "([[('product', 'rated_by', 'user'), ('user', 'rated', 'product')]])")
    train_noise: float = Field(default=0.0, ge=0.0, le=10.0, description="random false edges added to the training "
                                                                 "graph, as a share of its edges (noise "
                                                                 "experiments; evaluation is untouched)")
    max_neighbors: int = Field(default=8, ge=1)
    num_walks: Optional[int] = Field(default=None, ge=1)
    features: Any = Field(default="auto", description="'auto' (the features that came with the dataset's graph, else "
                                              "its features.parquet, else 'hashed'), 'hashed' (hashed text "
                                              "TF-IDF; id embeddings when no item has text), 'categories' (a "
                                              "learnable embedding per category and brand), 'none' (learnable id "
                                              "embeddings), or a feature file; from Python also the features "
                                              "themselves: a tensor [N, D] or [N, T, D], (tokens, mask), or "
                                              "ContentFeatures")

    @field_validator("features", mode="before")
    @classmethod
    def _feature_source(cls, value: Any) -> Any:
        """A name or path stays a string; features from Python are kept as they are (checked
        against the dataset when the run is built) and written as ``memory:<digest>``."""
        if isinstance(value, os.PathLike):
            return os.fspath(value)
        if isinstance(value, str):
            return value
        tokens = getattr(value, "tokens", value[0] if isinstance(value, (tuple, list)) and len(value) == 2 else value)
        if not hasattr(tokens, "shape"):
            raise ValueError("features must be a name, a path, a tensor [N, D] / [N, T, D], (tokens, mask) "
                             f"or ContentFeatures, not {type(value).__name__}")
        return value

    @field_serializer("features")
    def _feature_name(self, value: Any) -> str:
        return value if isinstance(value, str) else features_digest(value)

    feature_dim: int = Field(default=256, ge=8)
    train_edges: Optional[str] = Field(default=None, description="parquet edge table replacing the training "
                                                         "edges of the supervised loss (E_LLM)")
    lr: float = Field(default=None, gt=0, validate_default=False,  # type: ignore[assignment]
                      description="Adam's learning rate (default: the architecture's, MMSCConfig.default_lr "
                                  "0.005 for mmsc, 0.01 for the baselines)")
    weight_decay: float = Field(default=0.0, ge=0)
    batch_size: int = Field(default=4096, ge=2)
    epochs: int = Field(default=10, ge=1)
    patience: int = Field(default=3, ge=1, description="epochs without a better validation NDCG@10 before stopping")
    steps_per_epoch: Optional[int] = Field(default=None, ge=1, description="batches per epoch, each a random sample of "
                                                                   "the training edges (None: one full pass); "
                                                                   "for catalogs where a pass takes hours")
    test_queries: Optional[int] = Field(default=None, ge=1, description="test/cold queries per relation, and cold items "
                                                                "of the warm-up curve (a fixed seeded subset; None: all)")
    val_queries: Optional[int] = Field(default=2000, ge=1, description="validation queries per relation per epoch "
                                                                "(a fixed seeded subset; None: all)")
    ks: List[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [10], min_length=1,
                                                  description="cut-offs of HR/MRR/NDCG@k, each at least 1 and at "
                                                              "most the candidates of a query (checked at the dataset)")
    cold_neighbors: int = Field(default=10, ge=1, description="k nearest items in content space for cold start")
    cold_start: Literal["eq12", "tower", "aldi"] = Field(
        default="tower", description="how items without edges are placed: eq12 (the mean of the cold_neighbors "
                                     "nearest items in content space, as in the paper), tower (after training, a "
                                     "content tower fit to the model's rows, mixed with Eq. 12 at a share chosen "
                                     "on pseudo-cold items; mmsc_dgl.train.cold_start) or aldi (the tower also "
                                     "distilled from the model's scores, as ALDI, SIGIR 2023)")
    cold_rounds: int = Field(default=80, ge=1, description="with cold_start: tower or aldi, the most rounds of 50 batches "
                                                   "the tower trains (it stops after 5 rounds without a better "
                                                   "pseudo-cold NDCG@10); acts after training only")
    seed: Seed = 0
    deterministic: bool = Field(default=True, description="torch deterministic algorithms while training and "
                                                  "evaluating: the same seed gives the same metrics")
    device: str = Field(default="auto", pattern=DEVICE_PATTERN, description="auto (CUDA when visible, else CPU), cpu, "
                                                                    "cuda or cuda:N")
    impl: Literal["auto", "reference", "dgl", "triton"] = Field(default="auto", description="kernel: auto, reference, "
                                                                                   "dgl or triton")

    STORED_BEFORE: ClassVar[Dict[str, Any]] = {"complement_signature": 0.0, "content_paths": 0, "evidence_dropout": 0.0}
    """Model fields added after runs were first stored, with the value that reproduces a stored
    run whose config lacks them (its weights were trained that way)."""

    @classmethod
    def from_stored(cls, data: Mapping[str, Any]) -> "TrainConfig":
        """A config a run or saved model wrote (``config.json``, a saved model's ``config``): a
        model field it lacks takes :attr:`STORED_BEFORE`'s value, not today's default."""
        data = dict(data)
        model = data.get("model")
        if isinstance(model, Mapping):
            architecture = data.get("architecture", model.get("architecture", "mmsc"))
            fields = MODEL_CONFIGS[architecture].model_fields if architecture in MODEL_CONFIGS else {}
            data["model"] = {**{k: v for k, v in cls.STORED_BEFORE.items() if k in fields and k not in model}, **model}
        return cls.model_validate(data)

    RESUMABLE_CHANGES: ClassVar[tuple] = ("epochs", "device", "impl", "patience", "deterministic", "cold_start",
                                          "cold_rounds")
    """Fields a resumed run may change: they do not change what the run has learned so far."""
    AFTER_TRAINING: ClassVar[tuple] = ("calibrate",)
    """Model fields that act only once training has ended (a resumed run may change them too)."""

    def resume_identity(self) -> dict:
        """Every field that makes a run what it is (all but :attr:`RESUMABLE_CHANGES` and the
        model's :attr:`AFTER_TRAINING` fields): a resumed run must match its checkpoint's."""
        data = self.model_dump()
        for key in self.RESUMABLE_CHANGES:
            data.pop(key)
        for key in self.AFTER_TRAINING:
            data["model"].pop(key, None)
        return data

