"""``init_from: RUN_DIR[#peer]``: a peer that starts from another run's trained peer.

Two-stage training: stage 1 trains a (large) model, stage 2 names it in a peer's ``init_from``.
With ``trainable: false`` the loaded peer is a fixed teacher and stage 2 is *offline*
distillation with DoGo's KL between cross-view similarity distributions: SEED's objective
(Fang et al., "SEED: Self-supervised Distillation for Visual Representation", ICLR 2021)
without its queue: SEED compares each embedding with a queue of past teacher embeddings, here
the reference set is the other images of the batch.

The weights are read once, when a run starts (a resumed run continues from its own checkpoint).
The whole peer (encoder, heads, target networks, queues) is loaded when the architectures match;
otherwise only the encoder, when the backbones match (the objective's heads start fresh and its
target networks are copied again from the loaded encoder). What is loaded is checked as every
reader of weights checks it (:func:`dogo.guards.verified.check_weights`): a peer with NaN or inf
weights is refused in one line naming the file and the tensor.
"""

from __future__ import annotations

from pathlib import Path

from dogo.core.errors import ConfigError
from dogo.runs.checkpoint import load_checkpoint

__all__ = ["initialise_peers", "parse_init_from"]


def parse_init_from(value: str) -> tuple[Path, str]:
    """``RUN_DIR[#peer]`` -> (run directory, peer: a name or an index, default ``"0"``)."""
    run_dir, _, peer = str(value).partition("#")
    if not run_dir:
        raise ConfigError(f"init_from: {value!r} must be RUN_DIR or RUN_DIR#peer")
    return Path(run_dir), peer or "0"


def initialise_peers(cohort, config, log=print) -> list[str]:
    """Load every peer's ``init_from`` (``config.train.models[k]``) into ``cohort.peers[k]``;
    returns one line per loaded peer, which is also passed to ``log``."""
    from dogo.config import peer_labels
    from dogo.guards.verified import check_weights, weights_misfit
    from dogo.runs.encoder import select_peer
    from dogo.runs.rundir import build_config, checkpoint_path

    lines = []
    for k, (cfg, peer) in enumerate(zip(config.train.models, cohort.peers, strict=True)):
        if not cfg.init_from:
            continue
        where = f"train.models.{k}.init_from"
        run_dir, name = parse_init_from(cfg.init_from)
        path = checkpoint_path(run_dir, "last")
        state = load_checkpoint(path)
        source = build_config(state["config"], str(path))
        labels = peer_labels(source.train.models)
        try:
            index = select_peer(name, labels)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
        weights = state["peers"][index]
        # read as every reader of weights reads them (dogo.guards.verified): whole, of the right shapes, finite
        part = f"{path}: peer {index} ({labels[index]})"
        fix = f"train {run_dir} again, or point {where} at another run"
        if weights_misfit(peer, weights) is None:
            check_weights(peer, weights, part, fix)
            peer.load_state_dict(weights)
            what = "the whole peer"
        else:
            encoder = (
                {key[len("encoder.") :]: v for key, v in weights.items() if str(key).startswith("encoder.")}
                if isinstance(weights, dict)
                else weights
            )
            misfit = weights_misfit(peer.encoder, encoder)
            if misfit is not None:
                raise ConfigError(
                    f"{where}: peer {labels[index]} of {run_dir} does not fit this peer "
                    f"(a {cfg.backbone} x{cfg.width:g}): {misfit}"
                )
            check_weights(peer.encoder, encoder, f"{part} encoder", fix)
            peer.encoder.load_state_dict(encoder)
            peer.objective.attach(peer.encoder)  # target networks follow the loaded encoder (before DDP wraps it)
            what = "the encoder (the heads differ and start fresh)"
        line = f"peer {k} ({peer.label}): {what} from {path} peer {index} ({labels[index]}), step {state['step']}"
        lines.append(line)
        log(line)
    return lines
