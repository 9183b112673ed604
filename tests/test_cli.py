import json

from click.testing import CliRunner

from conftest import write_lines
from mmsc_dgl.cli import main
from mmsc_dgl.data.dataset import load_dataset


def test_prepare_synthetic_prints_summary(tmp_path):
    result = CliRunner().invoke(main, ["prepare", "--synthetic", "600", "--seed", "3",
                                       "--num-negatives", "50", "--out", str(tmp_path / "ds")])
    assert result.exit_code == 0, result.output
    assert "items: 600" in result.output and "substitute" in result.output and "p99" in result.output
    assert "skipped:" in result.output
    assert load_dataset(tmp_path / "ds").splits.num_negatives == 50


def test_same_seed_same_dataset(tmp_path):
    runner = CliRunner()
    for name in ("a", "b"):
        r = runner.invoke(main, ["prepare", "--synthetic", "500", "--seed", "9", "--out", str(tmp_path / name)])
        assert r.exit_code == 0, r.output
    for f in ("items.parquet", "edges.parquet", "splits/test.parquet", "splits/train.parquet"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()


def test_edgelist_relation_map_and_json(tmp_path):
    edges = write_lines(tmp_path / "e.tsv", [f"{1 + i % 2}\t{i}\t{(i * 7 + 1) % 40}" for i in range(120)])
    result = CliRunner().invoke(main, ["prepare", str(edges), "--relation-map", "1=complement,2=substitute",
                                       "--out", str(tmp_path / "ds"), "--num-negatives", "5", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["items"] == 120 and summary["relations"]["complement"]["edges"] > 0


def test_bad_input_gives_one_line_error_and_exit_2(tmp_path):
    edges = write_lines(tmp_path / "e.txt", ["1 a b", "3 b c"])
    result = CliRunner().invoke(main, ["prepare", str(edges), "--relation-map", "1=complement",
                                       "--out", str(tmp_path / "ds")])
    assert result.exit_code == 2
    assert "e.txt:2: relation '3' is not in the relation map" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "ds").exists()


def test_config_file_and_flag_override(tmp_path):
    cfg = tmp_path / "prep.yaml"
    cfg.write_text("relation_map: 1=complement,2=substitute\nsplit:\n  num_negatives: 7\n  seed: 2\n")
    edges = write_lines(tmp_path / "e.txt", [f"{1 + i % 2} {i} {(i * 3 + 1) % 30}" for i in range(90)])
    r = CliRunner().invoke(main, ["prepare", str(edges), "--config", str(cfg), "--out", str(tmp_path / "a")])
    assert r.exit_code == 0, r.output
    assert load_dataset(tmp_path / "a").splits.num_negatives == 7
    r = CliRunner().invoke(main, ["prepare", str(edges), "--config", str(cfg), "--num-negatives", "3",
                                  "--out", str(tmp_path / "b")])
    assert r.exit_code == 0, r.output
    ds = load_dataset(tmp_path / "b")
    assert ds.splits.num_negatives == 3 and ds.splits.config.seed == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text("split:\n  num_negativs: 7\n")
    r = CliRunner().invoke(main, ["prepare", str(edges), "--config", str(bad), "--out", str(tmp_path / "c")])
    assert r.exit_code == 2 and "num_negativs" in r.output


def test_magazine_cli(tmp_path, magazine_path):
    r = CliRunner().invoke(main, ["prepare", str(magazine_path), "--out", str(tmp_path / "mag")])
    assert r.exit_code == 0, r.output
    assert "items: 2,320" in r.output
    assert "duplicate item record, identical to an earlier one" in r.output


def test_seed_and_device_only_where_they_act():
    """An option that does nothing misleads: --seed where randomness is drawn, --device where
    tensors move, nowhere else."""
    runner = CliRunner()
    acts = {"prepare": {"--seed"}, "metapaths": {"--seed", "--device"}, "features": {"--device"},
            "augment": {"--seed", "--device"}, "train": {"--seed", "--device"}, "evaluate": {"--device"},
            "recommend": {"--device"}, "export-tensors": {"--seed"}, "experiment": {"--seed", "--device"}}
    for command, options in acts.items():
        r = runner.invoke(main, [command, "--help"])
        assert r.exit_code == 0, command
        shown = {o for o in ("--seed", "--device") if f"  {o} " in r.output or f", {o} " in r.output}
        assert shown == options, (command, shown)
        r = runner.invoke(main, [command, "-v", "--help"])  # -v is accepted after the subcommand
        assert r.exit_code == 0, command


def test_printed_commands_call_the_program_as_it_was_started(tmp_path, monkeypatch):
    """After the README's install the venv is not activated: the next steps train prints must
    start with the path that ran (.venv/bin/mmsc-dgl), not a bare mmsc-dgl the shell cannot find
    (issue 34.17); on PATH, the bare name."""
    import sys

    from mmsc_dgl.cli import _program
    script = tmp_path / "venv" / "bin" / "mmsc-dgl"
    script.parent.mkdir(parents=True)
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.setattr(sys, "argv", ["venv/bin/mmsc-dgl", "train"])
    assert _program() == "venv/bin/mmsc-dgl"
    monkeypatch.setenv("PATH", f"{script.parent}:/usr/bin:/bin")
    assert _program() == "mmsc-dgl"
    monkeypatch.setattr(sys, "argv", ["-c"])
    assert _program() == "mmsc-dgl"
