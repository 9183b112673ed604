"""Streaming line sources for plain and gzipped files, with progress and clear errors."""
from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path
from typing import Iterator, Tuple

from tqdm.auto import tqdm

from mmsc_dgl.errors import DataError
from mmsc_dgl.io import check_input_file

PROGRESS_MIN_BYTES = 8 << 20
"""Files at least this large show a progress bar (on a terminal)."""


def iter_lines(path: os.PathLike | str, progress: bool = True) -> Iterator[Tuple[int, str]]:
    """Yield ``(line_number, text)`` for each line of ``path`` (1-based, newline stripped).

    Reads one line at a time, so memory does not grow with the file.  ``.gz`` files are read
    through gzip; a stream that is cut off, or a file that is not really gzip, raises
    :class:`DataError` naming the last good line.  Undecodable bytes raise too.
    """
    path = Path(path)
    size = check_input_file(path)
    raw = open(path, "rb")
    stream = gzip.GzipFile(fileobj=raw, mode="rb") if path.suffix == ".gz" else raw
    bar = tqdm(total=size, unit="B", unit_scale=True, desc=path.name, leave=False,
               disable=(not progress) or size < PROGRESS_MIN_BYTES or None)
    line_no = 0
    last_pos = 0
    try:
        while True:
            try:
                data = stream.readline()
            except EOFError as err:
                raise DataError(f"the gzip stream is cut off after line {line_no} ({err}).",
                                path=path, line=line_no + 1,
                                fix="the download or copy was incomplete: fetch the file again.") from err
            except (gzip.BadGzipFile, zlib.error, OSError) as err:
                raise DataError(f"cannot decompress after line {line_no}: {err}.", path=path,
                                line=line_no + 1,
                                fix="check that the file really is gzip and is not damaged.") from err
            if not data:
                break
            line_no += 1
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError as err:
                raise DataError(f"the line is not UTF-8 ({err.reason} at byte {err.start}).",
                                path=path, line=line_no,
                                fix="re-encode the file as UTF-8.") from err
            pos = raw.tell()
            if pos - last_pos >= (1 << 20):
                bar.update(pos - last_pos)
                last_pos = pos
            yield line_no, text.rstrip("\r\n")
    finally:
        bar.close()
        if stream is not raw:
            stream.close()
        raw.close()
