"""``dogo study``: every arm x seed of a study file as its own run, each evaluated, resumably.

A study file names a base config, the arms (a name plus overrides of the base, or a config file
of their own), the seeds and the evaluation protocols::

    name: fashion-mnist
    base: ../configs/fmnist-simclr.yaml      # a path (relative to the study file) or a mapping
    seeds: [0, 1, 2, 3, 4]                   # default seeds of every arm
    compare_to: student-alone                # the arm every other one is compared with
    arms:
      - name: student-alone
        overrides: {train.epochs: 3}
      - name: lambda-10
        seeds: [0, 1, 2]
        overrides: ["train.models.0.distill_weight=10"]
    evaluate:
      peers: first                           # first (the student) | all
      protocols: {linear: {epochs: 50}, knn: {}}

The study directory holds ``study.yaml`` (the file as given), ``arms/<arm>.yaml`` (each arm's
resolved config without its seed: what a later edit is compared with), and per run
``<arm>/seed-<S>/`` (an ordinary run directory), ``<arm>/seed-<S>.json`` (its record: trained or
not, wall time of every attempt, dogo's commit, the evaluations done) and ``<arm>/seed-<S>.log``
(what its processes printed).

Every run trains and is evaluated in processes of its own (``dogo pretrain`` and ``dogo
evaluate``), so a study that is killed loses only the step in flight: on the next start a
finished run or evaluation is never redone, a half-trained run resumes from its checkpoint, an
arm or seed added to the file runs alone, and an arm whose settings changed is refused, naming
it, unless ``--rerun ARM`` asks for it to be trained again. Runs go in the file's order, except
that consecutive arms with the same seeds run seed by seed (``a/0, b/0, a/1, b/1``), so the
first arms' comparison grows paired from the start.
"""

from dogo.study.plan import ArmConfig, EvaluateConfig, StudyConfig, StudyRun, is_study_dir, load_study, plan_runs
from dogo.study.publish import PUBLISHED, publish
from dogo.study.records import read_record, source_commit
from dogo.study.runner import Runner, check_arms, run_study

__all__ = [
    "PUBLISHED",
    "ArmConfig",
    "EvaluateConfig",
    "Runner",
    "StudyConfig",
    "StudyRun",
    "check_arms",
    "is_study_dir",
    "load_study",
    "plan_runs",
    "publish",
    "read_record",
    "run_study",
    "source_commit",
]
