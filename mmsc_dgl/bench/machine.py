"""What every benchmark records about where it ran, peak-memory probes, and JSON output."""
from __future__ import annotations

import os
import platform
import resource
import sys
from pathlib import Path
from typing import Optional


def machine_info(device: Optional[str] = None) -> dict:
    """CPU count, torch/DGL/Python versions and the device (GPU name when on CUDA)."""
    import torch
    info = {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "python": sys.version.split()[0],
            "torch": torch.__version__, "platform": platform.platform(), "processor": _cpu_name(),
            "device": device or "cpu"}
    try:  # DGL is absent on the GPU hosts; that is expected
        import importlib.metadata
        info["dgl"] = importlib.metadata.version("dgl")
    except Exception:
        info["dgl"] = None
    if device and device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def status_bytes(field: str) -> int:
    """A ``/proc/self/status`` field (``VmRSS``, ``VmHWM``) in bytes; 0 where unavailable."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def reset_peak() -> bool:
    """Reset the process's resident high-water mark (Linux), so VmHWM measures what follows."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def peak_rss_mib() -> float:
    hwm = status_bytes("VmHWM")
    if hwm:
        return round(hwm / 2**20, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def add_json_option(parser) -> None:
    """``--json OUT`` and ``--overwrite`` (an existing OUT is refused without it)."""
    parser.add_argument("--json", type=Path, help="write the rows as JSON here")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --json file")


def run_script(main) -> None:
    """Run a benchmark script's ``main``: bad input ends with one ``error:`` line and exit code 2,
    as on the command line, not a traceback."""
    from mmsc_dgl.errors import DataError
    try:
        main()
    except DataError as err:
        sys.stderr.write(f"error: {err}\n")
        raise SystemExit(2)


def check_json_target(args) -> None:
    """Refuse an existing ``--json`` file before the benchmark runs, not after."""
    if getattr(args, "json", None) is not None:
        from mmsc_dgl.ownership import check_output_file
        check_output_file(args.json, overwrite=args.overwrite, option="--json")


def write_json(path, benchmark: str, rows: list, device: Optional[str] = None, **extra) -> None:
    """``{"benchmark", "machine", "results", ...}`` written atomically as strict JSON (no DGL,
    no pyarrow needed)."""
    from mmsc_dgl.io import atomic_write_text, strict_json
    payload = {"benchmark": benchmark, "machine": machine_info(device), **extra, "results": rows}
    atomic_write_text(path, strict_json(payload, sort_keys=False, fallback=str) + "\n")


def format_table(columns, rows) -> str:
    """``columns``: ``(header, key, format)``; a missing value prints as ``-``."""
    cells = [[h for h, _, _ in columns]]
    for row in rows:
        line = []
        for _, key, fmt in columns:
            value = row.get(key)
            line.append("-" if value is None else format(value, fmt) if fmt else str(value))
        cells.append(line)
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    out = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in cells]
    out.insert(1, "-" * len(out[0]))
    return "\n".join(out)


def setup_logging() -> None:
    """INFO to stderr when the caller (a script) has not configured logging itself."""
    import logging
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
