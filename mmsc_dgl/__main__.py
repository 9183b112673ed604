"""``python -m mmsc_dgl``: the same commands as the ``mmsc-dgl`` script."""
from mmsc_dgl.cli import main

if __name__ == "__main__":
    main(prog_name="mmsc-dgl")
