"""Validated configuration (pydantic), loadable from YAML or TOML and overridden by CLI flags."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, Mapping, Optional, Type, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mmsc_dgl.errors import DataError

T = TypeVar("T", bound="Config")


class Config(BaseModel):
    """Base for every config: unknown keys are errors, so a typo never passes silently."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @classmethod
    def from_file(cls: Type[T], path: os.PathLike | str, overrides: Optional[Mapping[str, Any]] = None) -> T:
        """Load ``path`` (``.yaml``/``.yml``/``.toml``), then apply non-``None`` ``overrides``."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as err:
            raise DataError(f"cannot read the config: {err}", path=path) from err
        if path.suffix == ".toml":
            import tomllib
            try:
                data = tomllib.loads(text)
            except tomllib.TOMLDecodeError as err:
                raise DataError(f"not valid TOML: {err}", path=path) from err
        elif path.suffix in (".yaml", ".yml"):
            import yaml
            try:
                data = yaml.safe_load(text) or {}
            except yaml.YAMLError as err:
                raise DataError(f"not valid YAML: {err}", path=path) from err
        else:
            raise DataError("unknown config format.", path=path, fix="use a .yaml, .yml or .toml file.")
        return cls.from_mapping(data, overrides, source=path)

    @classmethod
    def from_mapping(cls: Type[T], data: Mapping[str, Any], overrides: Optional[Mapping[str, Any]] = None,
                     source: Optional[os.PathLike | str] = None) -> T:
        merged = dict(data)
        for key, value in (overrides or {}).items():
            if value is not None:
                merged[key] = value
        try:
            return cls.model_validate(merged)
        except ValidationError as err:
            problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
            raise DataError(f"invalid {cls.__name__}: {problems}", path=source,
                            fix="correct the values named above.") from err


class SplitConfig(Config):
    """How a dataset's edges are split for link prediction and cold start."""

    seed: int = 0
    num_negatives: int = Field(1000, ge=1, description="sampled negatives per held-out edge")
    min_degree: int = Field(2, ge=2, description="items with at least this many edges of a relation "
                                                 "hold out one test and one validation edge of it")
    cold_fraction: Optional[float] = Field(
        None, ge=0.0, le=0.5,
        description="fraction of items held out with all their edges; None: the catalog's "
                    "is_cold_start column if it has one, else 0.05")


class SyntheticConfig(Config):
    """The built-in synthetic catalog (the embedded default dataset)."""

    num_items: int = Field(10_000, ge=50, le=5_000_000)
    substitute_degree: float = Field(8.0, gt=0, description="mean planted substitute degree")
    complement_degree: float = Field(6.0, gt=0, description="mean planted complement degree")
    noise_rate: float = Field(0.2, ge=0.0, lt=1.0, description="share of edges that are noise")
    cold_fraction: float = Field(0.05, ge=0.0, le=0.5, description="share of items marked cold-start")
    popularity_shape: float = Field(1.2, gt=0.1, description="Pareto shape of item popularity; "
                                                             "smaller is more long-tailed")
    seed: int = 0


class PrepareConfig(Config):
    """Everything ``mmsc-dgl prepare`` decides besides its inputs."""

    format: Optional[Literal["amazon", "edgelist", "parquet"]] = None
    relation_map: Optional[str] = None
    schema_: Literal["auto", "2014", "2018"] = Field("auto", alias="schema")
    id_type: Literal["auto", "int", "str"] = "auto"
    symmetric: bool = True
    strict: bool = False
    split: SplitConfig = Field(default_factory=SplitConfig)

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)
