"""Report sections of language-model runs: the relearning attack per seed, the relative
weight change per block of decoder layers, and KUnBR's block densities and choices.

Each is drawn from what the rows carry (``relearn``, ``weight_change``, a run record's
``extra.kunbr``), never from the scenario's name; a run without them has no section.
"""

from __future__ import annotations

import json

import numpy as np

MISSING = "–"


def _num(v, spec: str) -> str:
    return MISSING if v is None else format(v, spec)


def _by_method(results: dict, key: str) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in results["rows"]:
        if key in r or (key == "kunbr" and "kunbr" in (r.get("record") or {}).get("extra", {})):
            out.setdefault(r["method"], []).append(r)
    return out


def relearn_section(results: dict) -> str:
    rows = _by_method(results, "relearn")
    if not rows:
        return ""
    cfg = (results.get("attacks") or {}).get("relearn", {})
    lines = [
        "## Relearning attack",
        "",
        f"Settings: `{json.dumps(cfg, sort_keys=True)}`. Per seed: the held-out forget "
        "questions' accuracy of the original (before unlearning), of the row (after "
        "unlearning) and after the attack at its best learning rate (means over folds), the "
        "recovery, the best rate, and the benign variant (ten unrelated pairs) at its best "
        "rate. Accuracy in percent; recovery is missing where unlearning removed fewer than "
        f"{cfg.get('min_gap', 5)} points.",
        "",
        "| Row | Seed | Original | After unlearning | After attack | Recovery | Best lr "
        "| Benign | Benign recovery |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, rs in rows.items():
        for r in rs:
            m, d = r["metrics"], r["relearn"]
            lines.append(
                f"| {name} | {r['seed']} | {_num(float(np.mean(d['original_folds'])), '.1f')} "
                f"| {_num(m.get('relearn_before_acc'), '.1f')} "
                f"| {_num(m.get('relearn_answer_acc'), '.1f')} "
                f"| {_num(m.get('relearn_recovery'), '.2f')} | {d['best_lr']:g} "
                f"| {_num(m.get('relearn_benign_answer_acc'), '.1f')} "
                f"| {_num(m.get('relearn_benign_recovery'), '.2f')} |"
            )
    return "\n".join(lines) + "\n\n"


def weight_change_section(results: dict) -> str:
    rows = _by_method(results, "weight_change")
    if not rows:
        return ""
    first = next(iter(rows.values()))[0]["weight_change"]
    heads = [f"layers {a}-{b}" if a != b else f"layer {a}" for a, b in first["blocks"]]
    lines = [
        "## Weight change per block",
        "",
        "Relative change ||W - W_original|| / ||W_original|| of each block of decoder layers "
        "(input side first) and of the rest (embeddings, final norm, head), in percent, mean "
        "over seeds: where each row changed the original.",
        "",
        "| Row | " + " | ".join(heads) + " | other |",
        "|---|" + "---|" * (len(heads) + 1),
    ]
    for name, rs in rows.items():
        rel = np.mean([r["weight_change"]["relative"] for r in rs], axis=0) * 100
        other = float(np.mean([r["weight_change"]["other"] for r in rs])) * 100
        lines.append(f"| {name} | " + " | ".join(f"{v:.3g}" for v in rel) + f" | {other:.3g} |")
    return "\n".join(lines) + "\n\n"


def kunbr_section(results: dict) -> str:
    rows = _by_method(results, "kunbr")
    if not rows:
        return ""
    lines = [
        "## KUnBR blocks",
        "",
        "Knowledge density per block (RMS per parameter of the forget-NLL gradient; a "
        "reconstruction, see `unlearn.methods.llm.kunbr`) and the block re-inserted in each "
        "round, per seed.",
        "",
    ]
    for name, rs in rows.items():
        for r in rs:
            k = r["record"]["extra"]["kunbr"]
            blocks = [f"{a}-{b}" for a, b in k["blocks"]]
            dens = ", ".join(f"{b}: {d:.3g}" for b, d in zip(blocks, k["density"], strict=True))
            order = ", ".join(blocks[i] for i in k["order"]) or "none"
            lines.append(
                f"- `{name}` seed {r['seed']} ({k['select']}, density on the {k['density_on']} "
                f"model; stage 1 {k['stage1_steps']} steps, {k['round_steps']} per round): "
                f"density {dens}; rounds: {order}"
            )
    return "\n".join(lines) + "\n\n"


def llm_sections(results: dict) -> str:
    return relearn_section(results) + weight_change_section(results) + kunbr_section(results)
