"""The human table of a :func:`dogo.bench.run.run_bench` result."""

from __future__ import annotations

from typing import Any

from dogo.bench.ceiling import backbone_label
from dogo.bench.reference import REFERENCE_RATIO


def format_report(result: dict[str, Any], title: str = "") -> str:
    """Header, throughput and memory, the split, the ceiling, the reference, load and targets."""
    sections = [
        _header(result, title),
        _split(result),
        _ceiling(result),
        _reference(result),
        _load(result),
        _targets(result),
    ]
    return "\n\n".join("\n".join(lines) for lines in sections if lines)


def _header(result: dict[str, Any], title: str) -> list[str]:
    m = result["machine"]
    where = m["gpu"] or f"{m['cpu']}, {m['threads']} threads"
    units = [name for name, present in (("AMX", m["amx"]), ("AVX512-BF16", m["avx512_bf16"])) if present]
    peers = ", ".join(
        f"{p['label']} ({p['backbone']}{'' if p['width'] == 1 else ' x' + format(p['width'], 'g')}, {p['objective']})"
        for p in result["peers"]
    )
    return [
        f"dogo bench{': ' + title if title else ''}",
        f"device   {result['device']} ({where}; {', '.join(units) or 'no bf16 units'}), torch {m['torch']}",
        f"settings precision {result['precision']}, channels_last {'on' if result['channels_last'] else 'off'}, "
        f"compile {'on' if result['compile'] else 'off'}, allocator {result['allocator']}, "
        f"peers {'side by side' if result.get('concurrent_peers') else 'one after another'}",
        f"cohort   {peers}; batch {result['batch_size']}, {result['image_size']} px; data {result['data']}",
        "",
        f"throughput   {result['images_per_s']:8.2f} images/s median   (min {result['images_per_s_min']:.2f}, "
        f"max {result['images_per_s_max']:.2f}; {result['steps']} steps after {result['warmup']} warm-up; "
        "an image = 2 views through every peer)",
        f"peak memory  {result['peak_memory_mb']:8.0f} MB   ({result['memory_kind']}; "
        f"{result['memory_before_steps_mb']:.0f} MB before the first step)",
    ]


def _split(result: dict[str, Any]) -> list[str]:
    split = result.get("split")
    if not split:
        return []
    lines = [f"split of a step (mean of instrumented steps, {split['total']:.3f} s):"]
    for key, value in split.items():
        if key == "total":
            continue
        label = key.replace("peer/", "peer ").replace("/", " ")
        if key.endswith("heads_and_ssl"):
            label = "  of which " + label.split(" ", 2)[-1].replace("_", " ")
        lines.append(f"  {label:<28} {value:8.3f} s  {100 * value / split['total']:5.1f} %")
    if "data_wait_fraction" in result:
        lines.append(
            f"  data left to wait for in the timed steps (gathered ahead in a thread): "
            f"{100 * result['data_wait_fraction']:.1f} % of a step"
        )
    return lines


def _ceiling(result: dict[str, Any]) -> list[str]:
    ceiling = result.get("ceiling")
    if not ceiling:
        return []
    lines = [
        f"ceiling: backbones alone, forward+backward+optimiser on pre-made tensors, "
        f"2 x {ceiling['batch']} views per step (views/s; +target: also both through a target copy, no graph)"
    ]
    names = list(dict.fromkeys(k for row in ceiling["backbones"] for k in row["settings"]))
    lines.append(f"  {'backbone':<24}" + "".join(f"{n:>18}" for n in names) + "   fastest")
    for row in ceiling["backbones"]:
        cells = "".join(f"{row['settings'][n]:18.1f}" if n in row["settings"] else f"{'-':>18}" for n in names)
        lines.append(f"  {backbone_label(row):<24}{cells}   {row['best']}")
        if "compile_error" in row:
            lines.append(f"  (compile skipped: {row['compile_error']})")
    side = ceiling.get("side_by_side")
    if side:
        lines.append(
            f"  the backbones one after another: {ceiling['one_after_another']:.2f} images/s; "
            f"side by side ({side['threads_per_peer']} thread(s) each, {', '.join(side['settings'])}): "
            f"{side['images_per_s']:.2f} images/s"
        )
    lines.append(
        f"  ceiling {result['ceiling_images_per_s']:.2f} images/s; dogo reaches "
        f"{100 * result['fraction_of_ceiling']:.1f} % of it"
    )
    return lines


def _reference(result: dict[str, Any]) -> list[str]:
    reference = result.get("reference")
    if not reference:
        return []
    lines = []
    if "images_per_s" in reference:
        each = " and ".join(f"{v:.1f}" for v in reference["fp32_resnet18_views_per_s_each"])
        lines.append(
            f"reference {reference['images_per_s']:.2f} images/s, {reference['how']}: "
            f"{REFERENCE_RATIO} x {reference['fp32_resnet18_views_per_s']:.1f} / 4 (measured {each} views/s)"
        )
        lines.append(f"  dogo / reference = {result['speedup_vs_reference']:.2f}x")
    elif "error" in reference:
        lines.append(f"reference: not measured ({reference['error']})")
    mem = reference.get("memory")
    if mem and "peak_memory_mb" in mem:
        lines.append(
            f"reference peak memory {mem['peak_memory_mb']:.0f} MB ({mem['how']}); "
            f"that step ran at {mem['images_per_s']:.2f} images/s"
        )
    elif mem:
        lines.append(f"reference peak memory: not measured ({mem.get('error')})")
    return lines


# Other processes' share of the CPUs in the second before the bench above which it is not the machine's best.
OTHERS_BUSY = 0.25


def _load(result: dict[str, Any]) -> list[str]:
    load = result.get("load_average", {})
    if load.get("before") is None:
        return []
    others = load.get("others_busy_before")
    # what ran in the second before the bench, where /proc/stat says (a bench that ended a minute ago no longer
    # counts); elsewhere the one-minute load average ("after" counts this bench itself)
    busy = load["before"] > 0.5 * (load["cores"] or 1) if others is None else others > OTHERS_BUSY
    return [
        f"load average {load['before']:.1f} before, {load['after'] or 0:.1f} after (this bench included), "
        f"{load['cores']} cores"
        + ("" if others is None else f"; other processes used {100 * others:.0f} % of the CPUs just before")
        + (
            "; WARNING: other processes were running, the numbers are not this machine's best "
            "(bench again when it is idle)"
            if busy
            else ""
        )
    ]


def _targets(result: dict[str, Any]) -> list[str]:
    targets = result.get("targets", {})
    if not targets:
        return []
    lines = ["targets:"]
    t = targets.get("speedup")
    if t:
        note = "" if t["applies"] else " (the target is for the reference setting; informative here)"
        lines.append(
            f"  speed-up >= {t['target']:g}x ({t['why']}): {t['achieved']:.2f}x {'PASS' if t['pass'] else 'FAIL'}{note}"
        )
    t = targets.get("ceiling")
    if t:
        lines.append(
            f"  >= {100 * t['target']:.0f} % of the ceiling: {100 * t['achieved']:.1f} % "
            f"{'PASS' if t['pass'] else 'FAIL'}"
        )
    t = targets.get("memory")
    if t:
        lines.append(
            f"  peak memory <= reference's {t['target']:.0f} MB: {t['achieved']:.0f} MB "
            f"{'PASS' if t['pass'] else 'FAIL'}"
        )
    return lines
