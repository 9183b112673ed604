"""Starting a DistDGL job on this machine (``mmsc-dgl launch``): graph servers for every
partition, then the trainers, supervised until the trainers end.

DGL's cluster launcher (``tools/launch.py``) is not in the wheel, so the processes are started
here, with the environment DistDGL reads (``../shared/distdgl/NOTES.md``) and the two traps of
that note handled:

* **Shared memory.** Two servers on one host name their ``/dev/shm`` buffers (graph structure,
  partition book, features) after the graph and feature only, so the second would silently
  serve the first one's features, and a second job's trainers would map the first job's graph.
  Each partition's servers run in their own user and mount namespace with a private
  ``/dev/shm`` (``unshare --user --map-root-user --mount``; a partition's backup servers join
  its main server's), and the trainers join the namespace of this host's first partition: they
  find their machine's partition through its names (on loopback ip_config lists one line per
  partition, all on 127.0.0.1, so every trainer counts as machine 0).  Without user namespaces
  only one partition is served here, in the host's ``/dev/shm``, and a job is refused while
  another's entries of the same graph are there.
* **Hangs.** A server waits forever for a trainer that died.  The launcher polls its children:
  a trainer that exits with an error, or the hard ``timeout``, ends the whole job; every child
  is ended by its process group (each starts a new session: never by name), and the
  ``/dev/shm`` entries the job created with DistDGL's names (the graph's name, ``*-kvdata-*``)
  are removed; nothing that was there before the job is touched.  A trainer that raises while
  the others wait for it exits at once instead of into DGL's exit barrier
  (:mod:`mmsc_dgl.distributed.client`).
* **Rendezvous.** The first machine's launcher holds the ``torch.distributed`` store, as
  torchrun's agent does, and the trainers join it as clients: its port is bound before any
  trainer starts, so no other process can take it in between.

The exit code is the first failing trainer's (124 for the timeout, as ``timeout(1)``).
"""
from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from mmsc_dgl.errors import DataError

logger = logging.getLogger(__name__)

SHM = Path("/dev/shm")
PRIVATE_SHM = ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", "mount -t tmpfs tmpfs /dev/shm"]
"""A shell in its own user and mount namespace with a private ``/dev/shm``; a command to run
there is appended to the last word (``&& exec ...``)."""
GRACE_SECONDS = 20.0
"""How long servers get to exit on their own after the last trainer ended."""


@dataclass
class LaunchResult:
    """How a launched job ended."""

    returncode: int
    seconds: float
    message: str
    logs: Path
    trainer_codes: Dict[int, Optional[int]] = field(default_factory=dict)
    shm_removed: List[str] = field(default_factory=list)
    pids: List[int] = field(default_factory=list)
    """Every child's PID (all ended when ``launch`` returns)."""
    peak_rss_mib: Dict[str, float] = field(default_factory=dict)
    """Each child's resident high-water mark (``server-0``, ``trainer-1``, ...), read from
    ``/proc`` while the job ran."""
    threads: int = 0
    """The OpenMP / torch threads each trainer ran with (``OMP_NUM_THREADS``)."""


def proc_memory_mib(pid="self", names=("VmHWM",)) -> Dict[str, float]:
    """The memory fields ``names`` of ``/proc/PID/status`` (kB there), in MiB; those the file
    lacks, or all where it cannot be read (the process is gone, or there is no ``/proc``), are
    left out."""
    found: Dict[str, float] = {}
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                name, _, value = line.partition(":")
                if name in names:
                    found[name] = int(value.split()[0]) / 1024
    except OSError:
        pass
    return found


def _peak_rss_mib(pid: int) -> float:
    return proc_memory_mib(pid).get("VmHWM", 0.0)


def free_ports(count: int) -> List[int]:
    """``count`` distinct TCP ports free on 127.0.0.1 right now."""
    socks, ports = [], []
    for _ in range(count):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def _rendezvous_store(host: str, port: int, timeout: float):
    """The ``torch.distributed`` rendezvous store, held by this process (``port`` 0: any free
    one; its ``port`` says which).  Trainers started with ``TORCHELASTIC_USE_AGENT_STORE=True``
    join it as clients, under torchrun's key prefix."""
    from datetime import timedelta

    from torch.distributed import TCPStore
    try:
        return TCPStore(host, port, None, True, timedelta(seconds=max(timeout, 1.0)), wait_for_workers=False)
    except (RuntimeError, OSError) as err:  # torch's DistNetworkError is a RuntimeError
        raise DataError(f"the rendezvous port {port} cannot be held on this machine ({str(err).splitlines()[0]}).",
                        fix="choose another free --master-port (the same on every host).") from None


def isolation_available() -> bool:
    """Whether ``unshare`` can give a server a private ``/dev/shm`` here (user namespaces)."""
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(PRIVATE_SHM, capture_output=True, timeout=30)
    return probe.returncode == 0


def _namespace_ready(pid: int, timeout: float = 30.0) -> int:
    """``pid``, once the partition's first server has made its private ``/dev/shm`` and become
    the server (``unshare`` then ``sh`` exec into Python after the mount): its namespace can be
    joined."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if b"python" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]:
                return pid
        except OSError:
            break  # it died: the supervision below reports it
        time.sleep(0.05)
    return pid


class Terminated(Exception):
    """The launcher was sent SIGTERM; its job was ended."""


def _terminated(signum, frame):
    raise Terminated("the launcher was sent SIGTERM; every server and trainer was ended")


def _remove_shm(before: set, graph_name: str) -> List[str]:
    """Remove the ``/dev/shm`` entries the job left: only what DistDGL names after the graph or a
    feature, and only what appeared during the job."""
    removed: List[str] = []
    if not SHM.is_dir():
        return removed
    ours = [n for n in set(os.listdir(SHM)) - before if n.startswith(graph_name) or "-kvdata-" in n]
    for name in sorted(ours):
        try:
            (SHM / name).unlink()
            removed.append(name)
        except OSError:
            pass
    return removed


def _end(procs: Sequence[subprocess.Popen], grace: float = 5.0) -> None:
    """SIGTERM each child's process group, then SIGKILL what is left after ``grace`` seconds."""
    for p in procs:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + grace
    for p in procs:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()


def read_ip_config(path: os.PathLike | str) -> List[tuple]:
    """DistDGL's ip_config: one ``IP [PORT]`` line per machine (port 30050 when absent), in the
    order of the machines' ranks; a bad line is a one-line error."""
    machines = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise DataError(f"cannot read the ip_config ({err.strerror}).", path=path,
                        fix="pass --ip-config FILE with one 'IP PORT' line per machine.") from None
    for number, line in enumerate(lines, 1):
        words = line.split()
        if not words:
            continue
        try:
            socket.inet_aton(words[0])
            port = int(words[1]) if len(words) > 1 else 30050
        except (OSError, ValueError):
            raise DataError(f"not an 'IP PORT' line: {line.strip()!r}.", path=path, line=number,
                            fix="write one machine per line, e.g. '10.0.0.1 30050'.") from None
        machines.append((words[0], port))
    if not machines:
        raise DataError("the ip_config lists no machine.", path=path, fix="write one 'IP PORT' line per machine.")
    return machines


def trainer_threads(trainers: int) -> int:
    """OpenMP / torch threads per trainer when none are asked for: ``$OMP_NUM_THREADS`` where
    it is set, otherwise this host's cores shared by its ``trainers``, at least one (the graph
    servers run one thread each, ``server_threads``).

    DGL's ``launch.py`` gives trainers half the cores, leaving the rest to its sampler
    processes; this launcher starts none (``DGL_NUM_SAMPLER=0``), and on a 2-core host one
    trainer took 0.40 / 0.66 s a step on one thread against 0.31 / 0.40 s on two.  Without a
    setting every process of a job starts a thread per core: on loopback (4 servers and 4
    trainers on 2 cores) that made a step with sharded tables, each pull waiting on a server,
    11x slower (docs/distributed.md, section 3)."""
    given = os.environ.get("OMP_NUM_THREADS", "").strip()
    if given.isdigit() and int(given) > 0:
        return int(given)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(cores // trainers, 1)


def launch(part_dir: os.PathLike | str, trainers: int, command: Sequence[str], servers: int = 1,
           timeout: float = 600.0, log_dir: Optional[os.PathLike | str] = None,
           isolate: Optional[bool] = None, ip_config: Optional[os.PathLike | str] = None, machine: int = 0,
           master_port: int = 29500, threads: Optional[int] = None, server_threads: int = 1) -> LaunchResult:
    """Run ``servers`` graph servers per partition of ``part_dir`` and ``trainers`` copies of
    ``command`` (each with the DistDGL client environment and ``RANK`` / ``WORLD_SIZE`` /
    ``MASTER_ADDR`` / ``MASTER_PORT`` for ``torch.distributed``), on this machine.

    With ``ip_config`` it is one machine of a cluster (one command per host, the same on every
    host but ``machine``): this host runs partition ``machine``'s servers (global ids
    ``machine * servers ...``) and trainers of global rank ``machine * trainers + t``; the group
    meets at the first machine's IP on ``master_port``.

    Args:
        part_dir: written by ``mmsc-dgl partition``.
        trainers: trainer processes (on this machine).
        command: the trainer program and its arguments.
        servers: servers per partition (more than one shares a partition's requests).
        timeout: seconds before the whole job is ended (exit code 124).
        log_dir: where each child's output goes (default: a new temporary directory).
        isolate: private ``/dev/shm`` namespaces for the whole job (default: when ``unshare``
            works here; without it, more than one partition here is refused, since the servers
            would read each other's memory, and so is a second job of the same graph).
        ip_config: DistDGL's ip_config, one ``IP PORT`` line per machine (= per partition);
            ``None``: every partition on this machine (loopback).
        machine: this host's line of ``ip_config`` (0-based).
        master_port: the ``torch.distributed`` rendezvous port on the first machine.
        threads: OpenMP / torch threads per trainer (``OMP_NUM_THREADS``; default
            :func:`trainer_threads`: ``$OMP_NUM_THREADS`` where set, otherwise this host's cores
            shared by its trainers).
        server_threads: OpenMP threads per graph server (DGL's ``launch.py`` default, 1).
    """
    from mmsc_dgl.distributed.partition import load_partition_record
    part_dir = Path(part_dir).resolve()
    record = load_partition_record(part_dir)
    if trainers < 1 or servers < 1:
        raise DataError("--trainers and --servers must be at least 1.", fix="e.g. --trainers 2 --servers 1.")
    if (threads is not None and threads < 1) or server_threads < 1:
        raise DataError("--threads and --server-threads must be at least 1.",
                        fix="e.g. --threads 4 --server-threads 1.")
    threads = trainer_threads(trainers) if threads is None else threads
    if not command:
        raise DataError("no trainer command.", fix="put it after --: mmsc-dgl launch PART_DIR -- python train.py")
    parts = int(record["num_parts"])
    machines = read_ip_config(ip_config) if ip_config is not None else None
    if machines is not None:
        if len(machines) != parts:
            raise DataError(f"the ip_config lists {len(machines)} machine(s) for {parts} partition(s).",
                            path=ip_config, fix="list one machine per partition (DistDGL serves one partition "
                                                "per machine), or partition again with --parts "
                                                f"{len(machines)}.")
        if not 0 <= machine < parts:
            raise DataError(f"--machine {machine} is not a line of the ip_config (0..{parts - 1}).",
                            path=ip_config, fix="pass this host's 0-based line number.")
    elif machine:
        raise DataError("--machine is for a cluster, with --ip-config.", fix="add --ip-config FILE, or drop --machine.")
    # The servers this host runs (global ids), and the partition whose /dev/shm the trainers map:
    # this host's, or on loopback (all machines 127.x: a cluster simulated on one host) the first.
    loopback = machines is not None and all(ip.startswith("127.") for ip, _ in machines)
    if machines is None:
        here = list(range(parts * servers))
    else:
        here = list(range(machine * servers, (machine + 1) * servers))
    if servers > 1 and parts > 1 and (machines is None or loopback):
        # DistDGL's client hands the feature metadata to the backup servers of its own machine
        # only, and every trainer of a one-host job counts as machine 0: the other partitions'
        # backup servers would refuse their first request ("cannot find partition policy").
        raise DataError(f"--servers {servers} with {parts} partitions on one host: DistDGL tells only the backup "
                        f"servers of partition 0 where the features are (every trainer here counts as machine 0), "
                        f"so partition 1's backup servers would fail.",
                        fix="use --servers 1 with several partitions here, several servers with 1 partition, or "
                            "one host per partition (--ip-config) for both.")
    # Partitions are isolated from each other, not the servers of one partition: a partition's
    # backup servers map its main server's /dev/shm, so they join its namespace (nsenter).  Where
    # namespaces work, the whole job runs in private ones (the trainers join this host's first
    # partition's, whose names they read): a second job on this host, with the same graph name,
    # cannot serve this one's trainers its graph (measured: its trainers crashed in DGL's sampler).
    host_part = 0 if machines is None or loopback else machine
    isolate = isolation_available() if isolate is None else isolate
    if not isolate and any(i // servers != host_part for i in here):
        raise DataError("the partitions served on this machine need a private /dev/shm each (unshare with user "
                        "namespaces), which is not available here.",
                        fix="partition into 1 part (any --servers), or run on a host with user namespaces.")
    # One launcher per "machine" of a loopback ip_config (a cluster simulated on one host): every
    # launcher's trainers map partition 0's /dev/shm, so that one stays the host's.
    simulated = machines is not None and loopback
    private = [i for i in here if not (simulated and i // servers == host_part)] if isolate else []
    if any(i // servers == host_part and i not in private for i in here) and SHM.is_dir():
        taken = sorted(n for n in os.listdir(SHM) if n.startswith(record["graph_name"]))
        if taken:
            raise DataError(f"another DistDGL job seems to serve the graph {record['graph_name']!r} on this host "
                            f"({SHM / taken[0]} exists), and without a private /dev/shm its trainers and this "
                            f"job's would read each other's graph.",
                            fix=f"wait for that job to end; if none runs, remove {SHM}/{record['graph_name']}* "
                                "left by a killed one.")
    if log_dir is not None and Path(log_dir).is_dir() and any(Path(log_dir).iterdir()):
        raise DataError("the log directory is not empty; the job's logs would replace files there.",
                        path=log_dir, fix="choose a new or empty --logs directory.")
    logs = Path(log_dir) if log_dir else Path(tempfile.mkdtemp(prefix="mmsc-launch-"))
    logs.mkdir(parents=True, exist_ok=True)
    if machines is None:
        ports = free_ports(parts)
        ip_file = logs / "ip_config.txt"
        ip_file.write_text("".join(f"127.0.0.1 {port}\n" for port in ports))
        master, port, world, first_rank = "127.0.0.1", 0, trainers, 0
    else:
        assert ip_config is not None  # a multi-machine job names its machines
        ip_file = Path(ip_config).resolve()
        master, port, world, first_rank = machines[0][0], master_port, parts * trainers, machine * trainers
    # The first machine's launcher holds the torch.distributed rendezvous store, as torchrun's
    # agent does, and every trainer joins it as a client: the port is bound before any trainer
    # starts, so no other process can take it in between (a port picked free and bound later by
    # trainer 0 was, now and then, and the job hung until --timeout).
    store = _rendezvous_store(master, port, timeout) if machine == 0 else None
    if store is not None:
        port = store.port
    base = {**os.environ, "DGL_DIST_MODE": "distributed", "DGL_IP_CONFIG": str(ip_file),
            "DGL_CONF_PATH": str(part_dir / record["config"]), "DGL_NUM_SERVER": str(servers),
            "DGL_NUM_CLIENT": str(world), "DGL_NUM_SAMPLER": "0", "DGL_GRAPH_FORMAT": "csc,csr,coo",
            "PYTHONUNBUFFERED": "1"}
    shm_before = set(os.listdir(SHM)) if SHM.is_dir() else set()
    started = time.monotonic()
    # A launcher that is sent SIGTERM (a scheduler's kill, timeout(1)) ends its children as on
    # Ctrl-C: the signal becomes an exception, and the clean-up below runs.
    previous = signal.getsignal(signal.SIGTERM)
    in_main = threading.current_thread() is threading.main_thread()
    if in_main:
        signal.signal(signal.SIGTERM, _terminated)
    server_procs: List[subprocess.Popen] = []
    trainer_procs: Dict[int, subprocess.Popen] = {}
    handles = []
    peaks: Dict[str, float] = {}
    try:
        namespace: Dict[int, int] = {}  # partition -> pid of its first server, in the partition's namespace
        for server_id in here:
            cmd = [sys.executable, "-m", "mmsc_dgl.distributed.server"]
            part = server_id // servers
            if server_id in private and part in namespace:
                cmd = ["nsenter", "-t", str(_namespace_ready(namespace[part])), "-U", "-m",
                       "--preserve-credentials", f"--wd={os.getcwd()}", *cmd]
            elif server_id in private:
                inner = " ".join(cmd)
                cmd = PRIVATE_SHM[:-1] + [f"{PRIVATE_SHM[-1]} && exec {inner}"]
            out = open(logs / f"server-{server_id}.log", "wb")
            handles.append(out)
            server_procs.append(subprocess.Popen(cmd, env={**base, "DGL_ROLE": "server",
                                                           "DGL_SERVER_ID": str(server_id),
                                                           "OMP_NUM_THREADS": str(server_threads)},
                                                 stdout=out, stderr=subprocess.STDOUT, start_new_session=True))
            namespace.setdefault(part, server_procs[-1].pid)
        join: List[str] = []  # the trainers map this host's first partition's /dev/shm
        if host_part * servers in private:
            # entering a mount namespace moves a process to its root: --wd keeps relative paths working
            join = ["nsenter", "-t", str(_namespace_ready(namespace[host_part])), "-U", "-m",
                    "--preserve-credentials", f"--wd={os.getcwd()}"]
        for local in range(trainers):
            rank = first_rank + local
            out = open(logs / f"trainer-{rank}.log", "wb")
            handles.append(out)
            env = {**base, "DGL_ROLE": "client", "RANK": str(rank), "WORLD_SIZE": str(world),
                   "LOCAL_RANK": str(local), "MASTER_ADDR": master, "MASTER_PORT": str(port),
                   "TORCHELASTIC_USE_AGENT_STORE": "True", "TORCHELASTIC_RESTART_COUNT": "0",
                   "OMP_NUM_THREADS": str(threads)}
            trainer_procs[rank] = subprocess.Popen(join + list(command), env=env, stdout=out,
                                                   stderr=subprocess.STDOUT, start_new_session=True)
        logger.info("launched %d server(s) for %d partition(s) and %d trainer(s) (%d thread(s) each, %d per "
                    "server); logs in %s", len(server_procs), parts, trainers, threads, server_threads, logs)
        code, message = 0, ""
        children = {**{f"server-{here[i]}": p for i, p in enumerate(server_procs)},
                    **{f"trainer-{r}": p for r, p in trainer_procs.items()}}
        # When each trainer ended, taken as it ends (a thread waits on each): a trainer that fails
        # makes the others fail too (a collective loses its peer), often within one poll, and the
        # job's code and message must be the first failure's, the cause.
        ended: Dict[int, Tuple[float, int]] = {}

        def watch(rank: int, proc: subprocess.Popen) -> None:
            code = proc.wait()
            ended[rank] = (time.monotonic(), code)
        for rank, proc in trainer_procs.items():
            threading.Thread(target=watch, args=(rank, proc), daemon=True).start()

        def probe() -> None:
            for name, proc in children.items():
                if proc.poll() is None:
                    peaks[name] = max(peaks.get(name, 0.0), _peak_rss_mib(proc.pid))
        while True:
            probe()
            done = dict(ended)
            codes = {r: done[r][1] if r in done else None for r in trainer_procs}
            failed = {r: int(c) for r, c in codes.items() if c is not None and c != 0}
            dead_servers = [i for i, p in enumerate(server_procs) if p.poll() not in (None, 0)]
            if failed:
                rank = min(failed, key=lambda r: (done[r][0], r))  # the first to fail
                code = failed[rank]
                message = (f"trainer {rank} exited with code {code}; the job was ended "
                           f"(its log: {logs / f'trainer-{rank}.log'}).")
                break
            if dead_servers and any(c is None for c in codes.values()):
                i = dead_servers[0]
                code = int(server_procs[i].returncode or 1)
                message = (f"graph server {here[i]} died; the job was ended "
                           f"(its log: {logs / f'server-{here[i]}.log'}).")
                break
            if all(c == 0 for c in codes.values()):
                message = f"{trainers} trainer(s) finished"
                deadline = time.monotonic() + GRACE_SECONDS
                while any(p.poll() is None for p in server_procs) and time.monotonic() < deadline:
                    probe()
                    time.sleep(0.2)
                break
            if time.monotonic() - started > timeout:
                code = 124
                message = f"the job ran past --timeout {timeout:g} s and was ended (logs: {logs})."
                break
            time.sleep(0.2)
        trainer_codes = {r: p.poll() for r, p in trainer_procs.items()}
    finally:
        _end(list(trainer_procs.values()) + server_procs)
        for h in handles:
            h.close()
        if in_main:
            signal.signal(signal.SIGTERM, previous)
        removed = _remove_shm(shm_before, record["graph_name"])  # also when interrupted
    seconds = time.monotonic() - started
    if removed:
        logger.info("removed %d /dev/shm entr%s the job left: %s", len(removed), "y" if len(removed) == 1 else "ies",
                    ", ".join(removed[:5]))
    pids = [p.pid for p in server_procs] + [p.pid for p in trainer_procs.values()]
    return LaunchResult(code, seconds, message, logs, trainer_codes, removed, pids,
                        {k: round(v, 1) for k, v in sorted(peaks.items())}, threads)


__all__ = ["LaunchResult", "Terminated", "free_ports", "isolation_available", "launch", "read_ip_config"]
