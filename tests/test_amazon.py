import gzip
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import record_2014, record_2018, write_lines
from mmsc_dgl.data.amazon import read_amazon
from mmsc_dgl.data.relations import RelationMap
from mmsc_dgl.errors import DataError


def _edges(read, relation):
    t = read.edges.filter(read.edges.column("relation").to_numpy(zero_copy_only=False) == relation)
    return sorted(zip(t.column("src").to_pylist(), t.column("dst").to_pylist()))


def test_2018_schema_fields_and_default_mapping(tmp_path):
    path = write_lines(tmp_path / "m.json", [
        record_2018("A", also_view=["B"], also_buy=["C", "B"], title="<span class=\"x\"",
                    imageURLHighRes=["http://hi/a.jpg"]),
        record_2018("B", also_view=["A"], title="Disney &amp; Me"),
        record_2018("C"),
    ])
    read = read_amazon([path])
    assert read.schemas[str(path)] == "2018"
    table = read.catalog.table
    assert table.column("item_id").to_pylist() == ["A", "B", "C"]
    assert table.column("title").to_pylist() == ["Some text.", "Disney & Me", "A title"]
    assert table.column("title_source").to_pylist() == ["description", "cleaned", "title"]
    assert table.column("category")[0].as_py() == ["Books", "Fiction"]
    assert table.column("image")[0].as_py() == "http://hi/a.jpg"
    assert _edges(read, "substitute") == [("A", "B"), ("B", "A")]
    assert _edges(read, "complement") == [("A", "B"), ("A", "C")]


def test_2014_python_literals_and_bought_together(tmp_path):
    path = write_lines(tmp_path / "m.json.gz", [
        record_2014("A", also_viewed=["B"], also_bought=["C"], bought_together=["B"]),
        record_2014("B"),
        record_2014("C", also_bought=["A"]),
    ], gz=True)
    read = read_amazon([path])
    assert read.schemas[str(path)] == "2014"
    assert read.catalog.table.column("image").to_pylist()[0] == "http://x/y.jpg"
    assert read.catalog.table.column("category")[0].as_py() == ["Electronics", "Phones"]
    assert _edges(read, "substitute") == [("A", "B")]
    assert _edges(read, "complement") == [("A", "B"), ("A", "C"), ("C", "A")]


def test_literal_eval_never_executes_code(tmp_path):
    marker = tmp_path / "pwned"
    path = write_lines(tmp_path / "m.json", [
        record_2014("A", also_viewed=["B"]),
        f"__import__('pathlib').Path({str(marker)!r}).write_text('x')",
        record_2014("B"),
    ])
    read = read_amazon([path])
    assert not marker.exists()
    assert read.report.counts["malformed line (neither JSON nor a Python dict literal)"] == 1
    assert read.report.examples["malformed line (neither JSON nor a Python dict literal)"] == [f"{path}:2"]


def test_relation_map_is_configurable(tmp_path):
    path = write_lines(tmp_path / "m.json", [record_2018("A", also_view=["B"], also_buy=["B"]),
                                             record_2018("B")])
    read = read_amazon([path], RelationMap.amazon("also_view=complement,also_buy=ignore"))
    assert _edges(read, "complement") == [("A", "B")]
    assert _edges(read, "substitute") == []
    assert read.report.counts["edges under 'also_buy' (mapped to ignore)"] == 1


def test_duplicate_records(tmp_path):
    path = write_lines(tmp_path / "m.json", [
        record_2018("A", also_buy=["B"]), record_2018("A", also_buy=["B"]),
        record_2018("A", also_buy=["C"], title="Other"), record_2018("B"), record_2018("C")])
    read = read_amazon([path])
    assert read.catalog.table.column("item_id").to_pylist() == ["A", "B", "C"]
    assert read.catalog.table.column("title")[0].as_py() == "A title"
    assert read.report.counts["duplicate item record, identical to an earlier one"] == 1
    assert _edges(read, "complement") == [("A", "B"), ("A", "C")]


def test_bad_inputs_name_file_line_and_fix(tmp_path):
    empty = tmp_path / "empty.json"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match=r"empty\.json: the file is empty"):
        read_amazon([empty])

    wrong = write_lines(tmp_path / "wrong.json", [json.dumps({"user": 1, "rating": 5})])
    with pytest.raises(DataError, match=r"wrong\.json:1: .*not those of Amazon metadata.*Fix: .*PrepareConfig\(format=...\) edgelist"):
        read_amazon([wrong])

    forced = write_lines(tmp_path / "forced.json", [record_2018("A")])
    with pytest.raises(DataError, match=r"schema= 2014 was given.*Fix: pass schema= 2018"):
        read_amazon([forced], schema="2014")

    junk = write_lines(tmp_path / "junk.json", ["{not json", "[1, 2]"])
    with pytest.raises(DataError, match="no usable Amazon record"):
        read_amazon([junk])

    strict = write_lines(tmp_path / "strict.json", [record_2018("A"), "{oops"])
    with pytest.raises(DataError, match=r"strict\.json:2: malformed line"):
        read_amazon([strict], strict=True)

    no_asin = write_lines(tmp_path / "noasin.json", [record_2018("A"), json.dumps({"title": "x", "also_buy": []})])
    assert read_amazon([no_asin]).report.counts["record without an 'asin'"] == 1


def test_truncated_gzip_is_an_error_with_the_line(tmp_path):
    full = write_lines(tmp_path / "full.json.gz", [record_2018(f"A{i}", also_buy=["A0"]) for i in range(2000)], gz=True)
    data = full.read_bytes()
    cut = tmp_path / "cut.json.gz"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"cut\.json\.gz:\d+: the gzip stream is cut off after line \d+.*Fix: .*fetch the file again"):
        read_amazon([cut])
    notgz = tmp_path / "plain.json.gz"
    notgz.write_text(record_2018("A") + "\n")
    with pytest.raises(DataError, match="cannot decompress"):
        read_amazon([notgz])


def test_real_magazine_file(magazine_path):
    read = read_amazon([magazine_path], progress=False)
    # Independent count from the raw file.
    records = {}
    lines = 0
    with gzip.open(magazine_path, "rt") as handle:
        for line in handle:
            lines += 1
            rec = json.loads(line)
            records.setdefault(rec["asin"], rec)
    assert lines == 3385 and len(records) == 2320
    assert len(read.catalog) == 2320
    assert read.report.counts["duplicate item record, identical to an earlier one"] == 3385 - 2320
    n_view = sum(len(r["also_view"]) for r in records.values())
    assert (read.edges.column("relation").to_pylist().count("substitute")) == n_view
    titles = read.catalog.table.column("title").to_pylist()
    assert not any("<" in t for t in titles)
    assert sum(t == "" for t in titles) <= 1


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.from_regex(r"[A-Z0-9]{4,10}", fullmatch=True),
                          st.lists(st.from_regex(r"[A-Z0-9]{4,10}", fullmatch=True), max_size=4),
                          st.lists(st.from_regex(r"[A-Z0-9]{4,10}", fullmatch=True), max_size=4),
                          st.text(max_size=30)),
                min_size=1, max_size=15, unique_by=lambda r: r[0]),
       st.booleans(), st.booleans())
def test_property_round_trip(tmp_path, recs, old_schema, gz):
    """Whatever records are written, in either schema, come back as the same ids and edges."""
    if old_schema:
        lines = [record_2014(a, also_viewed=v, also_bought=b, title=t) for a, v, b, t in recs]
    else:
        lines = [record_2018(a, also_view=v, also_buy=b, title=t) for a, v, b, t in recs]
    path = write_lines(tmp_path / ("p.json.gz" if gz else "p.json"), lines, gz=gz)
    read = read_amazon([path], progress=False)
    assert read.catalog.table.column("item_id").to_pylist() == [r[0] for r in recs]
    assert _edges(read, "substitute") == sorted((a, x) for a, v, _, _ in recs for x in v)
    assert _edges(read, "complement") == sorted((a, x) for a, _, b, _ in recs for x in b)
    assert all("<" not in t for t in read.catalog.table.column("title").to_pylist())
