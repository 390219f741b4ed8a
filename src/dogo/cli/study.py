"""``dogo study``: every arm x seed of a study file trained, evaluated and reported."""

from __future__ import annotations

import argparse
import sys

from dogo.core.errors import DogoError
from dogo.guards.arguments import count

EPILOG_STUDY = """\
examples:
  dogo study studies/fashion-mnist.yaml                       # everything, then runs/study-fashion-mnist/report/
  dogo study studies/fashion-mnist.yaml --only student-alone --only dogo
  dogo study studies/fashion-mnist.yaml --publish docs/results/fashion-mnist
  dogo report runs/study-fashion-mnist --out docs/RESULTS.md   # the report again, from the result files

Each run trains and is evaluated in processes of its own; stopping the study (Ctrl-C, SIGTERM,
a killed shell) loses at most the step in flight. Editing an arm that has runs is refused,
naming it, unless --rerun ARM. With --publish DIR, finished runs published there and missing
here (a fresh clone) are copied back instead of trained again.
"""


def add_study(sub: argparse._SubParsersAction) -> None:
    """Add ``dogo study`` to the CLI's sub-parsers."""
    s = sub.add_parser(
        "study",
        help="run a seeded study: every arm x seed trained, evaluated and reported",
        description="Run every arm x seed of a study file as its own run, evaluate each with the "
        "study's protocols, then write the study's report. Resumable: rerun the same command after "
        "a stop, or after adding arms or seeds, and only what is missing runs.",
        epilog=EPILOG_STUDY,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument("study_file", metavar="STUDY.yaml")
    s.add_argument("--out", help="study directory (default runs/study-<name>)")
    s.add_argument(
        "--jobs", type=count(1, 256), default=1, help="runs at a time, the cores shared among them (default 1)"
    )
    s.add_argument("--only", action="append", default=[], metavar="ARM", help="run only this arm (repeatable)")
    s.add_argument(
        "--rerun",
        action="append",
        default=[],
        metavar="ARM",
        help="train this arm again after its settings changed (its earlier runs are removed)",
    )
    s.add_argument("--publish", metavar="DIR", help="copy configs, records, metrics and results here as runs finish")
    s.add_argument("--no-report", action="store_true", help="skip the report at the end")
    s.set_defaults(func=cmd_study)


def cmd_study(args: argparse.Namespace) -> int:
    from dogo.core import console
    from dogo.study import run_study

    if args.jobs < 1:
        raise DogoError(f"--jobs {args.jobs}: give 1 or more")
    out, failures = run_study(
        args.study_file,
        args.out,
        jobs=args.jobs,
        only=args.only,
        rerun=args.rerun,
        publish_to=args.publish,
        say=console.info,
    )
    if not args.no_report:
        from dogo.study.report import write_study_report

        print(f"wrote {write_study_report(out, out / 'report' / 'report.md')}")
    if failures:
        print(
            f"dogo study: {failures} run(s) failed; their logs are named above. Rerun the same command to retry them",
            file=sys.stderr,
        )
        return 1
    return 0
