import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import write_lines
from mmsc_dgl.data.edgelist import read_edgelist
from mmsc_dgl.data.relations import RelationMap
from mmsc_dgl.errors import DataError


def _rows(read):
    t = read.edges
    return list(zip(*(t.column(c).to_pylist() for c in ("relation", "src", "dst", "label"))))


def test_numeric_relations_tabs_spaces_header_comments(tmp_path):
    path = write_lines(tmp_path / "e.txt", ["relation src dst", "# comment", "1\t10  20", "2 007 30 0", "", "1 20\t10 1"])
    read = read_edgelist([path], RelationMap.edgelist("1=complement,2=substitute"))
    assert read.id_type == "int"
    assert _rows(read) == [("complement", "10", "20", 1), ("substitute", "7", "30", 0), ("complement", "20", "10", 1)]
    assert read.report.notes["header lines ignored"] == 1
    assert read.report.notes["comment lines ignored"] == 1
    assert read.implied_catalog().ids.to_pylist() == ["7", "10", "20", "30"]


def test_names_and_string_ids(tmp_path):
    path = write_lines(tmp_path / "e.txt", ["substitute B0A B0B", "c B0B B0C", "ignore_me x y"])
    with pytest.raises(DataError, match=r"e\.txt:3: relation 'ignore_me' is not in the relation map.*Fix: add it, e\.g\. relation_map=ignore_me="):
        read_edgelist([path])
    read = read_edgelist([path], RelationMap.parse("substitute=substitute,c=complement,ignore_me=ignore"))
    assert read.id_type == "str"
    assert [r[:3] for r in _rows(read)] == [("substitute", "B0A", "B0B"), ("complement", "B0B", "B0C")]
    assert read.report.counts["edges with relation 'ignore_me' (mapped to ignore)"] == 1


def test_bad_lines(tmp_path):
    numeric = write_lines(tmp_path / "n.txt", ["1 1 2", "1 3 abc"])
    with pytest.raises(DataError, match=r"n\.txt:2: id 'abc' is not an integer.*Fix: pass PrepareConfig\(id_type='str'\)"):
        read_edgelist([numeric], RelationMap.edgelist("1=complement"))
    read = read_edgelist([numeric], RelationMap.edgelist("1=complement"), id_type="str")
    assert len(read.edges) == 2

    short = write_lines(tmp_path / "s.txt", ["1 1 2", "1 3", "1 2 3 1 9"])
    read = read_edgelist([short], RelationMap.edgelist("1=complement"))
    assert read.report.counts["malformed line (not 3 or 4 fields)"] == 2
    assert read.report.examples["malformed line (not 3 or 4 fields)"] == [f"{short}:2", f"{short}:3"]
    with pytest.raises(DataError, match=r"s\.txt:2: expected 3 or 4 fields"):
        read_edgelist([short], RelationMap.edgelist("1=complement"), strict=True)

    label = write_lines(tmp_path / "l.txt", ["1 1 2 maybe"])
    with pytest.raises(DataError, match=r"l\.txt:1: label 'maybe' is not 0 or 1"):
        read_edgelist([label], RelationMap.edgelist("1=complement"))

    comments = write_lines(tmp_path / "c.txt", ["# only", ""])
    with pytest.raises(DataError, match="holds no edges"):
        read_edgelist([comments])

    bad_map = "1complement"
    with pytest.raises(DataError, match="write it as KEY=RELATION"):
        RelationMap.edgelist(bad_map)
    with pytest.raises(DataError, match="not a relation"):
        RelationMap.edgelist("1=friend")


# String ids start with x/i so a first line can never read as a header ("src dst", "u v", ...).
_ids = st.one_of(st.integers(0, 10**6).map(str), st.from_regex(r"x[a-zA-Z0-9_.-]{0,8}", fullmatch=True))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(["1", "2"]), st.integers(0, 10**6), st.integers(0, 10**6),
                          st.sampled_from([None, 0, 1]), st.sampled_from([" ", "\t", "  \t "])),
                min_size=1, max_size=40))
def test_property_numeric_round_trip(tmp_path, rows):
    lines = [sep.join([r, str(s), str(d)] + ([] if lab is None else [str(lab)])) for r, s, d, lab, sep in rows]
    path = write_lines(tmp_path / "p.txt", lines)
    read = read_edgelist([path], RelationMap.edgelist("1=complement,2=substitute"), progress=False)
    names = {"1": "complement", "2": "substitute"}
    assert _rows(read) == [(names[r], str(s), str(d), 1 if lab is None else lab) for r, s, d, lab, _ in rows]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(["s", "c", "substitute", "complement"]),
                          st.from_regex(r"i[a-zA-Z0-9_.-]{0,8}", fullmatch=True), _ids),
                min_size=1, max_size=30))
def test_property_string_round_trip(tmp_path, rows):
    path = write_lines(tmp_path / "p.txt", [" ".join(r) for r in rows])
    read = read_edgelist([path], id_type="str", progress=False)
    full = {"s": "substitute", "c": "complement"}
    assert [r[:3] for r in _rows(read)] == [(full.get(r, r), s, d) for r, s, d in rows]
