"""A real DistDGL job on loopback: 2 partitions (METIS), 2 graph servers (the second in its own
/dev/shm), 2 trainers in a gloo process group; a trainer that dies and a job past its timeout
end every process, with the exit code and no /dev/shm leftovers (issue 15)."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

dgl = pytest.importorskip("dgl")
stats = pytest.importorskip("scipy.stats")

from mmsc_dgl.config import SyntheticConfig  # noqa: E402
from mmsc_dgl.data.dataset import load_dataset  # noqa: E402
from mmsc_dgl.data.prepare import prepare  # noqa: E402
from mmsc_dgl.distributed.launch import isolation_available, launch, trainer_threads  # noqa: E402
from mmsc_dgl.distributed.partition import partition_dataset  # noqa: E402
from mmsc_dgl.features.load import load_features  # noqa: E402
from mmsc_dgl.metapath.build import random_walk_ends  # noqa: E402
from mmsc_dgl.metapath.spec import MetaPath  # noqa: E402

pytestmark = pytest.mark.skipif(not isolation_available(),
                                reason="two servers on one host need unshare with user namespaces")

WALKS = 400


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist")
    prepare(synthetic=SyntheticConfig(num_items=300, seed=5), out=root / "ds", progress=False)
    partition_dataset(root / "ds", 2, root / "parts", features="hashed", feature_dim=16)
    return root


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _shm():
    return {n for n in os.listdir("/dev/shm") if n.startswith("mmsc") or "-kvdata-" in n}


def _worker(root, *extra):
    return [sys.executable, "-m", "mmsc_dgl.distributed.worker", str(root / "parts"), "--out", str(root / "out"),
            "--items", "5", "--walks", str(WALKS), *extra]


def test_two_servers_two_trainers_on_loopback(parts):
    before = _shm()
    logs = parts / "logs"
    result = launch(parts / "parts", 2, _worker(parts), timeout=240, log_dir=logs)
    assert result.returncode == 0, result.message + (logs / "trainer-0.log").read_text()[-3000:]
    assert not any(_alive(pid) for pid in result.pids) and _shm() <= before
    dataset = load_dataset(parts / "ds")
    feats = load_features("hashed", dataset, 16)
    graph = dataset.train_graph()
    metapath = MetaPath.parse("s-c")
    adjacency = {r: tuple(t.to(torch.int64) for t in graph.adj_tensors("csr", etype=r)[:2]) for r in metapath.relations}
    n = dataset.num_items
    for rank in range(2):
        got = torch.load(parts / "out" / f"rank-{rank}.pt", weights_only=True)
        assert got["world"] == 2 and got["walks_all_ranks"] == 2 * 5 * WALKS
        # features cross partitions intact: every 7th item, wherever it lives, and the trainer's own
        torch.testing.assert_close(got["probe_tokens"], feats.tokens[got["probe_items"]])
        torch.testing.assert_close(got["tokens"], feats.tokens[got["items"]])
        # walks drawn through both servers follow the single-machine walk's law, item by item
        items = got["items"]
        mine = got["ends"]["s-c"]
        theirs = random_walk_ends(adjacency, items.repeat_interleave(WALKS), torch.arange(len(items) * WALKS),
                                  metapath, key=99).view(len(items), WALKS)
        for row in range(len(items)):
            a = np.bincount(np.where(mine[row] < 0, n, mine[row]), minlength=n + 1)
            b = np.bincount(np.where(theirs[row] < 0, n, theirs[row]), minlength=n + 1)
            keep = (a + b) > 0
            if keep.sum() > 1:
                assert stats.chi2_contingency(np.stack([a[keep], b[keep]]))[1] > 1e-4


def test_a_dying_trainer_ends_the_job_with_its_code(parts):
    before = _shm()
    result = launch(parts / "parts", 2, _worker(parts, "--fail-rank", "1"), timeout=240, log_dir=parts / "logs-fail")
    assert result.returncode == 3 and "trainer 1 exited with code 3" in result.message
    assert result.seconds < 120
    assert not any(_alive(pid) for pid in result.pids) and _shm() <= before


def test_a_trainer_raising_alone_ends_the_job_at_once(parts):
    """A trainer that raises while the other waits for it in a collective exits with its error
    (not into DGL's exit barrier, which waits for the other trainer: the job would hang until
    --timeout), and the launcher ends the job with its code."""
    before = _shm()
    logs = parts / "logs-raise"
    result = launch(parts / "parts", 2, _worker(parts, "--raise-rank", "1"), timeout=200, log_dir=logs)
    # trainer 0 then fails too (gloo: "connection closed by peer"), often within one poll: the
    # job's code and message are the first failure's
    assert result.returncode == 1 and "trainer 1 exited with code 1" in result.message, result.message
    assert "raising on purpose" in (logs / "trainer-1.log").read_text()
    assert result.seconds < 120
    assert not any(_alive(pid) for pid in result.pids) and _shm() <= before


def test_the_launcher_holds_the_rendezvous_port_before_any_trainer_starts(parts, tmp_path):
    """torchrun's agent store: the port trainers are given is already bound by the launcher,
    so no other process can take it between its choice and the rendezvous."""
    probe = [sys.executable, "-c", "import os, socket; "
             "assert os.environ['TORCHELASTIC_USE_AGENT_STORE'] == 'True'; "
             "socket.create_connection((os.environ['MASTER_ADDR'], int(os.environ['MASTER_PORT'])), timeout=5)"]
    result = launch(parts / "parts", 2, probe, timeout=120, log_dir=tmp_path / "logs")
    assert result.returncode == 0, result.message + (tmp_path / "logs" / "trainer-0.log").read_text()


def test_the_timeout_ends_every_process_with_124(parts):
    result = launch(parts / "parts", 1, [sys.executable, "-c", "import time; time.sleep(120)"], timeout=4,
                    log_dir=parts / "logs-timeout")
    assert result.returncode == 124 and "--timeout" in result.message and result.seconds < 60
    assert not any(_alive(pid) for pid in result.pids)


def test_a_launcher_sent_sigterm_ends_every_child(parts, tmp_path):
    """A scheduler's kill (SIGTERM) of the launcher ends its servers and trainers (found by the
    PIDs in their logs' directory), removes the job's /dev/shm entries and exits with 143."""
    import signal
    import time
    before = _shm()
    marker = tmp_path / "trainer.pid"
    trainer = f"import os, time; open({str(marker)!r}, 'w').write(str(os.getpid())); time.sleep(120)"
    cmd = [sys.executable, "-m", "mmsc_dgl", "launch", str(parts / "parts"), "--trainers", "1", "--timeout", "300",
           "--logs", str(tmp_path / "logs"), "--", sys.executable, "-c", trainer]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not marker.exists() or not marker.read_text():
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    time.sleep(1)
    children = _children(proc.pid)
    assert len(children) == 3  # two graph servers and the trainer
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and "SIGTERM" in err and "Traceback" not in err
    assert not any(_alive(pid) for pid in children) and _shm() <= before


def _children(pid):
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = open(f"/proc/{entry}/stat").read()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def test_a_used_log_directory_is_refused(parts, tmp_path):
    from mmsc_dgl import DataError
    (tmp_path / "mine.log").write_text("the user's")
    with pytest.raises(DataError, match="--logs"):
        launch(parts / "parts", 1, [sys.executable, "-c", "pass"], log_dir=tmp_path)
    assert (tmp_path / "mine.log").read_text() == "the user's"


def test_trainer_threads_share_the_cores_unless_asked(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "5")
    assert trainer_threads(4) == 5  # the user's setting stands
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert [trainer_threads(t) for t in (1, 2, 4, 8, 32)] == [16, 8, 4, 2, 1]  # the cores, shared


THREAD_PROBE = """
import os, torch
mine = ("DGL_IP_CONFIG=" + os.environ["DGL_IP_CONFIG"]).encode()
def env(pid):
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return f.read().split(b"\\0")
    except OSError:
        return []
servers = [env(p) for p in os.listdir("/proc") if p.isdigit()]
servers = [e for e in servers if b"DGL_ROLE=server" in e and mine in e]
got = sorted(v.decode() for e in servers for v in e if v.startswith(b"OMP_NUM_THREADS="))
print("threads", os.environ["OMP_NUM_THREADS"], torch.get_num_threads(), got)
"""


def test_every_trainer_and_server_runs_with_its_threads(parts, tmp_path, monkeypatch):
    """Each trainer gets its OMP_NUM_THREADS (torch's intra-op threads follow it), each server
    its own: without them every process of a loopback job starts a thread per core."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    probe = [sys.executable, "-c", THREAD_PROBE]

    def seen(log_dir, rank):
        words = (log_dir / f"trainer-{rank}.log").read_text().split(" ", 3)
        assert words[0] == "threads", words
        return int(words[1]), int(words[2]), words[3]  # asked, torch's intra-op threads, the servers'

    result = launch(parts / "parts", 2, probe, log_dir=tmp_path / "asked", threads=1, server_threads=2)
    assert result.returncode == 0, result.message
    assert result.threads == 1
    for rank in range(2):
        asked, used, servers = seen(tmp_path / "asked", rank)
        assert (asked, used) == (1, 1)
        assert "OMP_NUM_THREADS=2" in servers and "OMP_NUM_THREADS=1" not in servers, servers  # those it can see
    result = launch(parts / "parts", 2, probe, log_dir=tmp_path / "default")
    asked, used, servers = seen(tmp_path / "default", 0)
    assert asked == trainer_threads(2) == result.threads and 1 <= used <= asked  # torch caps it at the cores it has
    assert "OMP_NUM_THREADS=1" in servers and "OMP_NUM_THREADS=2" not in servers, servers


def test_cli_propagates_the_exit_code_in_one_line(parts):
    cmd = [sys.executable, "-m", "mmsc_dgl", "launch", str(parts / "parts"), "--trainers", "1", "--timeout", "4",
           "--", sys.executable, "-c", "import sys; sys.exit(7)"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 7 and "trainer 0 exited with code 7" in done.stderr and "Traceback" not in done.stderr


def test_bench_dist_counts_bytes_only_across_partitions(tmp_path):
    from mmsc_dgl.bench.dist import main
    main(["--items", "400", "--parts", "1", "2", "--steps", "2", "--warmup", "0", "--batch", "32", "--walks", "4",
          "--metapaths", "s,s-c", "--work", str(tmp_path / "work"), "--json", str(tmp_path / "dist.json")])
    import json
    one, two = json.loads((tmp_path / "dist.json").read_text())["results"]
    assert one["parts"] == 1 and one["bytes_per_step_mib"] == 0 and one["messages_per_step"] == 0
    assert two["parts"] == 2 and two["bytes_per_step_mib"] > 0 and two["remote_rows"] > 0
    assert two["server_peak_mib"] > 0 and two["trainer_peak_mib"] > 0
    assert (one["trainer_threads"], two["trainer_threads"]) == (trainer_threads(1), trainer_threads(2))


def test_bench_dist_train_shows_the_id_tables_leave_the_trainers(tmp_path):
    """``bench dist --train``: MMSC's trainer on 2 partitions, id tables whole and sharded; each
    trainer counts what it holds, and sharded it holds at least three fewer copies (weights and
    Adam's moments) of the four item tables (input ids, graph branch shared and per relation)."""
    from mmsc_dgl.bench.dist import main
    items, hidden = 400, 64
    main(["--train", "--items", str(items), "--parts", "2", "--steps", "2", "--batch", "64",
          "--work", str(tmp_path / "work"), "--json", str(tmp_path / "train.json")])
    import json
    whole, sharded = json.loads((tmp_path / "train.json").read_text())["results"]
    assert (whole["sharded"], sharded["sharded"]) == (False, True)
    table_mib = items * hidden * 4 / 2**20
    assert whole["trainer_state_mib"] - sharded["trainer_state_mib"] >= 4 * 3 * table_mib
    assert sharded["server_peak_mib"] > 0 and sharded["trainer_peak_training_mib"] > 0
    assert whole["trainer_threads"] == sharded["trainer_threads"] == trainer_threads(2)
    # the capped table (2 relations x 16 columns, 12 B an entry) left too, and with it the
    # meta-path tables (tests/test_dist_train.py checks those by their rows)
    assert whole["trainer_buffers_mib"] - sharded["trainer_buffers_mib"] >= 2 * items * 16 * 12 / 2**20 - 0.01
    # the path evidence's graphs left too: whole, at least the row pointers of its two relations'
    # graphs (8 B an item each); sharded, none (a step fetches its pairs' neighbour lists)
    assert whole["trainer_evidence_mib"] >= 2 * items * 8 / 2**20 and sharded["trainer_evidence_mib"] == 0
    # where each trainer's memory went, phase by phase; the high-water mark never falls
    steps = ["started", "joined", "dataset", "features", "metapaths", "model", "sharded", "trained", "unsharded",
             "calibrated", "evaluated"]
    assert list(sharded["trainer_phases_mib"]) == steps
    assert list(whole["trainer_phases_mib"]) == [s for s in steps if s != "sharded"]
    peaks = [peak for _, peak, _ in sharded["trainer_phases_mib"].values()]
    assert peaks == sorted(peaks) and peaks[-1] <= sharded["trainer_peak_job_mib"] + 1


def test_one_command_per_host_with_an_ip_config(parts, tmp_path):
    """The cluster recipe, simulated on loopback: one launcher per machine of the ip_config
    (each with its --machine), together one job of 2 servers and 2 trainers (global ranks)."""
    ports = []
    import socket
    for _ in range(3):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    ip = tmp_path / "ip_config.txt"
    ip.write_text(f"127.0.0.1 {ports[0]}\n127.0.0.1 {ports[1]}\n")
    before = _shm()
    out = tmp_path / "out"
    procs = []
    for machine in (1, 0):
        cmd = [sys.executable, "-m", "mmsc_dgl", "launch", str(parts / "parts"), "--ip-config", str(ip),
               "--machine", str(machine), "--master-port", str(ports[2]), "--trainers", "1", "--timeout", "200",
               "--logs", str(tmp_path / f"logs{machine}"), "--", *_worker(parts)[:-6], "--out", str(out),
               "--items", "5", "--walks", "8"]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["rank-0.pt", "rank-1.pt"]
    for rank in range(2):
        got = torch.load(out / f"rank-{rank}.pt", weights_only=True)
        assert got["world"] == 2 and got["walks_all_ranks"] == 2 * 5 * 8
    assert (tmp_path / "logs1" / "server-1.log").exists() and (tmp_path / "logs0" / "trainer-0.log").exists()
    assert _shm() <= before


def test_a_bad_ip_config_is_one_line(parts, tmp_path):
    from mmsc_dgl import DataError
    bad = tmp_path / "ip.txt"
    bad.write_text("127.0.0.1 4000\nnot-an-ip 4001\n")
    with pytest.raises(DataError, match=r"ip.txt:2: not an 'IP PORT' line"):
        launch(parts / "parts", 1, ["true"], ip_config=bad)
    bad.write_text("127.0.0.1 4000\n")
    with pytest.raises(DataError, match="1 machine\\(s\\) for 2 partition"):
        launch(parts / "parts", 1, ["true"], ip_config=bad)
    bad.write_text("127.0.0.1 4000\n127.0.0.1 4001\n")
    with pytest.raises(DataError, match="--machine 2"):
        launch(parts / "parts", 1, ["true"], ip_config=bad, machine=2)
    with pytest.raises(DataError, match="--machine is for a cluster"):
        launch(parts / "parts", 1, ["true"], machine=1)


def test_several_servers_of_one_partition_share_its_memory(parts, tmp_path, monkeypatch):
    """``--servers 2``: a partition's backup server maps its main server's /dev/shm (the second
    server used to run in a private /dev/shm of its own and died: issue 34.16).  With one
    partition both servers answer the trainers' feature pulls.  Every path is relative, as a
    user types them: the backup server and the trainers join a namespace (nsenter), which by
    itself would move them to its root directory."""
    partition_dataset(parts / "ds", 1, tmp_path / "one", features="hashed", feature_dim=16)
    logs = tmp_path / "logs"
    monkeypatch.chdir(tmp_path)
    worker = [sys.executable, "-m", "mmsc_dgl.distributed.worker", "one", "--out", "out", "--items", "5",
              "--walks", str(WALKS)]
    result = launch(Path("one"), 2, worker, servers=2, timeout=240, log_dir=Path("logs"))
    assert result.returncode == 0, result.message + (logs / "trainer-0.log").read_text()[-3000:]
    assert sorted(p.name for p in logs.glob("server-*.log")) == ["server-0.log", "server-1.log"]
    feats = load_features("hashed", load_dataset(parts / "ds"), 16)
    for rank in range(2):
        got = torch.load(tmp_path / "out" / f"rank-{rank}.pt", weights_only=True)
        torch.testing.assert_close(got["probe_tokens"], feats.tokens[got["probe_items"]])


def test_several_servers_of_several_partitions_on_one_host_are_refused(parts):
    from mmsc_dgl.errors import DataError
    with pytest.raises(DataError, match="backup servers of partition 0"):
        launch(parts / "parts", 2, _worker(parts), servers=2, timeout=60)


def _planted(part_dir):
    """A /dev/shm entry named as another job serving the same graph on this host would name one."""
    from mmsc_dgl.distributed.partition import load_partition_record
    return Path("/dev/shm") / f"{load_partition_record(part_dir)['graph_name']}-planted-by-test"


def test_a_second_job_of_the_same_graph_on_this_host_is_out_of_reach(parts, tmp_path):
    """Two jobs of one partition directory on one host: DistDGL names its /dev/shm buffers after
    the graph, so a trainer used to map whichever job's graph was there (seen: a test's trainers
    crashed in DGL's sampler while a benchmark served a 100k-item graph).  The job's trainers see
    only their own servers' /dev/shm, and the other job's entries stay untouched."""
    planted = _planted(parts / "parts")
    seen = tmp_path / "seen.txt"
    lister = [sys.executable, "-c",
              "import os, sys, time\n"
              "end = time.time() + 60\n"
              "while time.time() < end and not any(n.startswith(sys.argv[2]) for n in os.listdir('/dev/shm')):\n"
              "    time.sleep(0.2)\n"
              "open(sys.argv[1], 'w').write('\\n'.join(sorted(os.listdir('/dev/shm'))))\n",
              str(seen), planted.name.split("-planted")[0]]
    planted.write_bytes(b"another job")
    try:
        result = launch(parts / "parts", 1, lister, timeout=120, log_dir=tmp_path / "logs")
        assert result.returncode == 0, result.message
        names = seen.read_text().split("\n")
        assert planted.name not in names
        assert any(n.startswith(planted.name.split("-planted")[0]) for n in names)  # its own servers' graph
        assert planted.read_bytes() == b"another job"
    finally:
        planted.unlink(missing_ok=True)


def test_without_namespaces_a_second_job_of_the_same_graph_is_refused(parts, tmp_path):
    from mmsc_dgl.errors import DataError
    partition_dataset(parts / "ds", 1, tmp_path / "one")
    planted = _planted(tmp_path / "one")
    planted.write_bytes(b"another job")
    try:
        with pytest.raises(DataError, match="another DistDGL job") as error:
            launch(tmp_path / "one", 1, ["true"], isolate=False, timeout=60, log_dir=tmp_path / "logs")
        assert f"remove /dev/shm/{planted.name.split('-planted')[0]}*" in str(error.value) and planted.exists()
    finally:
        planted.unlink(missing_ok=True)
