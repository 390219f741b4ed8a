"""``dogo evaluate``: load a run's peers, the labelled data, run a protocol, save and tabulate.

The protocols themselves live in :mod:`dogo.evaluate` and know nothing of run directories;
this module is the glue between them and a run: which checkpoint, which peers, which dataset
(the run's ``eval.dataset`` or its training dataset's labelled splits), where the feature
cache and the result files go.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from dogo.config import DatasetConfig, RunConfig, parse_override
from dogo.config.normalization import view_normalization
from dogo.core import console
from dogo.core.runtime import resolve_device
from dogo.data import ImageDataset, resolve
from dogo.data.source import load_split
from dogo.evaluate.base import PROTOCOLS, parse_settings
from dogo.evaluate.features import FeatureCache
from dogo.evaluate.results import save_result
from dogo.runs.checkpoint import checkpoint_id
from dogo.runs.layout import RunDir
from dogo.training.cohort import load_trained_peers

if TYPE_CHECKING:
    from dogo.evaluate.transfer import TransferSettings

#: Protocols whose settings start from the run config's ``eval.linear`` block (the reference's eval block).
PROBE_PROTOCOLS = ("linear", "fewshot", "noisy", "transfer", "shift")


def labelled_splits(config: RunConfig, dataset: DatasetConfig | None = None) -> tuple[ImageDataset, ImageDataset]:
    """(train, test) labelled splits used for probing a run's encoders."""
    d = dataset or config.eval.dataset or config.dataset
    spec = resolve(d.name)  # once for both splits
    train = load_split(d, "train", spec=spec)
    test = load_split(
        d.model_copy(update={"options": {k: v for k, v in d.options.items() if k != "long_tail"}}),
        d.eval_split or "test",
        spec=spec,
    )
    return train, test


def select_peers(peer: str | int, count_or_labels: int | list[str]) -> list[int]:
    """``all``, an index or a peer's name -> indices (:func:`dogo.runs.encoder.select_peers`)."""
    from dogo.runs.encoder import select_peers as select

    labels = count_or_labels if isinstance(count_or_labels, list) else [str(i) for i in range(count_or_labels)]
    return select(peer, labels)


def evaluate_run(
    run_dir: Path,
    protocol: str,
    settings_args: Sequence[str] | dict[str, Any] = (),
    *,
    peer: str | int = "all",
    checkpoint: str = "last",
) -> list[dict[str, Any]]:
    """Run ``protocol`` on the chosen peers of a run; save each result under RUN_DIR/eval/."""
    run = PROTOCOLS.get(protocol)
    config, peers, path = load_trained_peers(run_dir, checkpoint)
    defaults = dict(config.eval.linear) if protocol in PROBE_PROTOCOLS else {}
    settings = parse_settings(protocol, defaults | _as_dict(settings_args))
    if protocol == "transfer":
        transfer = cast("TransferSettings", settings)  # parse_settings("transfer", ...) makes one
        options = {"limit": transfer.limit} if transfer.limit else {}
        target = DatasetConfig(
            name=transfer.dataset, root=transfer.root, options=options, image_size=config.dataset.image_size
        )  # a folder is decoded at the run's size
        train, test = labelled_splits(config, target)
    else:
        train, test = labelled_splits(config)
    device = resolve_device(config.train.device)
    model_id = checkpoint_id(path)
    from dogo.guards.locks import holding

    with holding(RunDir(run_dir).cache, create=True):  # one evaluation of a run at a time (its feature cache)
        results = []
        for k in select_peers(peer, [p.label for p in peers]):
            started = time.perf_counter()
            encoder = peers[k].encoder.to(device)
            cache = FeatureCache(RunDir(run_dir).feature_cache, f"{model_id}-peer{k}")
            result = run(
                encoder,
                train,
                test,
                settings,
                image_size=config.dataset.image_size,
                device=device,
                feature_cache=cache,
                normalization=view_normalization(config),
            )
            # The checkpoint's name keeps results of epoch-N apart from the final ones (file name and settings).
            name = checkpoint if not str(checkpoint).endswith(".pt") else Path(checkpoint).stem
            result.update(peer=k, peer_label=peers[k].label, checkpoint=str(path), checkpoint_name=name)
            result["path"] = str(save_result(run_dir, k, protocol, result))
            results.append(result)
            scores = ", ".join(f"{key} {value:.2f}%" for key, value in result.get("summary", {}).items())
            console.info(
                f"{protocol}: peer {k} ({peers[k].label}): {scores} ({console.duration(time.perf_counter() - started)})"
            )
        from dogo.runs.disk import cap_cache

        cap_cache(RunDir(run_dir).feature_cache, config.eval.cache_max_mb)
    return results


def _as_dict(settings_args: Sequence[str] | dict[str, Any]) -> dict[str, Any]:
    if isinstance(settings_args, dict):
        return dict(settings_args)
    return {".".join(keys): value for keys, value in map(parse_override, settings_args)}


def format_table(results: list[dict[str, Any]]) -> str:
    """One row per peer: its label and every headline number of the protocol (percent)."""
    if not results:
        return "(no results)"
    columns = list(dict.fromkeys(key for r in results for key in r.get("summary", {})))
    header = f"{'peer':<4} {'model':<24} " + " ".join(f"{c:>14}" for c in columns)
    lines = [header, "-" * len(header)]
    for r in results:
        cells = " ".join(f"{r['summary'].get(c, float('nan')):>13.2f}%" for c in columns)
        lines.append(f"{r['peer']:<4} {r['peer_label']:<24} {cells}")
    lines.append(f"(results saved under {Path(results[0]['path']).parent})")
    return "\n".join(lines)
