"""Report parts of ``kind: diffusion`` runs: the judge and the base models' per-class
recognition, the DiMRA attack per seed, and the plots (forgotten-class rate against the
kept classes' Frechet ratio; the forgotten-class rate over the attack's steps)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

MISSING = "–"


def diffusion_section(results: dict) -> str:
    if results.get("kind") != "diffusion":
        return ""
    judge = results.get("judge", {})
    lines = [
        "## Judge and base models",
        "",
        f"The judge (a CNN trained on the real training images, settings "
        f"`{json.dumps({k: judge.get(k) for k in ('epochs', 'seed', 'batch_size', 'lr')})}`) "
        f"labels {judge.get('test_acc', float('nan')):.1f} % of the real test images right "
        "(per class: "
        + ", ".join(f"{c}: {v:.0f}" for c, v in sorted(
            (judge.get("per_class_test_acc") or {}).items(), key=lambda kv: int(kv[0])))
        + ").",
        "",
        "Base model per seed: the share of its guided samples the judge recognises as the "
        "asked class, per class (the claim gate: at least 85 % for every class).",
        "",
    ]  # fmt: skip
    base = results.get("base_models", {})
    if base:
        k = max(len(v["per_class_acc"]) for v in base.values())
        lines += [
            "| Seed | Forgotten class | " + " | ".join(str(c) for c in range(k)) + " | Min |",
            "|---|---|" + "---|" * (k + 1),
        ]
        for seed, v in sorted(base.items(), key=lambda kv: int(kv[0])):
            rates = {int(c): r for c, r in v["per_class_acc"].items()}
            lines.append(
                f"| {seed} | {v['forget_class']} | "
                + " | ".join(f"{rates.get(c, float('nan')):.0f}" for c in range(k))
                + f" | {min(rates.values()):.0f} |"
            )
    cfg = (results.get("attacks") or {}).get("dimra")
    rows = [r for r in results["rows"] if "dimra" in r]
    if cfg and rows:
        steps = sorted({t["step"] for r in rows for t in r["dimra"]})
        lines += [
            "",
            "## DiMRA (relearning by fine-tuning)",
            "",
            f"Settings: `{json.dumps(cfg, sort_keys=True)}`. The forgotten class's rate (%) "
            "over the attack's steps, per row and seed:",
            "",
            "| Row | Seed | " + " | ".join(f"step {s}" for s in steps) + " |",
            "|---|---|" + "---|" * len(steps),
        ]
        for r in rows:
            at = {t["step"]: t["forgotten_class_rate"] for t in r["dimra"]}
            lines.append(
                f"| {r['method']} | {r['seed']} | "
                + " | ".join(MISSING if s not in at else f"{at[s]:.1f}" for s in steps)
                + " |"
            )
    return "\n".join(lines) + "\n\n"


def diffusion_plots(results: dict, folder: Path) -> list[str]:
    import matplotlib.pyplot as plt

    from .report import _legend, _scatter

    names = []
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    _scatter(ax, results["summary"], "frechet_retained", "forgotten_class_rate")
    ax.axhline(5, color="k", lw=1, ls="--")
    ax.axvline(1.1, color="k", lw=1, ls=":")
    ax.set_xlabel("Frechet distance of the kept classes / the original's")
    ax.set_ylabel("forgotten class in its samples (%)")
    ax.set_title(results["scenario_name"])
    ax.grid(alpha=0.3)
    _legend(ax)
    fig.tight_layout()
    fig.savefig(folder / "forgotten_vs_frechet.png", dpi=110)
    plt.close(fig)
    names.append("forgotten_vs_frechet.png")
    rows = [r for r in results["rows"] if "dimra" in r]
    if rows:
        fig, ax = plt.subplots(figsize=(6.4, 4.6))
        by: dict[str, dict[int, list[float]]] = {}
        for r in rows:
            for t in r["dimra"]:
                by.setdefault(r["method"], {}).setdefault(t["step"], []).append(
                    t["forgotten_class_rate"]
                )
        for label, pts in by.items():
            xs = sorted(pts)
            ax.plot(xs, [np.mean(pts[x]) for x in xs], marker="o", label=label)
        ax.set_xlabel("DiMRA fine-tuning steps")
        ax.set_ylabel("forgotten class in its samples (%, mean over seeds)")
        ax.set_title("the relearning attack")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(folder / "dimra.png", dpi=110)
        plt.close(fig)
        names.append("dimra.png")
    return names
