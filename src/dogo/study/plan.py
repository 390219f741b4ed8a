"""A study file: its schema, each arm's resolved config, and the runs it plans (see :mod:`dogo.study`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from dogo.config import apply_override, build_config, parse_override, read_yaml
from dogo.core.errors import ConfigError

__all__ = ["ArmConfig", "EvaluateConfig", "StudyConfig", "StudyRun", "is_study_dir", "load_study", "plan_runs"]


class _Schema(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ArmConfig(_Schema):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", description="folder-safe arm name")
    description: str = Field(default="", description="one line for the report")
    config: str | None = Field(default=None, description="a config file of its own instead of the study's base")
    overrides: dict[str, Any] | list[str] = Field(
        default_factory=dict, description="dotted key: value, or key=value strings"
    )
    seeds: list[int] | None = Field(default=None, description="this arm's seeds (default: the study's)")
    more_budgets: list[int] = Field(
        default_factory=list,
        description="budgets (steps) this arm trains to beyond the study's, evaluated with "
        "evaluate.every_budget: a baseline's curve out to a cohort's compute",
    )

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and (not value or len(set(value)) != len(value) or min(value) < 0):
            raise ValueError("seeds must be a non-empty list of distinct non-negative integers")
        return value


class EvaluateConfig(_Schema):
    peers: str = Field(default="first", pattern=r"^(first|all)$", description="first: peer 0 (the student); all")
    protocols: dict[str, dict[str, Any]] = Field(default_factory=dict, description="protocol: its settings")
    every_budget: list[str] | None = Field(
        default=None,
        description="with budgets: the protocols run at every budget (default: all); the others run at "
        "the largest budget only",
    )

    def at(self, budget: int, budgets: list[int] | None) -> list[str]:
        """The protocols evaluated at ``budget``: all of them without budgets or at the study's largest
        budget (``max(budgets)``), else those of ``every_budget``."""
        if not budgets or budget == max(budgets) or self.every_budget is None:
            return list(self.protocols)
        return [p for p in self.protocols if p in self.every_budget]


class StudyConfig(_Schema):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    description: str = ""
    base: str | dict[str, Any] = Field(description="the base config: a path relative to the study file, or a mapping")
    seeds: list[int] = Field(default=[0], min_length=1)
    compare_to: str | None = Field(
        default=None, description="the arm every other arm is compared with (paired by seed)"
    )
    budgets: list[int] | None = Field(
        default=None,
        description="training budgets in steps: each arm x seed trains once to the largest, keeping its "
        "weights at every budget (train.keep_at), and is evaluated at each; 0 is the initialisation",
    )
    arms: list[ArmConfig] = Field(min_length=1)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    conclusion: str = Field(default="", description="the study's conclusion in words, shown in the report")

    @field_validator("budgets")
    @classmethod
    def _budgets(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and (len(value) < 2 or len(set(value)) != len(value) or min(value) < 0 or max(value) < 1):
            raise ValueError("budgets must list at least two distinct steps >= 0, the largest >= 1")
        return sorted(value) if value is not None else None

    def arm_budgets(self, arm: str) -> list[int]:
        """The budgets ``arm`` trains to and is evaluated at: the study's and its ``more_budgets``."""
        more = next((a.more_budgets for a in self.arms if a.name == arm), [])
        return sorted(set(self.budgets or []) | set(more))

    def evaluations(self, arm: str) -> list[tuple[str, int | None]]:
        """Every (protocol, budget) a finished run of ``arm`` has been evaluated with (budget None: no budgets)."""
        if not self.budgets:
            return [(protocol, None) for protocol in self.evaluate.protocols]
        return [
            (protocol, budget)
            for budget in self.arm_budgets(arm)
            for protocol in self.evaluate.at(budget, self.budgets)
        ]


@dataclass
class StudyRun:
    """One arm x seed: where it lives and the config it trains."""

    arm: str
    seed: int
    config: dict[str, Any]  # the resolved run config (dict, seed and name set)
    run_dir: Path
    record_path: Path
    log_path: Path

    @property
    def label(self) -> str:
        return f"{self.arm} seed {self.seed}"


def load_study(path: str | Path) -> tuple[StudyConfig, dict[str, dict[str, Any]]]:
    """The validated study and each arm's resolved config (a dict, seed left at the base's)."""
    path = Path(path)
    raw = read_yaml(path)
    try:
        study = StudyConfig.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"{path}: {key}: {first['msg']}") from None
    names = [arm.name for arm in study.arms]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"{path}: arm name {duplicates[0]!r} is used twice; arm names must be unique")
    if study.compare_to is not None and study.compare_to not in names:
        raise ConfigError(f"{path}: compare_to {study.compare_to!r} is not an arm; arms: {', '.join(names)}")
    from dogo.evaluate import parse_settings

    for protocol, settings in study.evaluate.protocols.items():
        try:
            parse_settings(protocol, settings)  # unknown protocols and keys are errors now, not hours later
        except ConfigError as exc:
            raise ConfigError(f"{path}: evaluate.protocols.{protocol}: {exc}") from None
    unknown = [p for p in study.evaluate.every_budget or [] if p not in study.evaluate.protocols]
    if unknown:
        raise ConfigError(
            f"{path}: evaluate.every_budget: {unknown[0]!r} is not one of evaluate.protocols "
            f"({', '.join(study.evaluate.protocols)})"
        )
    if study.evaluate.every_budget is not None and not study.budgets:
        raise ConfigError(f"{path}: evaluate.every_budget needs budgets (training steps); add them or drop it")
    odd = next(
        (arm.name for arm in study.arms if arm.more_budgets and (not study.budgets or min(arm.more_budgets) < 0)), None
    )
    if odd:
        raise ConfigError(f"{path}: arm {odd}: more_budgets needs the study's budgets, and steps >= 0")
    base = _base_dict(study.base, path)
    arms = {arm.name: _arm_config(arm, base, path) for arm in study.arms}
    if study.budgets:
        arms = {
            name: _with_budgets(config, study.arm_budgets(name), f"{path}: arm {name}") for name, config in arms.items()
        }
    return study, arms


#: The settings a study with budgets derives for every arm from its budgets (not the arm's own).
BUDGET_KEYS = ("train.epochs", "train.max_steps", "train.keep_at")


def _with_budgets(config: dict[str, Any], budgets: list[int], source: str) -> dict[str, Any]:
    """The arm trained once to the largest budget, keeping its weights at every budget.

    The epochs are the fewest that hold the largest budget (the training split is read for its
    size). Refused when a schedule spans the run's length: then step N of the long run is not an
    N-step run (:func:`dogo.kept.length_dependence`).
    """
    from dogo.data.source import load_split
    from dogo.training.cohort import length_dependence

    cfg = build_config(config, source)
    images = len(load_split(cfg.dataset, cfg.dataset.split, log=lambda m: None).images)
    steps_per_epoch = images // cfg.train.batch_size
    if steps_per_epoch < 1:
        raise ConfigError(
            f"{source}: train.batch_size={cfg.train.batch_size} is larger than the dataset ({images} images)"
        )
    data = json.loads(json.dumps(config))
    data["train"].update(epochs=-(-max(budgets) // steps_per_epoch), max_steps=max(budgets), keep_at=list(budgets))
    cfg = build_config(data, source)
    reasons = length_dependence(cfg, steps_per_epoch, max(budgets))
    if reasons:
        raise ConfigError(
            f"{source}: budgets cannot be read off one run here ({'; '.join(reasons)}): step N of a "
            f"longer run would not be an N-step run; use a constant learning rate (schedule: constant) "
            f"and a constant momentum, or train each budget as an arm of its own with train.epochs"
        )
    return cfg.dump()


def _base_dict(base: str | dict[str, Any], study_path: Path) -> dict[str, Any]:
    if isinstance(base, dict):
        return build_config(dict(base), f"{study_path}: base").dump()
    from dogo.config import load_config

    return load_config(study_path.parent / base).dump()


def _arm_config(arm: ArmConfig, base: dict[str, Any], study_path: Path) -> dict[str, Any]:
    source = f"{study_path}: arm {arm.name}"
    if arm.config is not None:
        from dogo.config import load_config

        data = load_config(study_path.parent / arm.config).dump()
    else:
        data = json.loads(json.dumps(base))
    items = (
        arm.overrides.items()
        if isinstance(arm.overrides, dict)
        else ((".".join(keys), value) for keys, value in map(parse_override, arm.overrides))
    )
    for key, value in items:
        apply_override(data, key.split("."), value)
    return build_config(data, source).dump()


def plan_runs(study: StudyConfig, arm_configs: dict[str, dict[str, Any]], out: Path) -> list[StudyRun]:
    """Every arm x seed in the order they run (see the module docstring)."""
    blocks: list[list[ArmConfig]] = []
    for arm in study.arms:
        seeds = arm.seeds or study.seeds
        if blocks and (blocks[-1][0].seeds or study.seeds) == seeds:
            blocks[-1].append(arm)
        else:
            blocks.append([arm])
    runs = []
    for block in blocks:
        for seed in block[0].seeds or study.seeds:
            for arm in block:
                config = dict(arm_configs[arm.name], seed=seed, name=f"{study.name}-{arm.name}-seed{seed}")
                folder = out / arm.name
                runs.append(
                    StudyRun(
                        arm.name,
                        seed,
                        config,
                        folder / f"seed-{seed}",
                        folder / f"seed-{seed}.json",
                        folder / f"seed-{seed}.log",
                    )
                )
    return runs


def is_study_dir(path: str | Path) -> bool:
    path = Path(path)
    return (path / "study.yaml").is_file() and (path / "arms").is_dir()
