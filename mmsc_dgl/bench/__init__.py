"""Benchmark implementations shared by ``benchmarks/*.py`` and ``mmsc-dgl bench``.

Each module has ``main(argv=None)``: it prints a table and, with ``--json OUT``, writes the rows
together with :func:`~mmsc_dgl.bench.machine.machine_info`.  Nothing here is imported by the
library itself.
"""
