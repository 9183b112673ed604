"""Trust: the tool never destroys what the user did not ask to destroy, refuses before it works,
and answers bad input with one line and exit code 2.

Each case builds its own files under ``tmp_path`` (and runs there), runs one command, and checks
the exit code, the message, that no traceback appeared, and that every file that existed before
is byte-identical afterwards with nothing new beside it (a refusal leaves no partial directory).
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import pickle
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from conftest import write_lines
from mmsc_dgl.cli import main

TRAIN = ["--epochs", "1", "--batch-size", "256", "--metapaths", "s,c", "--features", "hashed"]


# --- shared, read-only fixtures (copied into each case) --------------------------------------
@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A tiny dataset, a second one, and a finished run on the first."""
    from mmsc_dgl.config import SyntheticConfig, TrainConfig
    from mmsc_dgl.data.prepare import prepare
    from mmsc_dgl.runs.training import train
    root = tmp_path_factory.mktemp("built")
    prepare(synthetic=SyntheticConfig(num_items=300, seed=0), out=root / "ds", progress=False)
    prepare(synthetic=SyntheticConfig(num_items=300, seed=1), out=root / "other", progress=False)
    config = TrainConfig(epochs=1, batch_size=256, metapaths="s,c", features="hashed")
    train(root / "ds", root / "run", config, progress=False)
    return root


def snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir")
            for p in sorted(root.rglob("*"))}


@dataclass
class Case:
    """``setup(tmp, built)`` makes the files and returns the command line (after ``mmsc-dgl``)."""

    id: str
    setup: Callable[[Path, Path], List[str]]
    says: Sequence[str] = ()
    rc: int = 2
    never_says: Sequence[str] = ("Traceback",)
    new_ok: Optional[Callable[[str], bool]] = None  # new paths allowed (successful commands)
    changed_ok: Sequence[str] = ()
    stdout_says: Sequence[str] = ()
    lock_ok: bool = False  # refused after the writer lock was taken: its .NAME.lock may stay


def _copy(built: Path, tmp: Path, *names: str) -> None:
    for name in names:
        shutil.copytree(built / name, tmp / name, symlinks=True)


def _user_files(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "thesis.tex").write_text("\\section{Years of work}\n")
    (directory / "notes.md").write_text("do not lose\n")


def _edges(path: Path, n: int = 60) -> Path:
    return write_lines(path, [f"{'s' if i % 2 else 'c'} i{i % 30} i{(i * 7 + 3) % 30}" for i in range(n)])


# --- the cases --------------------------------------------------------------------------------
def c_train_out_cwd(tmp, built):
    _copy(built, tmp, "ds")
    _user_files(tmp)
    return ["train", "ds", "--out", ".", "--overwrite", *TRAIN]


def c_train_out_user_dir(tmp, built):
    _copy(built, tmp, "ds")
    _user_files(tmp / "thesis")
    return ["train", "ds", "--out", "thesis", "--overwrite", *TRAIN]


def c_train_out_user_dir_plain(tmp, built):
    _copy(built, tmp, "ds")
    _user_files(tmp / "thesis")
    return ["train", "ds", "--out", "thesis", *TRAIN]


def c_train_out_dataset(tmp, built):
    _copy(built, tmp, "ds", "other")
    return ["train", "ds", "--out", "other", "--overwrite", *TRAIN]


def c_train_out_home(tmp, built):
    _copy(built, tmp, "ds")
    os.environ["HOME"] = str(tmp / "home")  # restored by the runner fixture
    _user_files(tmp / "home")
    return ["train", "ds", "--out", str(tmp / "home"), "--overwrite", *TRAIN]


def c_train_out_parent_of_cwd(tmp, built):
    _copy(built, tmp, "ds")
    (tmp / "work").mkdir()
    os.chdir(tmp / "work")
    return ["train", "../ds", "--out", "..", "--overwrite", *TRAIN]


def c_overwrite_dataset_with_user_files(tmp, built):
    _copy(built, tmp, "ds")
    (tmp / "ds" / "my-analysis.ipynb").write_text("{}\n")
    return ["prepare", "--synthetic", "200", "--out", "ds", "--overwrite"]


def c_overwrite_run_with_user_files(tmp, built):
    _copy(built, tmp, "ds", "run")
    (tmp / "run" / "notes").mkdir()
    (tmp / "run" / "notes" / "plot.png").write_bytes(b"\x89PNG")
    return ["train", "ds", "--out", "run", "--overwrite", *TRAIN]


def c_prepare_out_holds_input(tmp, built):
    (tmp / "proj").mkdir()
    _edges(tmp / "proj" / "edges.txt")
    (tmp / "proj" / "notes.md").write_text("mine\n")
    return ["prepare", "proj/edges.txt", "--out", "proj", "--overwrite"]


def c_prepare_out_cwd(tmp, built):
    _edges(tmp / "edges.txt")
    return ["prepare", "edges.txt", "--out", ".", "--overwrite"]


def c_prepare_out_is_file(tmp, built):
    _edges(tmp / "edges.txt")
    (tmp / "target").write_text("a file\n")
    return ["prepare", "edges.txt", "--out", "target", "--overwrite"]


def c_prepare_exists_refused_before_work(tmp, built):
    _copy(built, tmp, "ds")
    write_lines(tmp / "broken.txt", ["not an edge list at all, would fail to parse"])
    return ["prepare", "broken.txt", "--out", "ds"]


def c_prepare_out_parent_is_file(tmp, built):
    _edges(tmp / "edges.txt")
    (tmp / "afile").write_text("x\n")
    return ["prepare", "edges.txt", "--out", "afile/ds"]


def c_train_out_parent_is_file(tmp, built):
    _copy(built, tmp, "ds")
    (tmp / "afile").write_text("x\n")
    return ["train", "ds", "--out", "afile/run", *TRAIN]


def c_train_other_dataset_into_run(tmp, built):
    _copy(built, tmp, "ds", "other", "run")
    return ["train", "other", "--out", "run", *TRAIN]


def c_resume_other_dataset(tmp, built):
    _copy(built, tmp, "ds", "other", "run")
    _repoint(tmp / "run", tmp / "ds")
    return ["train", "other", "--out", "run", "--resume", *TRAIN]


def c_resume_other_config(tmp, built):
    _copy(built, tmp, "ds", "run")
    _repoint(tmp / "run", tmp / "ds")
    return ["train", "--out", "run", "--resume", "--epochs", "2", "--batch-size", "128", "--metapaths", "s,c",
            "--features", "hashed"]


def c_resume_no_run(tmp, built):
    _copy(built, tmp, "ds")
    return ["train", "ds", "--out", "fresh", "--resume", *TRAIN]


def c_resume_and_overwrite(tmp, built):
    _copy(built, tmp, "ds", "run")
    return ["train", "ds", "--out", "run", "--resume", "--overwrite", *TRAIN]


def c_resume_corrupt_checkpoint(tmp, built):
    _copy(built, tmp, "ds", "run")
    _repoint(tmp / "run", tmp / "ds")
    (tmp / "run" / "checkpoint.pt").write_bytes(b"\x80\x04garbage")
    return ["train", "--out", "run", "--resume", "--epochs", "2", "--batch-size", "256", "--metapaths", "s,c",
            "--features", "hashed"]


def c_recommend_all_existing(tmp, built):
    _copy(built, tmp, "ds", "run")
    _repoint(tmp / "run", tmp / "ds")
    (tmp / "recs.parquet").write_text("my earlier results\n")
    return ["recommend", "run", "--all", "--relation", "complement", "--out", "recs.parquet"]


def c_recommend_all_into_run(tmp, built):
    _copy(built, tmp, "ds", "run")
    _repoint(tmp / "run", tmp / "ds")
    return ["recommend", "run", "--all", "--relation", "complement", "--out", "run/model.pt", "--overwrite"]


def c_features_for_other_content(tmp, built):
    _copy(built, tmp, "ds")
    _fake_cache(tmp / "ds")
    table = pq.read_table(tmp / "ds" / "items.parquet")
    titles = [f"{t} (renamed)" for t in table.column("title").to_pylist()]
    pq.write_table(table.set_column(table.column_names.index("title"), "title", pa.array(titles)),
                   tmp / "ds" / "items.parquet")
    return ["train", "ds", "--out", "r", "--features", "ds/features.parquet", "--epochs", "1", "--metapaths", "s,c"]


def c_features_old_format(tmp, built):
    _copy(built, tmp, "ds")
    path = _fake_cache(tmp / "ds")
    table = pq.read_table(path)
    meta = json.loads(table.schema.metadata[b"mmsc_dgl"])
    meta["format_version"] = 1
    pq.write_table(table.drop(["source"]).replace_schema_metadata({"mmsc_dgl": json.dumps(meta)}), path)
    return ["train", "ds", "--out", "r", "--epochs", "1", "--metapaths", "s,c"]


def c_features_out_not_a_cache(tmp, built):
    _copy(built, tmp, "ds")
    return ["features", "ds", "--out", "ds/items.parquet", "--overwrite"]


def c_degenerate_train(tmp, built):
    # Every item has exactly one edge: nothing can be held out.
    write_lines(tmp / "e.txt", [f"{'s' if i % 2 else 'c'} a{2 * i} a{2 * i + 1}" for i in range(40)])
    assert CliRunner().invoke(main, ["prepare", "e.txt", "--out", "ds", "--directed"]).exit_code == 0
    return ["train", "ds", "--out", "r", *TRAIN]


def c_one_relation_empty_train(tmp, built):
    write_lines(tmp / "e.txt", [f"s i{i % 30} i{(i * 7 + 3) % 30}" for i in range(90)])
    assert CliRunner().invoke(main, ["prepare", "e.txt", "--out", "ds"]).exit_code == 0
    return ["train", "ds", "--out", "r", *TRAIN]


def c_int64_overflow(tmp, built):
    write_lines(tmp / "e.txt", ["s 1 2", "c 2 3", "s 3 99999999999999999999999"])
    return ["prepare", "e.txt", "--out", "ds"]


def _evaluate_pairs(tmp, built, line) -> List[str]:
    """``evaluate run --pairs pairs.txt`` with ten lines ``line(i, ids)``."""
    _copy(built, tmp, "ds", "run")
    _repoint(tmp / "run", tmp / "ds")
    ids = pq.read_table(tmp / "ds" / "items.parquet").column("item_id").to_pylist()
    write_lines(tmp / "pairs.txt", [line(i, ids) for i in range(10)])
    return ["evaluate", "run", "--pairs", "pairs.txt"]


def c_pairs_all_positive(tmp, built):
    return _evaluate_pairs(tmp, built, lambda i, ids: f"complement {ids[i]} {ids[i + 1]} 1")


def c_pairs_no_labels(tmp, built):
    return _evaluate_pairs(tmp, built, lambda i, ids: f"substitute {ids[i]} {ids[i + 2]}")


def c_pairs_unknown_relation(tmp, built):
    return _evaluate_pairs(tmp, built, lambda i, ids: f"7 {ids[i]} {ids[i + 2]} {i % 2}")


def c_config_list(tmp, built):
    _copy(built, tmp, "ds")
    (tmp / "c.yaml").write_text("- epochs: 2\n- lr: 0.1\n")
    return ["train", "ds", "--out", "r", "--config", "c.yaml"]


def c_config_scalar(tmp, built):
    _copy(built, tmp, "ds")
    (tmp / "c.yaml").write_text("42\n")
    return ["train", "ds", "--out", "r", "--config", "c.yaml"]


def c_experiment_config_list(tmp, built):
    (tmp / "x.yaml").write_text("- a\n- b\n")
    return ["experiment", "x.yaml", "--out", "exp"]


def c_config_not_utf8(tmp, built):
    _copy(built, tmp, "ds")
    (tmp / "c.yaml").write_bytes("epochs: 2 # caf\xe9\n".encode("latin-1"))
    return ["train", "ds", "--out", "r", "--config", "c.yaml"]


def c_device_banana(tmp, built):
    _copy(built, tmp, "ds")
    return ["train", "ds", "--out", "r", "--device", "banana", *TRAIN]


def c_evaluate_device_banana(tmp, built):
    _copy(built, tmp, "ds", "run")
    _repoint(tmp / "run", tmp / "ds")
    return ["evaluate", "run", "--device", "banana"]


def c_train_edges_text(tmp, built):
    _copy(built, tmp, "ds")
    (tmp / "edges.txt").write_text("substitute 1 2\n")
    return ["train", "ds", "--out", "r", "--train-edges", "edges.txt", *TRAIN[:-2]]


def c_features_pickle(tmp, built):
    _copy(built, tmp, "ds")
    (tmp / "feats.pkl").write_bytes(pickle.dumps({"item_ids": [1, 2], "evil": object}))
    return ["train", "ds", "--out", "r", "--features", "feats.pkl", *TRAIN[:-2]]


def c_damaged_run_json(tmp, built):
    _copy(built, tmp, "ds", "run")
    (tmp / "run" / "run.json").write_text("{not json")
    return ["evaluate", "run"]


def c_damaged_config_json(tmp, built):
    _copy(built, tmp, "ds", "run")
    _repoint(tmp / "run", tmp / "ds")
    (tmp / "run" / "config.json").write_text('{"epochs": "many"')
    return ["evaluate", "run"]


def c_moved_dataset(tmp, built):
    _copy(built, tmp, "run")  # the run's recorded dataset path no longer exists here
    rec = json.loads((tmp / "run" / "run.json").read_text())
    rec["dataset"], rec["dataset_relative"] = str(tmp / "gone"), "../gone"
    (tmp / "run" / "run.json").write_text(json.dumps(rec))
    return ["evaluate", "run"]


def c_evaluate_wrong_dataset(tmp, built):
    _copy(built, tmp, "other", "run")
    return ["evaluate", "run", "--dataset", "other"]


def c_relation_map_all_ignore(tmp, built):
    write_lines(tmp / "e.txt", [f"{1 + i % 2} {i} {i + 1}" for i in range(20)])
    return ["prepare", "e.txt", "--relation-map", "1=ignore,2=ignore", "--out", "ds"]


def c_export_existing(tmp, built):
    _copy(built, tmp, "ds")
    (tmp / "t.pt").write_text("keep me\n")
    return ["export-tensors", "ds", "--out", "t.pt"]


def c_bench_json_existing(tmp, built):
    (tmp / "b.json").write_text("{}\n")
    return ["bench", "recommend", "--sizes", "300", "--json", "b.json"]


def c_metapaths_existing(tmp, built):
    _copy(built, tmp, "ds")
    (tmp / "ds" / "metapaths.pt").write_text("precious\n")
    return ["metapaths", "ds", "--metapaths", "s,c"]


def c_experiment_into_user_dir(tmp, built):
    _user_files(tmp / "exp")
    (tmp / "x.yaml").write_text("name: x\ndatasets:\n  syn: {synthetic: {num_items: 200}}\n"
                                "models:\n  mmsc: {role: reference}\n")
    return ["experiment", "x.yaml", "--out", "exp"]


def c_augment_existing(tmp, built):
    _copy(built, tmp, "ds")
    (tmp / "ds" / "e_llm.parquet").write_text("an earlier selection\n")
    return ["augment", "ds", "--features", "hashed"]


def c_evaluate_not_a_run(tmp, built):
    _user_files(tmp / "somewhere")
    return ["evaluate", "somewhere"]


def c_removed_seed_option(tmp, built):
    _copy(built, tmp, "ds", "run")
    return ["evaluate", "run", "--seed", "3"]


def c_removed_device_option(tmp, built):
    _edges(tmp / "edges.txt")
    return ["prepare", "edges.txt", "--out", "ds", "--device", "cpu"]


# Successful commands whose output used to mislead.
def c_prepare_degenerate_warns(tmp, built):
    write_lines(tmp / "e.txt", [f"{'s' if i % 2 else 'c'} a{2 * i} a{2 * i + 1}" for i in range(40)])
    return ["prepare", "e.txt", "--out", "ds", "--directed", "--json"]


def c_recommend_k_capped(tmp, built):
    _copy(built, tmp, "ds", "run")
    _repoint(tmp / "run", tmp / "ds")
    return ["recommend", "run", "--all", "--relation", "complement", "-k", "100000", "--out", "recs.parquet"]


def c_evaluate_repointed(tmp, built):
    _copy(built, tmp, "run")
    shutil.copytree(built / "ds", tmp / "moved")
    rec = json.loads((tmp / "run" / "run.json").read_text())
    rec["dataset"], rec["dataset_relative"] = str(tmp / "gone"), "../gone"
    (tmp / "run" / "run.json").write_text(json.dumps(rec))
    return ["evaluate", "run", "--dataset", "moved"]


def c_pairs_skip_line_numbers(tmp, built):
    _edges(tmp / "edges.txt", 120)
    write_lines(tmp / "pairs.txt", ["s i1 i2 1", "s i3 i4 0", "c i1 nowhere 1", "c i5 i6 0"])
    return ["prepare", "edges.txt", "--pairs", "pairs.txt", "--out", "ds", "--num-negatives", "5"]


def c_bench_help(tmp, built):
    return ["bench", "--help"]


def c_train_help_features(tmp, built):
    return ["train", "--help"]


def c_prepare_overwrite_own_dataset(tmp, built):
    _copy(built, tmp, "ds")
    return ["prepare", "--synthetic", "200", "--out", "ds", "--overwrite"]


def _repoint(run: Path, dataset: Path) -> None:
    """Point a copied run at the copied dataset (as `evaluate --dataset` would)."""
    from mmsc_dgl.runs.record import read_run_record
    rec = read_run_record(run)
    rec["dataset"], rec["dataset_relative"] = str(dataset.resolve()), os.path.relpath(dataset, run)
    (run / "run.json").write_text(json.dumps(rec))


def _fake_cache(dataset: Path) -> Path:
    from mmsc_dgl.features.base import FeatureExtractor
    from mmsc_dgl.features.cache import extract_features

    class Fixed(FeatureExtractor):
        backend, model, tokens, dim = "fixed", "fixed", 1, 8

        def extract(self, items):
            n = items.num_rows
            return np.ones((n, 1, 8), np.float32), np.ones((n, 1), bool)

    return extract_features(dataset, extractor=Fixed(), progress=False).path


def _all(*parts):
    return lambda rel: any(rel == p or rel.startswith(p + "/") for p in parts) or _is_lock(rel)


def _is_lock(rel: str) -> bool:
    name = Path(rel).name
    return name.startswith(".") and name.endswith(".lock")


CASES = [
    Case("train --out . --overwrite in a directory of user files", c_train_out_cwd, ["current directory"]),
    Case("train --out USER_DIR --overwrite", c_train_out_user_dir, ["did not write", "thesis.tex"]),
    Case("train --out USER_DIR", c_train_out_user_dir_plain, ["did not write"]),
    Case("train --out DATASET_DIR --overwrite", c_train_out_dataset, ["dataset directory, not a run"]),
    Case("train --out $HOME --overwrite", c_train_out_home, ["home directory"]),
    Case("train --out .. --overwrite", c_train_out_parent_of_cwd, ["holds the current directory"]),
    Case("prepare --overwrite on a dataset holding user files", c_overwrite_dataset_with_user_files,
         ["my-analysis.ipynb", "would delete them"]),
    Case("train --overwrite on a run holding user files", c_overwrite_run_with_user_files,
         ["notes/", "would delete them"]),
    Case("prepare proj/edges.txt --out proj --overwrite", c_prepare_out_holds_input, ["input of this command"]),
    Case("prepare --out . --overwrite", c_prepare_out_cwd, ["current directory"]),
    Case("prepare --out FILE --overwrite", c_prepare_out_is_file, ["is a file"]),
    Case("prepare --out EXISTING refuses before reading", c_prepare_exists_refused_before_work,
         ["already holds an mmsc_dgl dataset", "--overwrite"], never_says=("Traceback", "broken.txt")),
    Case("prepare --out under a file (unwritable)", c_prepare_out_parent_is_file, ["is a file"]),
    Case("train --out under a file (unwritable)", c_train_out_parent_is_file, ["is a file"]),
    Case("train OTHER --out RUN", c_train_other_dataset_into_run, ["already holds an mmsc_dgl run", "--resume"]),
    Case("train OTHER --out RUN --resume", c_resume_other_dataset, ["another dataset"]),
    Case("train --resume with another config", c_resume_other_config, ["batch_size: 256 -> 128"]),
    Case("train --resume with no run", c_resume_no_run, ["no run here to continue"]),
    Case("train --resume --overwrite", c_resume_and_overwrite, ["both given"]),
    Case("train --resume on a damaged checkpoint", c_resume_corrupt_checkpoint, ["damaged", "--overwrite"],
         never_says=("Traceback", "weights_only", "without --resume"), lock_ok=True),
    Case("recommend --all --out EXISTING_FILE", c_recommend_all_existing, ["already exists", "--overwrite"]),
    Case("recommend --all --out RUN/model.pt --overwrite", c_recommend_all_into_run, ["input of this command"]),
    Case("train --features CACHE of other content", c_features_for_other_content,
         ["made from other content", "300 of 300", "--overwrite"]),
    Case("train with a feature cache of the old format", c_features_old_format, ["format 1", "--overwrite"]),
    Case("features --out DATASET/items.parquet --overwrite", c_features_out_not_a_cache,
         ["input of this command"]),
    Case("train on a dataset with no held-out edges", c_degenerate_train, ["no val, no test", "--min-degree"]),
    Case("train on a dataset with one relation empty", c_one_relation_empty_train, ["complement: no train"]),
    Case("prepare: an id beyond int64", c_int64_overflow, ["e.txt:3", "64-bit", "--id-type str"]),
    Case("evaluate --pairs all labelled 1", c_pairs_all_positive, ["pairs.txt", "label 1", "labelled 0"]),
    Case("evaluate --pairs without labels", c_pairs_no_labels, ["pairs.txt", "label 1"]),
    Case("evaluate --pairs with an unknown relation", c_pairs_unknown_relation, ["pairs.txt:1", "prepared with"],
         never_says=("Traceback", "--relation-map")),
    Case("train --config with a list at the top", c_config_list, ["c.yaml", "top level is a list"]),
    Case("train --config with a scalar at the top", c_config_scalar, ["c.yaml", "top level is a int"]),
    Case("experiment CONFIG with a list at the top", c_experiment_config_list, ["x.yaml", "top level is a list"]),
    Case("train --config not UTF-8", c_config_not_utf8, ["c.yaml", "not UTF-8"]),
    Case("train --device banana", c_device_banana, ["--device", "banana", "cuda:N"]),
    Case("evaluate --device banana", c_evaluate_device_banana, ["--device", "banana"]),
    Case("train --train-edges TEXT_FILE", c_train_edges_text, ["edges.txt", "not a parquet edge table"]),
    Case("train --features PICKLE", c_features_pickle, ["feats.pkl", "pickles are refused"]),
    Case("evaluate with a damaged run.json", c_damaged_run_json, ["run.json is damaged", "--overwrite"]),
    Case("evaluate with a damaged config.json", c_damaged_config_json, ["config.json is damaged"]),
    Case("evaluate a run whose dataset moved", c_moved_dataset, ["no longer at", "--dataset DIR"]),
    Case("evaluate --dataset OTHER", c_evaluate_wrong_dataset, ["not the one this run was trained on"]),
    Case("prepare --relation-map sending everything to ignore", c_relation_map_all_ignore,
         ["every relation to ignore"], never_says=("Traceback", "catalog is empty")),
    Case("export-tensors --out EXISTING", c_export_existing, ["already exists", "--overwrite"]),
    Case("bench --json EXISTING", c_bench_json_existing, ["already exists", "--overwrite"]),
    Case("metapaths over an existing table file", c_metapaths_existing, ["already exists", "--overwrite"]),
    Case("experiment --out USER_DIR", c_experiment_into_user_dir, ["did not write"]),
    Case("augment over an existing E_LLM file", c_augment_existing, ["already exists", "--overwrite"]),
    Case("evaluate a directory that is not a run", c_evaluate_not_a_run, ["not an mmsc_dgl run directory"]),
    Case("evaluate --seed (removed: it did nothing)", c_removed_seed_option, ["No such option", "--seed"]),
    Case("prepare --device (removed: it did nothing)", c_removed_device_option, ["No such option", "--device"]),
    # Successes that used to mislead.
    Case("prepare warns about degenerate relations", c_prepare_degenerate_warns, rc=0, new_ok=_all("ds"),
         stdout_says=['"warnings"', "no val, no test", "--min-degree"]),
    Case("recommend -k 100000 --all says what it wrote", c_recommend_k_capped, rc=0, new_ok=_all("recs.parquet"),
         stdout_says=["top 299", "capped"]),
    Case("evaluate --dataset re-points a moved run", c_evaluate_repointed, rc=0,
         new_ok=_all("run/evaluation.json", ".run.lock"), changed_ok=["run/run.json"],
         stdout_says=["test", "NDCG@10"], says=["now points to"]),
    Case("prepare --pairs names the lines it skipped", c_pairs_skip_line_numbers, rc=0, new_ok=_all("ds"),
         stdout_says=["pairs.txt:3"]),
    Case("bench --help", c_bench_help, rc=0, stdout_says=["metapath", "recommend"]),
    Case("train --help names the real default features", c_train_help_features, rc=0,
         stdout_says=["auto (default"]),
    Case("prepare --overwrite replaces its own dataset", c_prepare_overwrite_own_dataset, rc=0,
         new_ok=_all("ds"), changed_ok=["ds"], stdout_says=["items: 200"]),
]


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", os.environ.get("HOME", "/"))
    return tmp_path


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_case(case: Case, built, isolated):
    tmp = isolated
    args = case.setup(tmp, built)
    before = snapshot(tmp)
    result = CliRunner().invoke(main, args)
    err = result.stderr
    assert result.exit_code == case.rc, (result.output, result.exception)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"uncaught {result.exception!r}")
    for text in case.says:
        assert text in err, err
    for text in case.never_says:
        assert text not in result.output, result.output
    for text in case.stdout_says:
        assert text in result.stdout, result.stdout
    if case.rc != 0:
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), err
    after = snapshot(tmp)
    changed_ok = lambda rel: any(rel == p or rel.startswith(p + "/") for p in case.changed_ok)  # noqa: E731
    for rel, digest in before.items():
        if changed_ok(rel):
            continue
        assert after.get(rel) == digest, f"{rel} was changed or removed"
    new = [rel for rel in after if rel not in before]
    unexpected = [rel for rel in new if not ((case.new_ok and case.new_ok(rel)) or (case.lock_ok and _is_lock(rel)))]
    assert not unexpected, f"left behind: {unexpected}"



# --- round two (issue 34) ---------------------------------------------------------------------
_GRID = "datasets:\n  {ds}: {{synthetic: {{num_items: 200}}}}\nmodels:\n  {model}: {{role: reference}}\n"


def c_experiment_name_escapes(tmp, built):
    (tmp / "x.yaml").write_text("name: ../../../escaped_exp\n" + _GRID.format(ds="syn", model="mmsc"))
    return ["experiment", "x.yaml"]


def c_experiment_dataset_key_escapes(tmp, built):
    (tmp / "x.yaml").write_text("name: x\n" + _GRID.format(ds="../../../../escaped_ds", model="mmsc"))
    return ["experiment", "x.yaml", "--out", "exp"]


def c_experiment_model_key_escapes(tmp, built):
    (tmp / "x.yaml").write_text("name: x\n" + _GRID.format(ds="syn", model="/tmp/escaped_model"))
    return ["experiment", "x.yaml", "--out", "exp"]


def _train_config(tmp, built, text):
    _copy(built, tmp, "ds")
    (tmp / "c.yaml").write_text(text)
    return ["train", "ds", "--out", "r", "--config", "c.yaml", *TRAIN]


def c_ks_zero(tmp, built):
    return _train_config(tmp, built, "ks: [0]\n")


def c_ks_empty(tmp, built):
    return _train_config(tmp, built, "ks: []\n")


def c_ks_beyond_candidates(tmp, built):
    return _train_config(tmp, built, "ks: [100000]\n")


def c_ks_text(tmp, built):
    return _train_config(tmp, built, "ks: [a]\n")


def c_epochs_true(tmp, built):
    _copy(built, tmp, "ds")
    (tmp / "c.yaml").write_text("epochs: true\n")
    return ["train", "ds", "--out", "r", "--config", "c.yaml", "--metapaths", "s,c", "--features", "hashed"]


def c_features_mask_all_false(tmp, built):
    import torch
    _copy(built, tmp, "ds")
    from mmsc_dgl.data.dataset import load_dataset
    ids = load_dataset(tmp / "ds").catalog.ids.to_pylist()
    torch.save({"item_ids": ids, "tokens": torch.ones(len(ids), 1, 4), "mask": torch.zeros(len(ids), 1, dtype=torch.bool)},
               tmp / "f.pt")
    return ["train", "ds", "--out", "r", "--features", "f.pt", *TRAIN[:-2]]


def c_features_other_order(tmp, built):
    import torch
    _copy(built, tmp, "ds")
    from mmsc_dgl.data.dataset import load_dataset
    ids = load_dataset(tmp / "ds").catalog.ids.to_pylist()[::-1]
    torch.save({"item_ids": ids, "tokens": torch.ones(len(ids), 1, 4), "mask": torch.ones(len(ids), 1, dtype=torch.bool)},
               tmp / "f.pt")
    return ["train", "ds", "--out", "r", "--features", "f.pt", *TRAIN[:-2]]


def c_empty_item_id(tmp, built):
    pq.write_table(pa.table({"item_id": ["a", "", "c"], "title": ["x", "y", "z"]}), tmp / "items.parquet")
    pq.write_table(pa.table({"relation": ["substitute", "complement"], "src": ["a", "c"], "dst": ["c", "a"]}),
                   tmp / "edges.parquet")
    return ["prepare", "items.parquet", "edges.parquet", "--out", "ds"]


def c_relation_map_duplicate_key(tmp, built):
    write_lines(tmp / "e.txt", [f"{1 + i % 2} {i} {i + 1}" for i in range(20)])
    return ["prepare", "e.txt", "--relation-map", "1=substitute,2=complement,1=complement", "--out", "ds"]


def c_recommend_out_trailing_slash(tmp, built):
    _copy(built, tmp, "ds", "run")
    _repoint(tmp / "run", tmp / "ds")
    return ["recommend", "run", "--all", "--relation", "complement", "--out", "newdir/"]


def c_prepare_seed_negative(tmp, built):
    return ["prepare", "--synthetic", "200", "--out", "ds", "--seed", "-1"]


def c_train_seed_huge(tmp, built):
    _copy(built, tmp, "ds")
    return ["train", "ds", "--out", "r", "--seed", "99999999999999999999999", *TRAIN]


def c_prepare_synthetic_too_big(tmp, built):
    return ["prepare", "--synthetic", "5000001", "--out", "ds"]


def c_config_dev_zero(tmp, built):
    _copy(built, tmp, "ds")
    return ["train", "ds", "--out", "r", "--config", "/dev/zero", *TRAIN]


def c_config_fifo(tmp, built):
    _copy(built, tmp, "ds")
    os.mkfifo(tmp / "c.yaml")
    return ["train", "ds", "--out", "r", "--config", "c.yaml", *TRAIN]


def c_config_alias_bomb(tmp, built):
    _copy(built, tmp, "ds")
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        prev = chr(ord("a") + i - 1)
        name = chr(ord("a") + i)
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 10) + "]")
    (tmp / "c.yaml").write_text("\n".join(lines) + "\nepochs: 1\n")
    assert (tmp / "c.yaml").stat().st_size < 1024
    return ["train", "ds", "--out", "r", "--config", "c.yaml", *TRAIN]


def c_items_list_ids(tmp, built):
    pq.write_table(pa.table({"item_id": [["a"], ["b"]], "title": ["x", "y"]}), tmp / "items.parquet")
    pq.write_table(pa.table({"relation": ["substitute"], "src": ["a"], "dst": ["b"]}), tmp / "edges.parquet")
    return ["prepare", "items.parquet", "edges.parquet", "--out", "ds"]


def c_train_edges_unknown_item_ids(tmp, built):
    _copy(built, tmp, "ds")
    pq.write_table(pa.table({"relation": ["substitute", "complement"], "src": ["nope", "x1"], "dst": ["x2", "x3"]}),
                   tmp / "e.parquet")
    return ["train", "ds", "--out", "r", "--train-edges", "e.parquet", *TRAIN]


def c_model_swapped(tmp, built):
    import torch
    _copy(built, tmp, "ds", "run")
    _repoint(tmp / "run", tmp / "ds")
    state = torch.load(tmp / "run" / "model.pt", weights_only=True)
    for relation_state in state["states"].values():  # the same shapes, other values: another seed's
        for value in relation_state.values():
            if value.is_floating_point():
                value.add_(0.01)
    torch.save(state, tmp / "run" / "model.pt")
    return ["evaluate", "run"]


def c_dataset_is_partial(tmp, built):
    shutil.copytree(built / "ds", tmp / "ds.partial-x1y2")
    (tmp / "ds.partial-x1y2" / "splits").rename(tmp / "ds.partial-x1y2" / "splits-gone")
    shutil.rmtree(tmp / "ds.partial-x1y2" / "splits-gone")
    return ["train", "ds.partial-x1y2", "--out", "r", *TRAIN]


def c_run_given_as_dataset(tmp, built):
    _copy(built, tmp, "run")
    return ["train", "run", "--out", "r", *TRAIN]


def c_run_killed_before_record(tmp, built):
    _copy(built, tmp, "ds", "run")
    (tmp / "run" / "run.json").unlink()
    return ["train", "ds", "--out", "run", *TRAIN]


def c_run_killed_before_record_resume(tmp, built):
    _copy(built, tmp, "ds", "run")
    (tmp / "run" / "run.json").unlink()
    return ["train", "ds", "--out", "run", "--resume", *TRAIN]


def c_input_fifo(tmp, built):
    os.mkfifo(tmp / "edges.txt")
    return ["prepare", "edges.txt", "--out", "ds"]


def c_augment_threshold_one(tmp, built):
    _copy(built, tmp, "ds")
    return ["augment", "ds", "--features", "hashed", "--threshold", "1.0"]


def c_augment_next_command(tmp, built):
    _copy(built, tmp, "ds")
    return ["augment", "ds", "--features", "hashed"]


ROUND_TWO = [
    Case("train on what an interrupted prepare left", c_dataset_is_partial, ["interrupted", "rm -r"]),
    Case("train RUN_DIR (a run given as the dataset)", c_run_given_as_dataset,
         ["run directory, not a dataset", "trained on"], never_says=("Traceback", "--overwrite")),
    Case("train into a run killed before run.json", c_run_killed_before_record, ["--overwrite"],
         never_says=("Traceback", "--resume")),
    Case("train --resume on a run killed before run.json", c_run_killed_before_record_resume,
         ["nothing to continue", "--overwrite instead of --resume"]),
    Case("prepare FIFO", c_input_fifo, ["edges.txt", "not a regular file"], never_says=("Traceback", "empty")),
    Case("augment --threshold 1.0 keeps nothing", c_augment_threshold_one, rc=0, new_ok=_all("ds"),
         says=["no substitute or complement edge was kept", "lower --threshold"],
         never_says=("Traceback", "nan", "train with")),
    Case("augment prints a train command that runs", c_augment_next_command, rc=0, new_ok=_all("ds"),
         stdout_says=["train with: mmsc-dgl train ds --train-edges ds/e_llm.parquet --out runs/ds-e-llm"]),
    Case("evaluate with model.pt swapped in from another run", c_model_swapped,
         ["model.pt", "not the weights this run wrote"], lock_ok=True),
    Case("experiment name ../../../escaped_exp (no --out)", c_experiment_name_escapes, ["name", "plain name"]),
    Case("experiment dataset key ../../../../escaped_ds", c_experiment_dataset_key_escapes,
         ["datasets key", "plain name"]),
    Case("experiment model key /tmp/escaped_model", c_experiment_model_key_escapes, ["models key", "plain name"]),
    Case("train ks: [0]", c_ks_zero, ["c.yaml", "ks.0", "greater than or equal to 1"]),
    Case("train ks: []", c_ks_empty, ["c.yaml", "ks", "at least 1 item"]),
    Case("train ks: [100000]", c_ks_beyond_candidates, ["ks [100000]", "candidates"]),
    Case("train ks: [a]", c_ks_text, ["c.yaml", "ks.0"]),
    Case("train epochs: true", c_epochs_true, ["c.yaml", "epochs", "true/false"]),
    Case("train --features with an all-False mask", c_features_mask_all_false, ["f.pt", "no item has content"]),
    Case("train --features with the ids in another order", c_features_other_order, ["another order", "position 0"]),
    Case("prepare: an empty item id", c_empty_item_id, ["empty item ids"]),
    Case("prepare --relation-map with a key twice", c_relation_map_duplicate_key, ["'1' twice"]),
    Case("recommend --all --out newdir/", c_recommend_out_trailing_slash, ["newdir/", "ends with '/'"]),
    Case("prepare --seed -1", c_prepare_seed_negative, ["--seed", "-1"]),
    Case("train --seed 99999999999999999999999", c_train_seed_huge, ["--seed", "99999999999999999999999"]),
    Case("prepare --synthetic 5000001", c_prepare_synthetic_too_big, ["--synthetic", "5000001"]),
    Case("train --config /dev/zero", c_config_dev_zero, ["/dev/zero", "not a regular file"]),
    Case("train --config FIFO", c_config_fifo, ["c.yaml", "not a regular file"]),
    Case("train --config with a YAML alias bomb", c_config_alias_bomb, ["c.yaml", "aliases"]),
    Case("prepare: item_id holding lists", c_items_list_ids, ["items.parquet", "'item_id'", "list"]),
    Case("train --train-edges with unknown item ids", c_train_edges_unknown_item_ids, ["e.parquet", "'nope'"]),
]


@pytest.mark.parametrize("case", ROUND_TWO, ids=[c.id for c in ROUND_TWO])
def test_round_two_case(case: Case, built, isolated):
    test_case(case, built, isolated)
    assert not (isolated.parent / "escaped_exp").exists() and not Path("/escaped_ds").exists()

# --- beyond single commands -------------------------------------------------------------------
def _prepare_in_child(out: str, barrier, results) -> None:
    from mmsc_dgl.config import SyntheticConfig
    from mmsc_dgl.data.prepare import prepare
    from mmsc_dgl.errors import DataError
    barrier.wait()
    try:
        prepare(synthetic=SyntheticConfig(num_items=400, seed=0), out=out, progress=False)
        results.put("ok")
    except DataError as err:
        results.put(f"refused: {err}")


def test_two_concurrent_writers_never_both_succeed(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_prepare_in_child, args=(str(tmp_path / "ds"), barrier, results)) for _ in range(2)]
    for p in procs:
        p.start()
    outcomes = sorted(results.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    assert outcomes[0] == "ok" and outcomes[1].startswith("refused"), outcomes
    assert "another mmsc-dgl command is writing" in outcomes[1] or "already holds" in outcomes[1]
    from mmsc_dgl.data.dataset import load_dataset
    assert load_dataset(tmp_path / "ds").num_items == 400


def _hold_lock(target: str, ready, release) -> None:
    from mmsc_dgl.lock import writer_lock
    with writer_lock(target):
        ready.set()
        if release is None:
            os._exit(9)  # killed while holding it: the OS releases the lock, the holder file stays
        release.wait(60)


def test_lock_names_its_holder_and_stale_locks_are_taken_over(tmp_path, caplog):
    from mmsc_dgl.errors import DataError
    from mmsc_dgl.lock import lock_path, writer_lock
    ctx = multiprocessing.get_context("spawn")
    target = tmp_path / "run"
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(str(target), ready, release))
    holder.start()
    assert ready.wait(60)
    with pytest.raises(DataError, match=rf"pid {holder.pid} on .*started"):
        with writer_lock(target):
            pass
    release.set()
    holder.join(30)
    with writer_lock(target):  # released: free again
        pass
    ready = ctx.Event()
    killed = ctx.Process(target=_hold_lock, args=(str(target), ready, None))
    killed.start()
    killed.join(60)
    assert killed.exitcode == 9 and str(killed.pid) in lock_path(target).read_text()
    with caplog.at_level("WARNING", logger="mmsc_dgl.lock"):
        with writer_lock(target):
            pass
    assert f"pid {killed.pid}" in caplog.text and "taking over" in caplog.text


def test_resume_on_another_dataset_changes_nothing(built, tmp_path):
    from mmsc_dgl.config import TrainConfig
    from mmsc_dgl.errors import DataError
    from mmsc_dgl.runs.training import train
    _copy(built, tmp_path, "ds", "other", "run")
    _repoint(tmp_path / "run", tmp_path / "ds")
    before = snapshot(tmp_path)
    config = TrainConfig(epochs=2, batch_size=256, metapaths="s,c", features="hashed")
    with pytest.raises(DataError, match="another dataset"):
        train(tmp_path / "other", tmp_path / "run", config, resume=True, progress=False)
    assert snapshot(tmp_path) == before
    result = train(tmp_path / "ds", tmp_path / "run", config, resume=True, progress=False)  # the right one resumes
    assert len(result.history) == 2


def test_default_output_off_a_terminal_shows_one_line_per_epoch(built, tmp_path):
    shutil.copytree(built / "ds", tmp_path / "ds")
    cmd = [sys.executable, "-m", "mmsc_dgl", "train", "ds", "--out", "r", "--epochs", "2", *TRAIN[2:]]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    epoch_lines = [line for line in proc.stderr.splitlines() if line.startswith("epoch ")]
    assert [line.split(":")[0] for line in epoch_lines] == ["epoch 1/2", "epoch 2/2"], proc.stderr
    assert all("loss" in line and "val NDCG@10" in line and "ETA" in line for line in epoch_lines)
    assert "mmsc-dgl recommend" in proc.stdout and "--item" in proc.stdout and "HR@10 = share" in proc.stdout
    quiet = subprocess.run(cmd + ["-q", "--overwrite"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=300)
    assert quiet.returncode == 0, quiet.stderr
    assert "epoch " not in quiet.stderr


def test_strict_json_never_holds_nan(tmp_path):
    from mmsc_dgl.io import atomic_write_json
    atomic_write_json(tmp_path / "m.json", {"HR@10": float("nan"), "x": [float("inf"), 1.5], "reason": "why"})
    text = (tmp_path / "m.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"HR@10": None, "x": [None, 1.5], "reason": "why"}


def test_features_rerun_on_a_finished_cache_says_so(built, tmp_path, monkeypatch):
    shutil.copytree(built / "ds", tmp_path / "ds")
    _fake_cache(tmp_path / "ds")
    from mmsc_dgl.features import cache
    from mmsc_dgl.features.base import FeatureExtractor

    class Fixed(FeatureExtractor):
        backend, model, tokens, dim = "fixed", "fixed", 1, 8

        def extract(self, items):  # pragma: no cover - must not be called
            raise AssertionError("a finished cache was extracted again")

    monkeypatch.setattr(cache, "make_extractor", lambda *a, **k: Fixed())
    result = CliRunner().invoke(main, ["features", str(tmp_path / "ds")])
    assert result.exit_code == 0, result.output
    assert "already complete, nothing computed" in result.stdout and "nan" not in result.stdout


def test_recommend_all_to_one_file_has_one_writer(built, tmp_path, monkeypatch):
    """Two ``recommend --all --out same.parquet``: while one holds the file's writer lock the
    other is refused at once (it used to finish too, and one result was lost), and after the
    first has written, the second finds the file and refuses without --overwrite."""
    monkeypatch.chdir(tmp_path)
    _copy(built, tmp_path, "ds", "run")
    _repoint(tmp_path / "run", tmp_path / "ds")
    args = ["recommend", "run", "--all", "--relation", "complement", "--out", "same.parquet"]
    ctx = multiprocessing.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(str(tmp_path / "same.parquet"), ready, release))
    holder.start()
    try:
        assert ready.wait(60)
        busy = CliRunner().invoke(main, args)
        assert busy.exit_code == 2 and "another mmsc-dgl command is writing" in busy.stderr, busy.output
        assert not (tmp_path / "same.parquet").exists()
    finally:
        release.set()
        holder.join(30)
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0, first.output
    written = (tmp_path / "same.parquet").read_bytes()
    second = CliRunner().invoke(main, args)
    assert second.exit_code == 2 and "already exists" in second.stderr
    assert (tmp_path / "same.parquet").read_bytes() == written


def _disk_full(monkeypatch):
    """The disk fills during the next write: the writer fails as it does on a full disk, and
    the disk reports no space left."""
    import collections
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10 << 20, 10 << 20, 0))


@pytest.mark.parametrize("command", ["prepare", "train", "recommend"])
def test_a_full_disk_is_one_line_naming_the_file(command, built, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _copy(built, tmp_path, "ds", "run")
    _repoint(tmp_path / "run", tmp_path / "ds")
    before = snapshot(tmp_path)
    if command == "prepare":  # DGL's own words for it
        import dgl
        from dgl import DGLError

        def save_graphs(path, graphs):
            Path(path).write_bytes(b"\0" * 4096)
            raise DGLError("[12:00:00] FileStream.Write incomplete")
        monkeypatch.setattr(dgl, "save_graphs", save_graphs)
        args, name = ["prepare", "--synthetic", "200", "--out", "new"], "graph.bin"
    elif command == "train":  # torch's
        import torch
        real_save = torch.save

        def save(obj, path, *a, **k):
            if str(path).endswith(".tmp") and "checkpoint" in str(path):
                Path(path).write_bytes(b"\0" * 4096)
                raise RuntimeError("[enforce fail at inline_container.cc:595] . unexpected pos 4096 vs 4000")
            return real_save(obj, path, *a, **k)
        monkeypatch.setattr(torch, "save", save)
        args, name = ["train", "ds", "--out", "r", *TRAIN], "checkpoint.pt"
    else:  # the OS's
        def write_table(table, where, **kwargs):
            Path(where).write_bytes(b"\0" * 4096)
            raise OSError(28, "No space left on device")
        monkeypatch.setattr(pq, "write_table", write_table)
        args, name = ["recommend", "run", "--all", "--relation", "complement", "--out", "recs.parquet"], "recs.parquet"
    _disk_full(monkeypatch)
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, (result.output, result.exception)
    lines = [line for line in result.stderr.splitlines() if line.strip() and line.startswith("error")]
    assert len(lines) == 1 and "disk is full" in lines[0] and name in lines[0] and "4.0 KiB" in lines[0], \
        result.stderr
    assert "Traceback" not in result.output
    after = snapshot(tmp_path)
    assert {k: v for k, v in after.items() if k in before} == before
    # no temporary file is left; a run directory keeps what it finished before the disk filled
    left = [rel for rel in after if rel not in before and not _is_lock(rel) and not (
        command == "train" and rel.startswith("r/") and rel.split("/")[-1] in ("run.json", "config.json",
                                                                           "metapaths.pt", ".mmsc_dgl.json"))]
    assert left in ([], ["r"]), left


def test_recommend_all_says_its_memory_first_and_shows_progress(built, tmp_path, monkeypatch):
    """recommend --all on a large catalog ran 13 minutes without a line (issue 34.14): it now
    says its working memory before ranking and prints progress lines with an ETA."""
    import mmsc_dgl.eval.retrieval as retrieval
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(retrieval, "PROGRESS_EVERY", 0.0)
    _copy(built, tmp_path, "ds", "run")
    _repoint(tmp_path / "run", tmp_path / "ds")
    result = CliRunner().invoke(main, ["recommend", "run", "--all", "--relation", "complement",
                                       "--out", "recs.parquet"])
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    first = next(i for i, line in enumerate(lines) if "iB of working memory" in line)
    ranks = [i for i, line in enumerate(lines) if line.startswith("top-k: ") and "ETA" in line]
    assert ranks and first < ranks[0] and "300 items" in lines[first], result.stderr


def test_messages_that_pointed_the_wrong_way(built, monkeypatch):
    """Issue 34.15: a wide degree column no longer runs into the next, an item id written with
    leading zeros is pointed to its stored form, a title with a newline stays on its comment
    line, and an item without a title prints none ('None' before)."""
    from mmsc_dgl.data.catalog import ItemCatalog
    from mmsc_dgl.data.dataset import load_dataset
    from mmsc_dgl.errors import DataError
    from mmsc_dgl.train.trainer import TrainResult
    from mmsc_dgl.terminal import next_steps
    dataset = load_dataset(built / "ds")
    summary = dataset.summary()
    for r in summary["relations"].values():
        r["degree_p99"], r["degree_max"] = 3100.0, 100_000
    monkeypatch.setattr(type(dataset), "summary", lambda self: summary)
    row = dataset.format_summary()[2].split()
    assert row[5:7] == ["3100", "100,000"], row
    with pytest.raises(DataError, match="use 7 "):
        ItemCatalog.from_ids(["7", "8"]).node("007")
    titles = dataset.catalog.table.column("title").to_pylist()
    test = dataset.splits.test["complement"].src
    pick = next(int(i) for i in test if titles[int(i)])
    titles[pick] = "Chef's knife\nrm -rf ~"
    table = dataset.catalog.table
    dataset.catalog.table = table.set_column(table.column_names.index("title"), "title", pa.array(titles))
    lines = next_steps(TrainResult(built / "run", {"test": {}}, [], 1, dataset))
    command = next(line for line in lines if "mmsc-dgl recommend" in line)
    assert command.endswith("# Chef's knife rm -rf ~") and all("rm -rf" not in line for line in lines if line != command)


def test_errors_name_what_the_caller_passed(built, tmp_path):
    """Issue 30.4: an error raised for a Python call names the argument (``overwrite=True``), the
    same error on the command line names the flag (``--overwrite``)."""
    from click.testing import CliRunner
    from mmsc_dgl.cli import main
    from mmsc_dgl.config import TrainConfig
    from mmsc_dgl.data.relations import RelationMap
    from mmsc_dgl.errors import DataError
    from mmsc_dgl.runs.query import recommend
    from mmsc_dgl.runs.training import train
    config = TrainConfig(epochs=1, batch_size=256, metapaths="s,c", features="hashed")
    with pytest.raises(DataError) as err:
        train(built / "ds", built / "run", config, progress=False)
    assert "resume=True" in str(err.value) and "overwrite=True" in str(err.value) and "--" not in str(err.value)
    with pytest.raises(DataError) as err:
        train(built / "ds", built / "run", config, progress=False, resume=True, overwrite=True)
    assert str(err.value).startswith("resume=True and overwrite=True were both given")
    (tmp_path / "recs.parquet").write_text("x")
    with pytest.raises(DataError, match="pass overwrite=True to replace it, or choose another out"):
        recommend(built / "run", "complement", out=tmp_path / "recs.parquet")
    with pytest.raises(DataError, match=r"e\.g\. relation_map=x=complement"):
        RelationMap.parse("s=substitute").lookup("x")
    res = CliRunner().invoke(main, ["train", str(built / "ds"), "--out", str(built / "run"), "--epochs", "1"])
    assert res.exit_code == 2 and "--resume" in res.output and "--overwrite" in res.output, res.output
    res = CliRunner().invoke(main, ["recommend", str(built / "run"), "--all", "--relation", "complement",
                                    "--out", str(tmp_path / "recs.parquet")])
    assert res.exit_code == 2 and "pass --overwrite to replace it, or choose another --out" in res.output
    with pytest.raises(DataError, match="overwrite=True"):  # the CLI's face does not stay on after it
        recommend(built / "run", "complement", out=tmp_path / "recs.parquet")
