import gzip
import json
import os
from pathlib import Path

import pytest

try:  # hypothesis is a test extra; the GPU hosts run the kernel tests without it
    from hypothesis import settings
except ImportError:  # pragma: no cover
    settings = None

# CI runs the property tests with a fixed derandomised seed, so a red build is reproducible.
if settings is not None:
    settings.register_profile("ci", derandomize=True, deadline=None)
    if os.environ.get("CI"):
        settings.load_profile("ci")

os.environ.setdefault("DGLBACKEND", "pytorch")
# Without a GPU, Triton kernels run in Triton's interpreter.  It reads this variable when a
# kernel is defined, so it is set before anything imports mmsc_dgl.ops.triton_kernel.
if not os.environ.get("MMSC_NO_TRITON_INTERPRET"):
    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
MAGAZINE = SHARED_DATA / "amazon-2018-magazine" / "meta_Magazine_Subscriptions.json.gz"


@pytest.fixture
def magazine_path() -> Path:
    if not MAGAZINE.exists():
        pytest.skip(f"real Amazon data not found at {MAGAZINE} (../shared/data is absent)")
    return MAGAZINE


def write_lines(path: Path, lines, gz: bool = False) -> Path:
    data = "".join(line + "\n" for line in lines).encode()
    if gz:
        with gzip.open(path, "wb") as handle:
            handle.write(data)
    else:
        path.write_bytes(data)
    return path


def record_2018(asin, also_view=(), also_buy=(), title="A title", **extra) -> str:
    return json.dumps({"asin": asin, "title": title, "description": ["Some text."],
                       "category": ["Books", "Fiction"], "brand": "B", "also_view": list(also_view),
                       "also_buy": list(also_buy), "imageURL": [], **extra})


def record_2014(asin, also_viewed=(), also_bought=(), bought_together=(), title="A title") -> str:
    related = {}
    if also_viewed:
        related["also_viewed"] = list(also_viewed)
    if also_bought:
        related["also_bought"] = list(also_bought)
    if bought_together:
        related["bought_together"] = list(bought_together)
    return repr({"asin": asin, "title": title, "description": "Old text.",
                 "categories": [["Electronics", "Phones"]], "imUrl": "http://x/y.jpg",
                 "related": related})


def assert_same_training_signal(one, other, loss_one, loss_other) -> None:
    """Two models with the same weights gave the same loss, and backward gives each parameter
    the same gradient (the sharded stand-ins for a whole table or graph are tested by it)."""
    import torch
    assert torch.allclose(loss_one, loss_other, atol=1e-6)
    loss_one.backward()
    loss_other.backward()
    for (name, p), q in zip(one.named_parameters(), other.parameters()):
        if p.grad is not None:
            assert torch.allclose(p.grad, q.grad, atol=1e-5), name


def run_sharing(world: int, work):
    """``work(share)`` in ``world`` threads, each with its own ``ShareQueries`` whose gather
    meets the others' (data-parallel processes simulated): ``(results by rank, the query rows
    each rank ranked)``."""
    import threading

    from mmsc_dgl.distributed.training import ShareQueries
    slots: list = [None] * world
    meet = threading.Barrier(world)
    got: list = [None] * world
    ranked = [0] * world

    def run(rank):
        def gather(value):
            slots[rank] = value
            meet.wait()
            out = list(slots)
            meet.wait()
            return out
        share = ShareQueries(rank, world, gather=gather)
        part = share.part

        def counted(q):
            ranked[rank] += len(part(q))
            return part(q)
        share.part = counted
        got[rank] = work(share)
    threads = [threading.Thread(target=run, args=(rank,)) for rank in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return got, ranked
