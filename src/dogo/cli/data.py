"""``dogo datasets`` and ``dogo prepare``: where the datasets are, and their image stores."""

from __future__ import annotations

import argparse

from dogo.guards.arguments import schema_field, setting


def add_datasets(sub: argparse._SubParsersAction) -> None:
    """Add ``dogo datasets`` to the CLI's sub-parsers."""
    d = sub.add_parser(
        "datasets",
        help="list the datasets dogo reads, where it looks, and what it found",
        description="List known datasets, the folders searched for each and whether they were found.",
        epilog="examples:\n  dogo datasets\n  dogo datasets --root ~/data     # also look in ~/data/<name>\n"
        "  DOGO_DATA=~/data dogo datasets  # the same through the environment",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    d.add_argument("--root", help="also look here")
    d.set_defaults(func=cmd_datasets)


def cmd_datasets(args: argparse.Namespace) -> int:
    from dogo.data import dataset_status

    rows = dataset_status(root=args.root) if args.root else dataset_status()
    for row in rows:
        mark = "found" if row.get("found") else "missing"
        print(f"{row['name']:<20} {mark:<8} {row.get('description', '')}")
        where = row.get("found_at") or ", ".join(str(p) for p in row.get("looks_in", []))
        print(f"{'':<20} {'':<8} {'at' if row.get('found') else 'looks in'}: {where}")
        if not row.get("found") and row.get("how_to_get"):
            print(f"{'':<20} {'':<8} get it: {row['how_to_get']}")
    return 0


def add_prepare(sub: argparse._SubParsersAction) -> None:
    """Add ``dogo prepare`` to the CLI's sub-parsers."""
    from dogo.config import parse_override
    from dogo.config.run import DatasetConfig

    pr = sub.add_parser(
        "prepare",
        help="decode a dataset split once into a memory-mapped image store on disk",
        description="Decode one split into an image store (memory-mapped .npy files) that training "
        "and evaluation read through the page cache, one copy for all processes. Atomic and "
        "resumable: a killed prepare, run again, continues.",
        epilog="examples:\n  dogo prepare fashion-mnist                        # $DOGO_DATA/stores or "
        "~/.cache/dogo/stores\n  dogo prepare imagenet --root ~/ilsvrc --image-size 64 --split train\n"
        "  dogo prepare imagefolder --root photos/ --image-size 32 --out stores/photos --bad-files skip\n"
        "  dogo prepare fashion-mnist --force              # rebuild a stale store\n\n"
        "Training finds a store prepared at the default place by itself (dataset.store: auto);\n"
        "dataset.store: on prepares it on first use.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    pr.add_argument("dataset", help="dataset name (see `dogo datasets`)")
    pr.add_argument("--root", default=None, help="folder holding the dataset's files")
    pr.add_argument("--split", default="train", help="split to prepare (default train)")
    pr.add_argument(
        "--image-size",
        type=schema_field(DatasetConfig, "image_size"),
        default=None,
        help="side in pixels of folder and list datasets: the dataset.image_size of the runs that "
        "will read it (default 32, as dataset.image_size)",
    )
    pr.add_argument("--out", default=None, help="store folder (default: the one training looks in)")
    pr.add_argument("--store-dir", default=None, help="folder of stores (as dataset.store_dir)")
    pr.add_argument(
        "--bad-files",
        choices=("refuse", "skip"),
        default=None,
        help="image files that cannot be decoded: refuse (default, all listed) or skip them",
    )
    pr.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        type=setting(parse_override),
        help="a reader option as in dataset.options (YAML value), e.g. --option limit=1000",
    )
    pr.add_argument("--force", action="store_true", help="rebuild a store that is stale or holds something else")
    pr.set_defaults(func=cmd_prepare)


def cmd_prepare(args: argparse.Namespace) -> int:
    from dogo.config.run import DatasetConfig
    from dogo.core import console
    from dogo.data import get_spec
    from dogo.data.source import prepare

    options = dict(args.option)  # (key, YAML value) pairs, parsed at the door
    if args.image_size is not None:
        options["image_size"] = args.image_size
    elif "image_size" in get_spec(args.dataset).options.model_fields:  # as training decodes it: dataset.image_size
        options["image_size"] = DatasetConfig.model_fields["image_size"].default
    if args.bad_files is not None:
        options["bad_files"] = args.bad_files
    store = prepare(
        args.dataset,
        root=args.root,
        split=args.split,
        options=options,
        out=args.out,
        store_dir=args.store_dir,
        force=args.force,
        log=console.info,
    )
    print(store)
    return 0
