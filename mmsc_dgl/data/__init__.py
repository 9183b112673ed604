"""Readers, the item catalog, the heterograph, splits and the dataset directory.

This package sits above the line: ``graph``, ``prepare`` and ``dataset`` use DGL.  The readers
and the catalog use pyarrow only.
"""
