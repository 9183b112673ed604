"""Training beyond one machine on DistDGL: partitioning a dataset (``mmsc-dgl partition``).

Imports DGL (``dgl.distributed``); nothing below this floor imports it.
"""
