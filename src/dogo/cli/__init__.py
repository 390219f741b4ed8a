"""The ``dogo`` command line: pretrain, evaluate, report, datasets, prepare, quickstart.

Every user error (bad config key, missing dataset, damaged checkpoint...) ends as one line on
stderr and exit status 2, without a traceback; see :mod:`dogo.core.errors`. :func:`main` is the one
outer handler: a :class:`~dogo.core.errors.DogoError` or any ``OSError`` (the path and the reason)
is that line; any other exception is a bug, reported as one line with exit status 1 and its
traceback shown only with ``--debug``.

The commands live by group, each module adding its sub-parsers (``add_COMMAND(sub)``) next to the
functions they run (``cmd_COMMAND(args)``): :mod:`~dogo.cli.train` (pretrain, quickstart, configs),
:mod:`~dogo.cli.runs` (evaluate, report, export, embed, clean), :mod:`~dogo.cli.study`,
:mod:`~dogo.cli.data` (datasets, prepare) and :mod:`dogo.bench.cli`.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
import warnings

from dogo.guards import signals

signals.console_script_starting()  # the `dogo` script: Ctrl-C while the CLI itself is imported is one line too

from dogo import __version__  # noqa: E402
from dogo.cli import data, runs, study, train  # noqa: E402
from dogo.core.errors import DogoError  # noqa: E402


def _parser() -> argparse.ArgumentParser:
    from dogo.bench import add_bench_parser
    from dogo.guards.arguments import Parser
    from dogo.objectives import OBJECTIVES

    parser = Parser(
        prog="dogo",
        description="Self-supervised pretraining of small vision models with online mutual "
        "distillation (Distill-on-the-Go), and the evaluation suite that measures what it bought. "
        f"Objectives: {', '.join(OBJECTIVES.names())}.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="run `dogo COMMAND --help` for the options and examples of each command",
    )
    parser.add_argument("--version", action="version", version=f"dogo {__version__}")
    parser.add_argument(
        "--debug",
        action="store_true",
        help="show the traceback of an unexpected error (accepted anywhere on the line; also DOGO_DEBUG=1)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    train.add_pretrain(sub)
    runs.add_evaluate(sub)
    runs.add_report(sub)
    add_bench_parser(sub)
    runs.add_export(sub)
    runs.add_embed(sub)
    study.add_study(sub)
    runs.add_clean(sub)
    train.add_configs(sub)
    data.add_datasets(sub)
    data.add_prepare(sub)
    train.add_quickstart(sub)

    for name, command in sub.choices.items():  # every command: how much to say on stderr
        loudness = command.add_mutually_exclusive_group()
        loudness.add_argument(
            "-q", "--quiet", action="store_true", help="warnings and errors only (no progress bar or progress lines)"
        )
        if name in VERBOSE_COMMANDS:  # the commands that train: only they have more to say
            loudness.add_argument(
                "-v",
                "--verbose",
                action="store_true",
                help="more detail: a line per metrics row (metrics.jsonl) as well",
            )
    return parser


#: Commands whose ``--verbose`` adds something (a line per metrics row of the training they run).
VERBOSE_COMMANDS = ("pretrain", "quickstart")


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("DOGO_DEBUG", "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]  # accepted anywhere on the line, not only before COMMAND
    command = next((a for a in argv if not a.startswith("-")), "")
    previous = signals.starting(argv)  # until the command runs, Ctrl-C exits at once (one line, 130)
    try:
        return _main(argv)
    except KeyboardInterrupt:  # before or after training's own handler (which saves and exits 130)
        signals.interrupted()  # a second Ctrl-C while this is said exits at once
        _error(command, "interrupted", debug)
        signals.end_interrupted(previous, 130)  # dogo's own process ends here, not in the interpreter's shutdown
        return 130
    except DogoError as exc:
        _error(command, f"error: {exc}", debug)
        return 2
    except OSError as exc:  # the file system said no: the path and its reason are what the user needs
        _error(command, f"error: {describe_os_error(exc)}", debug)
        return 2
    except MemoryError:
        _error(command, "error: out of memory; use a smaller batch, image size or dataset limit", debug)
        return 2
    except Exception as exc:
        detail = " ".join(str(exc).split())[:300]
        _error(
            command,
            f"internal error (a bug in dogo, please report it): {type(exc).__name__}: {detail}; "
            "rerun with --debug for the traceback",
            debug,
        )
        return 1
    finally:
        signals.restore(previous)


def describe_os_error(exc: OSError) -> str:
    """``PATH: reason`` of an OSError (both paths of a rename), in one line."""
    reason = exc.strerror or " ".join(str(exc).split()) or type(exc).__name__
    paths = [str(p) for p in (exc.filename, exc.filename2) if p is not None]
    where = " -> ".join(paths) if paths else "a file"
    return f"{where}: {reason}"


def _error(command: str, message: str, debug: bool) -> None:
    from dogo.core import dist

    if dist.launched_rank() == 0:  # under torchrun every rank raises it (maybe before the group starts)
        print(f"dogo {command}: {message}" if command else f"dogo: {message}", file=sys.stderr)
    if debug and sys.exc_info()[0] is not None and not isinstance(sys.exc_info()[1], KeyboardInterrupt):
        traceback.print_exc()


def _main(argv: list[str]) -> int:
    from dogo.guards.arguments import check_door
    from dogo.guards.ownership import set_command

    set_command(argv)  # what made a folder, in its marker
    parser = _parser()
    # key=value pairs may come after options (`--protocol knn k=20`): argparse leaves those over.
    args, extra = parser.parse_known_args(argv)
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))  # the one
    command = commands.choices.get(args.command, parser)  # its refusals are named by the command
    listed = "settings" if hasattr(args, "settings") else "overrides"
    if extra and (not hasattr(args, listed) or any(a.startswith("-") or "=" not in a for a in extra)):
        command.error(f"unrecognized arguments: {' '.join(extra)}")
    if extra:
        getattr(args, listed).extend(extra)
    check_door(command, args)  # values checked together (evaluate's settings, by --protocol), before any work
    warnings.simplefilter("default")
    from dogo.core import console

    verbose = getattr(args, "verbose", False)
    console.set_verbosity(console.QUIET if args.quiet else console.VERBOSE if verbose else console.NORMAL)
    try:
        signals.started()  # start-up is over: Ctrl-C is a KeyboardInterrupt that the command may handle
        status = args.func(args)
        sys.stdout.flush()  # a closed pipe shows here, not as "Exception ignored" at exit
        return status
    except BrokenPipeError:
        # `dogo evaluate ... | head -1`: the reader is gone. Nothing more goes to stdout, no traceback;
        # exit as a process killed by SIGPIPE would (128 + 13).
        _silence_stdout()
        return 141
    finally:
        from dogo.guards import inputs, locks

        locks.release_all()  # the folders this command owned (also released by the OS at exit)
        inputs.clear()
