"""One DistDGL graph server (``python -m mmsc_dgl.distributed.server``), configured by the
DGL_* environment variables that :mod:`mmsc_dgl.distributed.launch` sets; it serves until every
trainer has disconnected."""
import os


def main() -> None:
    import dgl
    dgl.distributed.initialize(os.environ["DGL_IP_CONFIG"])  # serves, then exits the process


if __name__ == "__main__":
    main()
