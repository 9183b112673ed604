"""The ``mmsc-dgl`` command line: a thin face over the library.

Each command parses its options, makes one library call and prints the result.  Nothing here
is needed by the library, and nothing imports this module.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Optional, Tuple

import click

from mmsc_dgl.schema import __version__
from mmsc_dgl.config import ARCHITECTURE_NAMES, SEED_MAX, SYNTHETIC_MAX
from mmsc_dgl.errors import DataError, command_line

SEED = click.IntRange(0, SEED_MAX)
"""What every --seed takes: the seeds each random generator accepts."""


def _program() -> str:
    """How to call mmsc-dgl again, for the commands printed to copy: ``mmsc-dgl`` when the
    shell finds this very program on PATH (or it runs in-process), else the path it was started
    by: after the README's install the venv is not activated, and ``mmsc-dgl ...`` would be
    'command not found' where ``.venv/bin/mmsc-dgl ...`` works."""
    import os
    import shutil
    started = sys.argv[0] if sys.argv else ""
    if os.path.basename(started) != "mmsc-dgl" or not os.path.isfile(started):
        return "mmsc-dgl"
    found = shutil.which("mmsc-dgl")
    if found and os.path.realpath(found) == os.path.realpath(started):
        return "mmsc-dgl"
    return _quote(started)


def _quote(value) -> str:
    """A value as one shell word, for the commands printed to copy (spaces, quotes, newlines)."""
    import shlex
    return shlex.quote(str(value))


class _OutFile(click.Path):
    """A file to write: ``newdir/`` (a trailing slash says directory) is refused, where
    ``pathlib`` would drop the slash and write a file named ``newdir``."""

    def __init__(self) -> None:
        super().__init__(dir_okay=False, path_type=Path)

    def convert(self, value, param, ctx):
        if isinstance(value, str) and value.endswith(("/", "\\")):
            self.fail(f"{value!r} ends with '/', a directory; name the file to write, e.g. "
                      f"{value.rstrip('/')}/recs.parquet", param, ctx)
        return super().convert(value, param, ctx)


OUT_FILE = _OutFile()


class _Format(logging.Formatter):
    """Progress lines as they are; warnings and errors with their level; -v adds time and logger."""

    def __init__(self, detailed: bool):
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s" if detailed else "%(message)s")
        self.detailed = detailed

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if not self.detailed and record.levelno >= logging.WARNING:
            text = f"{record.levelname.lower()}: {text}"
        return text


def _setup_logging(verbose: int, quiet: bool) -> None:
    """stderr: warnings always; progress lines (one per epoch or chunk) unless -q; -v every
    INFO line of the library, -vv DEBUG."""
    level = logging.WARNING if verbose <= 0 else logging.INFO if verbose == 1 else logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Format(detailed=verbose > 0))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    logging.getLogger("mmsc_dgl.progress").setLevel(logging.WARNING if quiet else logging.INFO)


def _verbosity(command):
    """-v/-q accepted after the subcommand too (``mmsc-dgl train -v``)."""
    def set_level(ctx: click.Context, param: click.Parameter, value) -> None:
        if value:
            root = ctx.find_root()
            root.meta[param.name] = root.meta.get(param.name, 0) + value
            _setup_logging(root.meta.get("verbose", 0), bool(root.meta.get("quiet")))
    command = click.option("-v", "--verbose", count=True, expose_value=False, callback=set_level,
                           help="Log progress details (-v) or debug lines (-vv).")(command)
    return click.option("-q", "--quiet", is_flag=True, expose_value=False, callback=set_level,
                        help="No progress lines; warnings and errors only.")(command)


def _device(ctx: click.Context, param: click.Parameter, value: Optional[str]) -> Optional[str]:
    """A device torch can name (checked before any work)."""
    import re

    from mmsc_dgl.config import DEVICE_PATTERN
    if value is not None and not re.match(DEVICE_PATTERN, value):
        raise click.BadParameter(f"{value!r} is not a device; use auto, cpu, cuda or cuda:N.")
    return value


class _Group(click.Group):
    """Turns bad input into a one-line message and exit code 2, never a traceback: a
    :class:`DataError` (bad data, file or option), or an OS error on a path (permissions, a file
    where a directory was expected, a full disk)."""

    def invoke(self, ctx: click.Context):
        with command_line():  # messages name flags here, arguments from Python
            return self._invoke(ctx)

    def _invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except click.UsageError as err:  # a bad option: one line, not click's usage block
            where = err.ctx.command_path if err.ctx is not None else ctx.command_path
            click.echo(f"error: {err.format_message()} Fix: see {where} --help.", err=True)
            sys.exit(2)
        except (DataError, FileExistsError) as err:
            click.echo(f"error: {err}", err=True)
            sys.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted: what was written is complete up to the last checkpoint or chunk "
                       "(train --resume, features and augment continue from there).", err=True)
            sys.exit(130)
        except OSError as err:
            if err.filename is None:
                import errno
                if err.errno not in (errno.ENOSPC, errno.EDQUOT):
                    raise
                click.echo(f"error: a disk is full ({err.strerror}). Fix: free space where --out writes, "
                           "or choose another location.", err=True)
                sys.exit(2)
            click.echo(f"error: {err.filename}: {err.strerror}. Fix: check the path and its permissions, "
                       "or choose another location.", err=True)
            sys.exit(2)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mmsc-dgl")
@click.option("-v", "--verbose", count=True, help="Log progress details (-v) or debug lines (-vv).")
@click.option("-q", "--quiet", is_flag=True, help="No progress lines; warnings and errors only.")
@click.pass_context
def main(ctx: click.Context, verbose: int, quiet: bool) -> None:
    """Infer substitutable and complementary items with multi-modal relational graphs.

    Long commands print one progress line per epoch or chunk to stderr (and draw bars on a
    terminal); -q silences the lines."""
    ctx.meta["verbose"], ctx.meta["quiet"] = verbose, quiet
    _setup_logging(verbose, quiet)


@main.command()
@click.argument("inputs", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Dataset directory to write.")
@click.option("--format", "fmt", type=click.Choice(["amazon", "edgelist", "parquet"]),
              help="Input format (default: from the file names).")
@click.option("--synthetic", type=click.IntRange(min=50, max=SYNTHETIC_MAX), metavar="N",
              help="Generate the built-in synthetic catalog of N items instead of reading files.")
@click.option("--noise-rate", type=click.FloatRange(0, 1, max_open=True),
              help="Synthetic: share of noise edges (default 0.2).")
@click.option("--relation-map", metavar="KEY=REL,...",
              help="Map raw relation keys to substitute/complement/ignore, "
                   "e.g. 1=complement,2=substitute or also_view=substitute.")
@click.option("--items", "items", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Parquet item table for edge-list inputs.")
@click.option("--pairs", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Labelled pair file (relation src dst label) kept as a given test set.")
@click.option("--valid", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Given validation pairs (relation src dst [label]; edge list or parquet): with --test, "
                   "every input edge trains and nothing is held out of it.")
@click.option("--test", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Given test pairs (relation src dst [label]); labelled ones also give ROC-AUC/PR-AUC/F1.")
@click.option("--holdout", type=click.Choice(["per-item", "none"]),
              help="per-item: carve validation/test edges out of the inputs (default for one input); "
                   "none: the given --valid/--test are the held-out edges (default when given).")
@click.option("--drop-overlap", is_flag=True, help="Given splits: remove validation/test positives that are "
                                                    "also training edges from training (default: keep, count).")
@click.option("--schema", type=click.Choice(["auto", "2014", "2018"]), default="auto", show_default=True,
              help="Amazon metadata schema.")
@click.option("--id-type", type=click.Choice(["auto", "int", "str"]), default="auto", show_default=True,
              help="Edge-list ids: integers or names.")
@click.option("--symmetric/--directed", default=True, show_default=True,
              help="Add the reverse of every edge.")
@click.option("--strict", is_flag=True, help="Stop at the first malformed line instead of counting it.")
@click.option("--num-negatives", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Sampled negatives per held-out edge.")
@click.option("--min-degree", type=click.IntRange(min=2), default=2, show_default=True,
              help="Items with this many edges of a relation hold out a test and a validation edge.")
@click.option("--cold-fraction", type=click.FloatRange(0, 0.5),
              help="Share of items held out for cold start (default: the catalog's is_cold_start "
                   "column if any, else 0.05).")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="YAML/TOML file with PrepareConfig fields; flags override it.")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed for splits and synthetic data.")
@click.option("--overwrite", is_flag=True, help="Replace the mmsc_dgl dataset already in --out (nothing else).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@_verbosity
def prepare(inputs: Tuple[Path, ...], out: Path, fmt: Optional[str], synthetic: Optional[int],
            noise_rate: Optional[float], relation_map: Optional[str], items: Optional[Path],
            pairs: Optional[Path], valid: Optional[Path], test: Optional[Path], holdout: Optional[str],
            drop_overlap: bool, schema: str, id_type: str, symmetric: bool, strict: bool,
            num_negatives: int, min_degree: int, cold_fraction: Optional[float],
            config_path: Optional[Path], seed: int, overwrite: bool, as_json: bool) -> None:
    """Turn INPUTS (Amazon metadata, edge lists or parquet tables) into a dataset directory."""
    from mmsc_dgl.config import PrepareConfig, SyntheticConfig
    from mmsc_dgl.data.prepare import prepare as run_prepare

    ctx = click.get_current_context()
    given = {name for name in ctx.params
             if ctx.get_parameter_source(name) != click.core.ParameterSource.DEFAULT}

    def flag(name: str, value):  # a flag left at its default does not override the config file
        return value if name in given else None

    config = PrepareConfig.load(config_path, {
        "format": flag("fmt", fmt), "relation_map": relation_map, "schema": flag("schema", schema),
        "id_type": flag("id_type", id_type), "symmetric": flag("symmetric", symmetric),
        "strict": flag("strict", strict), "holdout": holdout, "drop_overlap": flag("drop_overlap", drop_overlap),
        "split": {"seed": flag("seed", seed), "num_negatives": flag("num_negatives", num_negatives),
                  "min_degree": flag("min_degree", min_degree), "cold_fraction": cold_fraction}})
    synthetic_config = None
    if synthetic is not None:
        synthetic_config = SyntheticConfig(num_items=synthetic, seed=seed,
                                           **({} if noise_rate is None else {"noise_rate": noise_rate}))
    dataset = run_prepare(inputs, out=out, config=config, items=items, pairs=pairs,
                          synthetic=synthetic_config, overwrite=overwrite, valid=valid, test=test)
    if as_json:
        from mmsc_dgl.io import strict_json
        click.echo(strict_json(dataset.summary()))
    else:
        click.echo("\n".join(dataset.format_summary()))
        click.echo(f"dataset written to {out}")


@main.command()
@click.argument("dataset_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--metapaths", default="all", show_default=True,
              help="Comma-separated meta-paths over s/c (e.g. s,c,s-c,c-s-c), or 'all' (every path up to 3 hops); "
                   "the dataset's own edge-type names work too, side edge types included (rated_by-rated: "
                   "item -> user -> item).")
@click.option("--strategy", type=click.Choice(["walk", "topk", "exact"]), default="walk", show_default=True,
              help="walk: top-k end points of random walks; topk: top-k by path count; exact: every pair.")
@click.option("--max-neighbors", type=click.IntRange(min=1), default=32, show_default=True,
              help="Neighbours kept per item and meta-path (walk, topk).")
@click.option("--num-walks", type=click.IntRange(min=1), help="Walks per item (walk; default 2 x max-neighbors).")
@click.option("--memory-budget", type=click.FloatRange(min=0, min_open=True), default=4.0, show_default=True,
              help="GiB an exact product may take; larger estimates are refused.")
@click.option("--graph", "which_graph", type=click.Choice(["train", "full"]), default="train", show_default=True,
              help="Build from the training edges only, or from every edge.")
@click.option("--out", type=OUT_FILE,
              help="Output file (default DATASET_DIR/metapaths.pt).")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of the random walks.")
@click.option("--device", default="cpu", show_default=True, callback=_device,
              help="Where random walks run (cpu, cuda, ...).")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out file.")
@_verbosity
def metapaths(dataset_dir: Path, metapaths: str, strategy: str, max_neighbors: int, num_walks: Optional[int],
              memory_budget: float, which_graph: str, out: Optional[Path], seed: int, device: str,
              overwrite: bool) -> None:
    """Precompute meta-path neighbour tables for a prepared dataset."""
    from mmsc_dgl.metapath.build import dataset_metapath_tables
    from mmsc_dgl.ownership import check_output_file

    from mmsc_dgl.data.dataset import dataset_files
    check_output_file(out or dataset_dir / "metapaths.pt", overwrite=overwrite, inputs=dataset_files(dataset_dir))

    tables = dataset_metapath_tables(dataset_dir, metapaths, graph=which_graph, out=out, strategy=strategy,
                                     max_neighbors=max_neighbors, num_walks=num_walks,
                                     memory_budget=int(memory_budget * 2**30), seed=seed, device=device)
    click.echo("\n".join(tables.format_summary()))
    click.echo(f"tables written to {out or dataset_dir / 'metapaths.pt'}")


@main.command()
@click.argument("dataset_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--parts", type=click.IntRange(min=1), required=True, help="Number of partitions (one per machine).")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Partition directory to write (must not exist, or be one mmsc_dgl wrote, with --overwrite).")
@click.option("--method", type=click.Choice(["metis", "random"]), default="metis", show_default=True,
              help="metis: fewer edges cut between partitions; random: a seeded random assignment.")
@click.option("--features", default="auto", show_default=True,
              help="Content features the graph servers hold: auto, hashed, categories, none, or a feature file.")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of --method random.")
@click.option("--overwrite", is_flag=True, help="Replace a partition directory mmsc_dgl wrote (nothing else).")
@_verbosity
def partition(dataset_dir: Path, parts: int, out: Path, method: str, features: str, seed: int,
              overwrite: bool) -> None:
    """Partition a dataset's training graph for DistDGL: sizes per partition and the edge cut."""
    from mmsc_dgl.distributed.partition import partition_dataset

    info = partition_dataset(dataset_dir, parts, out, method=method, features=features, seed=seed,
                             overwrite=overwrite)
    click.echo("\n".join(info.format()))
    click.echo(f"partitions written to {out} (DistDGL config: {info.config})")


@main.command(context_settings={"ignore_unknown_options": True})
@click.argument("part_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.option("--trainers", type=click.IntRange(min=1), default=2, show_default=True, help="Trainer processes.")
@click.option("--servers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Graph servers per partition.")
@click.option("--timeout", type=click.FloatRange(min=1), default=600, show_default=True,
              help="Seconds before the whole job is ended (exit code 124).")
@click.option("--logs", type=click.Path(file_okay=False, path_type=Path),
              help="Where each process's output goes (default: a new temporary directory).")
@click.option("--ip-config", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="On a cluster: DistDGL's ip_config, one 'IP PORT' line per machine (= per partition); run "
                   "this command on every machine with its --machine.  Default: every partition here.")
@click.option("--machine", type=click.IntRange(min=0), default=0, show_default=True,
              help="With --ip-config: this host's line of it (0-based).")
@click.option("--master-port", type=click.IntRange(min=1, max=65535), default=29500, show_default=True,
              help="With --ip-config: the torch.distributed rendezvous port on the first machine.")
@click.option("--threads", type=click.IntRange(min=1),
              help="OpenMP / torch threads per trainer.  Default: $OMP_NUM_THREADS where set, otherwise this "
                   "machine's cores shared by its trainers.")
@click.option("--server-threads", type=click.IntRange(min=1), default=1, show_default=True,
              help="OpenMP threads per graph server.")
@_verbosity
def launch(part_dir: Path, command: Tuple[str, ...], trainers: int, servers: int, timeout: float,
           logs: Optional[Path], ip_config: Optional[Path], machine: int, master_port: int,
           threads: Optional[int], server_threads: int) -> None:
    """Run DistDGL graph servers for PART_DIR and COMMAND as trainers on this machine (every
    partition here, or with --ip-config this machine's share of a cluster).

    COMMAND follows --: the trainer, `-- mmsc-dgl train PART_DIR --distributed --out RUN`, or
    the check job, `-- python -m mmsc_dgl.distributed.worker PART_DIR --out checks` (features and
    meta-path walks from every trainer).  A failing trainer or the
    timeout ends every process; the exit code is the failing trainer's (124 for the timeout)."""
    from mmsc_dgl.distributed.launch import Terminated, launch as run_launch

    try:
        result = run_launch(part_dir, trainers, list(command), servers=servers, timeout=timeout, log_dir=logs,
                            ip_config=ip_config, machine=machine, master_port=master_port, threads=threads,
                            server_threads=server_threads)
    except Terminated as err:
        click.echo(f"error: {err}.", err=True)
        sys.exit(128 + 15)
    if result.returncode:
        click.echo(f"error: {result.message}", err=True)
        sys.exit(result.returncode)
    click.echo(f"{result.message} in {result.seconds:.1f} s (logs: {result.logs})")


def _train_config(config_path: Optional[Path], flags: dict):
    """TrainConfig: the file (if any) under the flags that were given (``None``: not given)."""
    from mmsc_dgl.config import TrainConfig
    return TrainConfig.load(config_path, flags)


@main.command()
@click.argument("dataset_dir", required=False, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Run directory.")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="YAML/TOML file with TrainConfig fields; flags override it.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint (same dataset "
                                             "and config; epochs, patience and device may change).")
@click.option("--overwrite", is_flag=True, help="Replace the mmsc_dgl run already in --out (nothing else).")
@click.option("--architecture", type=click.Choice(list(ARCHITECTURE_NAMES)),
              help="mmsc (default) or a baseline, trained and evaluated by the same harness.")
@click.option("--epochs", type=click.IntRange(min=1))
@click.option("--batch-size", type=click.IntRange(min=2))
@click.option("--lr", type=click.FloatRange(min=0, min_open=True))
@click.option("--features", help="auto (default: the dataset's features.parquet if it has one, else hashed), "
                                 "hashed, none (learnable id embeddings), or a feature file.")
@click.option("--metapaths", help="Comma-separated meta-paths, or hops:N (default: all up to 3 hops).")
@click.option("--train-noise", type=click.FloatRange(min=0),
              help="Random false edges added to the training graph, as a share of it (noise experiments).")
@click.option("--max-neighbors", type=click.IntRange(min=1))
@click.option("--ssl-weight", type=click.FloatRange(min=0), help="lambda of InfoNCE (default 0: off; the paper uses 0.1).")
@click.option("--train-edges", type=click.Path(exists=True, dir_okay=False),
              help="Parquet edges (relation, src, dst) replacing the supervised training edges (E_LLM).")
@click.option("--synthetic-items", type=click.IntRange(min=50, max=SYNTHETIC_MAX), default=10_000, show_default=True,
              help="Size of the built-in synthetic catalog used when no DATASET_DIR is given.")
@click.option("--seed", type=SEED, help="Seed of initialisation, batches, walks and noise (default 0).")
@click.option("--device", callback=_device, help="auto (default), cpu, cuda, cuda:1 ...")
@click.option("--distributed", is_flag=True, help="DATASET_DIR is a partition directory (mmsc-dgl partition): train "
                                                  "data-parallel as one trainer of a DistDGL job (mmsc-dgl launch "
                                                  "starts them).")
@click.option("--ip-config", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="DistDGL's ip_config file, with --distributed (default: $DGL_IP_CONFIG, set by mmsc-dgl launch).")
@click.option("--shard-embeddings", is_flag=True,
              help="With --distributed: the item-sized tables (id embeddings, the graph branch's, the meta-path "
                   "tables) live on the graph servers, each trainer reading the rows its batches touch and "
                   "updating the learnt ones (DistEmbedding, sparse Adam; docs/distributed.md).")
@_verbosity
def train(dataset_dir: Optional[Path], out: Path, config_path: Optional[Path], resume: bool, overwrite: bool,
          architecture, epochs, batch_size, lr, features, metapaths, train_noise, max_neighbors, ssl_weight, train_edges,
          synthetic_items, seed, device, distributed, ip_config, shard_embeddings) -> None:
    """Train MMSC (or a baseline) on DATASET_DIR (default: the built-in synthetic catalog) and
    evaluate it.  With --distributed, DATASET_DIR is a partition directory and this process is
    one trainer of a DistDGL job (docs/distributed.md)."""
    from mmsc_dgl.terminal import format_metrics
    from mmsc_dgl.runs.training import train as run_train

    config = _train_config(config_path, {"architecture": architecture, "train_noise": train_noise, "epochs": epochs, "batch_size": batch_size, "lr": lr, "features": features,
                                         "metapaths": metapaths, "max_neighbors": max_neighbors,
                                         "train_edges": train_edges, "seed": seed, "device": device,
                                         "model": {"ssl_weight": ssl_weight}})
    if ip_config is not None and not distributed:
        raise DataError("--ip-config is for --distributed training.", fix="add --distributed, or drop --ip-config.")
    if shard_embeddings and not distributed:
        raise DataError("--shard-embeddings shards the tables over a DistDGL job's graph servers.",
                        fix="add --distributed (a partition directory, started by mmsc-dgl launch), or drop "
                            "--shard-embeddings.")
    if distributed:
        if dataset_dir is None:
            raise DataError("--distributed needs the partition directory.",
                            fix="mmsc-dgl train PART_DIR --distributed --out RUN (run by mmsc-dgl launch).")
        from mmsc_dgl.distributed.training import train_distributed
        result = train_distributed(dataset_dir, out, config, ip_config=ip_config, resume=resume, overwrite=overwrite,
                                   shard_embeddings=shard_embeddings)
        import torch.distributed as dist
        if dist.get_rank() != 0:
            click.echo(f"rank {dist.get_rank()}: done; rank 0 wrote {out}")
            return
    else:
        result = run_train(dataset_dir, out, config, resume=resume, synthetic_items=synthetic_items,
                           overwrite=overwrite)
    from mmsc_dgl.terminal import next_steps
    click.echo(f"epochs run: {len(result.history)}; best validation epoch per relation: "
               + ", ".join(f"{r} {e}" for r, e in result.best_epoch.items()))
    click.echo("\n".join(format_metrics(result.metrics)))
    click.echo("\n".join(line.replace("mmsc-dgl ", f"{_program()} ", 1) for line in next_steps(result)))


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--pairs", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Labelled pairs (relation src dst label), relation ids mapped with the dataset's map.")
@click.option("--dataset", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Where the run's dataset is now, if it moved (checked by fingerprint; run.json is updated).")
@click.option("--features", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Where the run's feature file is now, if it moved (checked by fingerprint; run.json is "
                   "updated).")
@click.option("--full-catalog", is_flag=True,
              help="Also rank each test target against every item of the catalog (the query's known neighbours "
                   "excluded), not only against the sampled negatives.")
@click.option("--device", callback=_device, help="auto, cpu, cuda ...")
@click.option("--json", "as_json", is_flag=True)
@_verbosity
def evaluate(run_dir: Path, pairs: Optional[Path], dataset: Optional[Path], features: Optional[Path],
             full_catalog: bool, device: Optional[str], as_json: bool) -> None:
    """Evaluate a trained run: HR/MRR/NDCG@K on test and cold start, and labelled pairs."""
    from mmsc_dgl.io import strict_json
    from mmsc_dgl.runs.load import evaluate_run
    from mmsc_dgl.terminal import format_metrics

    metrics = evaluate_run(run_dir, pairs=pairs, device=device, dataset=dataset, features=features,
                           full_catalog=full_catalog)
    click.echo(strict_json(metrics, sort_keys=False) if as_json
               else "\n".join(format_metrics(metrics)))


@main.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--item", help="Item id to recommend for.")
@click.option("--all", "all_items", is_flag=True, help="Top-k for every item, written to --out.")
@click.option("--new-items", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Parquet file of items the run was not trained on (item_id and the catalog's content columns): "
                   "top-k for each, their features extracted as the run's were.")
@click.option("--new-edges", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="With --new-items: their known edges, a parquet file with src, dst (ids) and relation.")
@click.option("--relation", type=click.Choice(["substitute", "complement"]), required=True)
@click.option("-k", "k", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--out", type=OUT_FILE, help="Parquet file for --all.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out file.")
@click.option("--explain", is_flag=True, help="Per pick: the meta-paths joining the pair (path count, one "
                                               "intermediate item) and each part's share of the score.")
@click.option("--ann", is_flag=True, help="Candidates from a FAISS index over the embeddings plus each item's "
                                           "meta-path neighbours, re-ranked exactly (large catalogs; needs "
                                           "mmsc_dgl[faiss]). Default: exact over the whole catalog.")
@click.option("--dataset", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Where the run's dataset is now, if it moved (checked by fingerprint).")
@click.option("--features", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Where the run's feature file is now, if it moved (checked by fingerprint).")
@click.option("--device", callback=_device, help="auto, cpu, cuda ...")
@_verbosity
def recommend(run_dir: Path, item: Optional[str], all_items: bool, new_items: Optional[Path],
              new_edges: Optional[Path], relation: str, k: int, out: Optional[Path],
              overwrite: bool, explain: bool, ann: bool, dataset: Optional[Path], features: Optional[Path],
              device: Optional[str]) -> None:
    """Top-k substitutes or complements for an item, every item, or new items."""
    from mmsc_dgl.runs.query import recommend as run_recommend, recommend_new

    if sum([bool(item), all_items, new_items is not None]) != 1:
        raise click.UsageError("pass exactly one of --item ID, --all or --new-items FILE")
    if new_edges is not None and new_items is None:
        raise click.UsageError("--new-edges goes with --new-items")
    if item and out is not None:
        raise click.UsageError("--out is for --all and --new-items; --item prints to the terminal")
    if new_items is not None:
        if ann:
            raise click.UsageError("--ann is for --item and --all; new items are ranked exactly")
        rows = recommend_new(run_dir, new_items, relation, k=k, edges=new_edges, device=device, out=out,
                             overwrite=overwrite, dataset=dataset, explain=explain, features=features)
        if out is not None:
            click.echo(f"wrote the top {rows[0]['k']:,} {relation}s of each of {rows[0]['items']:,} new items "
                       f"({rows[0]['rows']:,} rows) to {out}")
            return
        for row in rows:
            if row["rank"] == 1:
                click.echo(f"{row['query_id']}:")
            title = " ".join(str(row["title"]).split()) if row["title"] else ""
            click.echo(f"{row['rank']:>3}  {row['score']:.4f}  {row['item_id']}  {title}".rstrip())
            if explain:
                click.echo("     " + _explanation(row))
        return
    rows = run_recommend(run_dir, relation, k=k, item=item, device=device, out=out, overwrite=overwrite,
                         dataset=dataset, explain=explain, features=features, ann=ann)
    if item:
        for row in rows:
            title = " ".join(str(row["title"]).split()) if row["title"] else ""  # id-only items: no "None"
            click.echo(f"{row['rank']:>3}  {row['score']:.4f}  {row['item_id']}  {title}".rstrip())
            if explain:
                click.echo("     " + _explanation(row))
    else:
        summary = rows[0]
        capped = f" (-k {k} capped at the {summary['k']:,} other items)" if summary["k"] < k else ""
        click.echo(f"wrote the top {summary['k']:,} {relation}s of each of {summary['items']:,} items "
                   f"({summary['rows']:,} rows) to {out}{capped}")


def _explanation(row: dict) -> str:
    """One line: the embedding term, then each meta-path with paths (its share; via an item)
    and each other relation the pair is an edge of (its share)."""
    parts = [f"embedding {row['embedding']:+.3f}"]
    for key in row:
        if key.startswith("paths[") and row[key]:
            name = key[6:-1]
            via = row[f"via_title[{name}]"] or row[f"via[{name}]"]
            parts.append(f"{name}: {row[key]} path{'s' if row[key] != 1 else ''} "
                         f"({row[f'structure[{name}]']:+.3f}; via {via})")
        elif key.startswith("linked[") and row[key]:
            name = key[7:-1]
            parts.append(f"also a {name} pair ({row[f'structure[{name}]']:+.3f})")
    if "structure_base" in row:
        parts.append(f"structure base {row['structure_base']:+.3f}" if len(parts) > 1 else
                     f"no two-hop path joins them (structure base {row['structure_base']:+.3f})")
    return "; ".join(parts)


@main.command()
@click.argument("dataset_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--backend", type=click.Choice(["text", "clip", "blip2"]), default="text", show_default=True)
@click.option("--model", help="text: a sentence-transformers directory (default: the bundled MiniLM); "
                              "clip: an open_clip config name (default ViT-B-32).")
@click.option("--checkpoint", type=click.Path(dir_okay=False), help="Local weights file (clip, blip2).")
@click.option("--random-init", is_flag=True, help="clip: allow random weights (meaningless features, for tests).")
@click.option("--image-root", type=click.Path(file_okay=False), help="Folder that local image paths are relative to.")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--chunk-size", type=click.IntRange(min=1), default=4096, show_default=True,
              help="Items per resumable chunk.")
@click.option("--out", type=OUT_FILE, help="Default DATASET_DIR/features.parquet.")
@click.option("--overwrite", is_flag=True, help="Replace a cache made with other settings or content.")
@click.option("--device", default="cpu", show_default=True, callback=_device)
@_verbosity
def features(dataset_dir: Path, backend: str, model: Optional[str], checkpoint: Optional[str], random_init: bool,
             image_root: Optional[str], batch_size: int, chunk_size: int, out: Optional[Path], overwrite: bool,
             device: str) -> None:
    """Extract frozen content features for every item into a resumable parquet cache."""
    from mmsc_dgl.features.cache import extract_features

    run = extract_features(dataset_dir, backend, out=out, batch_size=batch_size, chunk_size=chunk_size,
                           device=device, overwrite=overwrite, model=model, checkpoint=checkpoint,
                           random_init=random_init, image_root=image_root)
    meta = run.meta
    done = (f"{run.computed_items:,} computed at {run.items_per_second:.1f} items/s" if run.computed_items
            else "already complete, nothing computed")
    click.echo(f"{run.items:,} items, {meta['tokens']} x {meta['dim']} tokens ({meta['backend']}: {meta['model']}); "
               + done)
    for key, value in run.report.items():
        click.echo(f"  {key}: {value}")
    click.echo(f"features written to {run.path}")


@main.command()
@click.argument("dataset_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--judge", type=click.Choice(["similarity", "seq2seq"]), default="similarity", show_default=True)
@click.option("--model", type=click.Path(file_okay=False), help="seq2seq: local model directory (Flan-T5).")
@click.option("--top-n", type=click.IntRange(min=1), default=500_000, show_default=True,
              help="Keep the N best-scored training edges per relation (capped at what exists).")
@click.option("--threshold", type=click.FloatRange(0, 1), help="Keep edges scored at least T instead of the top N.")
@click.option("--features", default="auto", show_default=True, help="similarity: content features (auto, hashed, file).")
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--out", type=OUT_FILE, help="Default DATASET_DIR/e_llm.parquet.")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out file.")
@click.option("--seed", type=SEED, default=0, show_default=True, help="similarity: seed of the calibration pairs.")
@click.option("--device", default="cpu", show_default=True, callback=_device)
@_verbosity
def augment(dataset_dir: Path, judge: str, model: Optional[str], top_n: int, threshold: Optional[float],
            features: str, batch_size: int, out: Optional[Path], overwrite: bool, seed: int, device: str) -> None:
    """Judge the training edges and keep a clean subset (E_LLM) for `train --train-edges`."""
    from mmsc_dgl.augment.select import augment as run_augment

    result = run_augment(dataset_dir, judge, model=model, top_n=top_n, threshold=threshold, out=out,
                         device=device, batch_size=batch_size, features=features, seed=seed, overwrite=overwrite)
    for r in result.kept:
        mean = result.mean_kept_score[r]
        click.echo(f"{r:<11} kept {result.kept[r]:>10,} of {result.scored[r]:>10,} training edges "
                   + (f"(mean score {mean:.3f})" if result.kept[r] and mean == mean else "(none kept)"))
    click.echo(f"judged {result.computed_pairs:,} new pairs at {result.pairs_per_second:.0f} pairs/s "
               f"(scores cached in {result.scores_dir})")
    empty = [r for r, n in result.kept.items() if n == 0]
    if empty:
        click.echo(f"warning: no {' or '.join(empty)} edge was kept, and training needs both relations: "
                   f"lower --threshold, or keep the best --top-n edges instead", err=True)
        click.echo(f"E_LLM written to {result.path} (not trainable as it is)")
    else:
        click.echo(f"E_LLM written to {result.path}; train with: {_program()} train {_quote(dataset_dir)} "
                   f"--train-edges {_quote(result.path)} --out runs/{Path(dataset_dir).name or 'run'}-e-llm")


@main.command()
@click.argument("dataset_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Study directory: new, or one to continue (the study is stored there and resumes).")
@click.option("--trials", type=click.IntRange(min=1), default=20, show_default=True,
              help="Trials the study should hold when done (finished or pruned).")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="TrainConfig file the search starts from (epochs, features, ...).")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of the sampler and of every trial.")
@click.option("--device", callback=_device, help="auto, cpu, cuda ...")
@_verbosity
def tune(dataset_dir: Path, out: Path, trials: int, config_path: Optional[Path], seed: int,
         device: Optional[str]) -> None:
    """Search MMSC's settings with Optuna by validation NDCG@10; writes OUT/best.yaml for train --config."""
    from mmsc_dgl.config import TrainConfig
    from mmsc_dgl.experiments.tune import tune as run_tune

    base = TrainConfig.load(config_path, {"device": device, "seed": seed})
    best = run_tune(dataset_dir, out, trials, base=base, seed=seed)
    click.echo(f"best of {best['trials']} trials: validation NDCG@10 {best['value']:.4f} with "
               + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in best["params"].items()))
    click.echo(f"wrote {out / 'best.yaml'} ({_program()} train DATASET --config {out / 'best.yaml'} --out RUN)")


@main.command()
@click.argument("config_path", metavar="CONFIG", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Experiment directory (default: runs/experiments/NAME).")
@click.option("--seeds", help="Comma-separated seeds, replacing the config's (e.g. 0,1,2).")
@click.option("--seed", type=SEED, help="First seed: the config's number of seeds, counted from here.")
@click.option("--report-only", is_flag=True, help="Rewrite the tables and plots from the cells already finished.")
@click.option("--publish", type=click.Path(file_okay=False, path_type=Path),
              help="Also copy the report (NAME.md, NAME.json, plots) here, e.g. docs/results.")
@click.option("--device", callback=_device, help="auto, cpu, cuda ... (overrides the config's train.device).")
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True,
              help="Cells computed at once, each in its own process with an equal share of the CPU cores.")
@_verbosity
def experiment(config_path: Path, out: Optional[Path], seeds: Optional[str], seed: Optional[int], report_only: bool,
               publish: Optional[Path], device: Optional[str], jobs: int) -> None:
    """Run a grid of models x datasets x seeds from CONFIG; finished cells are reused.  Writes
    results.md, results.json and PNG plots."""
    from mmsc_dgl.experiments import load_experiment, run_experiment
    from mmsc_dgl.experiments.grid import report_only as rewrite_report

    config = load_experiment(config_path)
    if device is not None:
        config = config.model_copy(update={"train": {**config.train, "device": device}})
    seed_list = None
    if seeds:
        try:
            seed_list = [SEED(x.strip()) for x in seeds.split(",") if x.strip()]
        except click.BadParameter as err:
            raise click.BadParameter(f"{seeds!r}: {err.message}; give comma-separated seeds", param_hint="--seeds")
    elif seed is not None:
        seed_list = list(range(seed, seed + len(config.seeds)))
    out = out or Path("runs") / "experiments" / config.name
    result = (rewrite_report(config, out, publish) if report_only
              else run_experiment(config, out, seeds=seed_list, publish=publish, jobs=jobs))
    click.echo(f"{len(result.rows)} cells ({result.computed} computed, {result.cached} cached)"
               + (f"; skipped datasets: {', '.join(result.skipped)}" if result.skipped else ""))
    click.echo(f"report: {out / 'results.md'}")


BENCHMARKS = {"metapath": "metapath", "encoder": "encoder", "train": "train", "recommend": "recommend",
              "gpu-train": "gpu_train", "dist": "dist", "lookalikes": "lookalikes"}


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True,
                                "help_option_names": []})
@click.argument("name", metavar=f"{{{'|'.join(BENCHMARKS)}}}", required=False)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def bench(ctx: click.Context, name: Optional[str], args: Tuple[str, ...]) -> None:
    """Run a benchmark (the same code as benchmarks/bench_NAME.py): NAME [--sizes ...] [--json OUT
    [--overwrite]].  `mmsc-dgl bench NAME --help` lists its options."""
    import importlib

    if name in (None, "-h", "--help"):
        click.echo(ctx.get_help())
        return
    if name not in BENCHMARKS:
        raise click.BadParameter(f"{name!r} is not one of {', '.join(BENCHMARKS)}.", param_hint="NAME")
    if not ctx.find_root().meta.get("quiet"):
        logging.getLogger().setLevel(logging.INFO)  # benchmarks report progress as they go
    importlib.import_module(f"mmsc_dgl.bench.{BENCHMARKS[name]}").main(list(args))


@main.command("export-tensors")
@click.argument("dataset_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", required=True, type=OUT_FILE, help="The .pt file to write.")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="YAML/TOML TrainConfig (meta-paths, neighbours, features, model); flags override it.")
@click.option("--metapaths", help="Comma-separated meta-paths, or hops:N (default: all up to 3 hops).")
@click.option("--max-neighbors", type=click.IntRange(min=1))
@click.option("--features", help="hashed (default), none, or a feature file.")
@click.option("--val-queries", type=click.IntRange(min=1),
              help="Validation queries per relation (default: the config's val_queries, 2000).")
@click.option("--seed", type=SEED, help="Seed of the walks and the validation subset (default 0).")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out file.")
@_verbosity
def export_tensors(dataset_dir: Path, out: Path, config_path: Optional[Path], metapaths, max_neighbors, features,
                   val_queries: int, seed, overwrite: bool) -> None:
    """Write meta-path tables, features, training and validation edges as plain tensors, for
    training on a GPU host without DGL (benchmarks/gpu_bench.sh)."""
    from mmsc_dgl.bench.export import export_tensors as run_export

    config = _train_config(config_path, {"metapaths": metapaths, "max_neighbors": max_neighbors,
                                         "features": features, "seed": seed, "val_queries": val_queries})
    summary = run_export(dataset_dir, out, config, overwrite=overwrite)
    click.echo(f"{summary['items']:,} items, {summary['metapaths']} meta-paths, {summary['pairs']:,} neighbour pairs "
               f"-> {summary['out']} ({summary['mib']} MiB)")


if __name__ == "__main__":  # pragma: no cover
    main()
