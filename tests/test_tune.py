"""mmsc-dgl tune: an Optuna study stored in its directory, resumable, writing a config train takes."""
import json

import optuna
import pytest

from mmsc_dgl.config import ModelConfig, SyntheticConfig, TrainConfig
from mmsc_dgl.data.prepare import prepare
from mmsc_dgl.errors import DataError
from mmsc_dgl.experiments.tune import STUDY, STUDY_NAME, tune

BASE = TrainConfig(epochs=2, metapaths="s,c", max_neighbors=4, batch_size=256, val_queries=100, features="none",
                   model=ModelConfig(hidden=8, heads=2, semantic_hidden=4, ssl_nodes=16))


def small_space(trial):
    return {"lr": trial.suggest_float("lr", 1e-3, 3e-2, log=True),
            "model": {"path_evidence": trial.suggest_categorical("path_evidence", [True, False])}}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("tune") / "ds"
    prepare(synthetic=SyntheticConfig(num_items=200, seed=5), out=out, progress=False)
    return out


def test_tune_writes_a_config_train_takes_and_resumes(dataset, tmp_path):
    out = tmp_path / "study"
    best = tune(dataset, out, trials=2, base=BASE, space=small_space, progress=False)
    config = TrainConfig.load(out / "best.yaml")
    assert config.lr == pytest.approx(best["params"]["lr"]) and config.epochs == 2
    assert config.model.path_evidence == best["params"]["path_evidence"]
    # a trial killed mid-run: it fails and is queued again with its settings
    study = optuna.load_study(study_name=STUDY_NAME, storage=f"sqlite:///{out / STUDY}")
    killed = study.ask({"lr": optuna.distributions.FloatDistribution(1e-3, 3e-2, log=True),
                        "path_evidence": optuna.distributions.CategoricalDistribution([True, False])})
    params = dict(killed.params)
    tune(dataset, out, trials=3, base=BASE, space=small_space, progress=False)
    trials = json.loads((out / "trials.json").read_text())["trials"]
    states = [t["state"] for t in trials]
    assert states.count("fail") == 1 and len([s for s in states if s in ("complete", "pruned")]) == 3
    assert trials[-1]["params"] == params  # the interrupted settings were tried again
    # a resumed search draws new settings, not the first ones again
    tune(dataset, out, trials=4, base=BASE, space=small_space, progress=False)
    trials = json.loads((out / "trials.json").read_text())["trials"]
    assert trials[-1]["params"]["lr"] not in [t["params"]["lr"] for t in trials[:-1]]
    assert all(len(t["curve"]) >= 1 for t in trials if t["state"] == "complete")


def test_tune_refuses_a_directory_it_did_not_write(dataset, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(DataError, match="did not write"):
        tune(dataset, tmp_path / "mine", trials=1, base=BASE, space=small_space, progress=False)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"


def test_tune_refuses_to_continue_a_study_of_another_dataset_or_settings(dataset, tmp_path):
    """``tune --out T`` again on another dataset used to continue the study, mixing the trials
    of both and writing the other dataset's best.yaml (issue 34.3)."""
    out = tmp_path / "study"
    tune(dataset, out, trials=1, base=BASE, space=small_space, progress=False)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    other = tmp_path / "other"
    prepare(synthetic=SyntheticConfig(num_items=200, seed=6), out=other, progress=False)
    with pytest.raises(DataError, match="another dataset"):
        tune(other, out, trials=2, base=BASE, space=small_space, progress=False)
    with pytest.raises(DataError, match="another settings"):
        tune(dataset, out, trials=2, base=BASE.model_copy(update={"epochs": 3}), space=small_space, progress=False)
    with pytest.raises(DataError, match="another seed"):
        tune(dataset, out, trials=2, base=BASE, seed=1, space=small_space, progress=False)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
