"""Tables of runs made of parts: one world per forgotten class, or one per data size.

A scenario with ``forget: {kind: class, each: ...}`` has rows ``LABEL@classC`` that
carry ``forget_class``; :func:`class_table` gives, per method, the mean over classes
of the per-class means over seeds and the worst class. A scenario with ``grow:`` has
rows ``LABEL@nNfF`` whose metrics carry ``n_train`` and ``n_forget``;
:func:`growth` fits, per method, the slope of log(seconds) and log(peak memory)
against log(size) along each sweep (the points sharing the most common ``n_train``:
the forget-set sweep; those sharing the most common ``n_forget``: the training-set
sweep), and :func:`growth_plot` draws them on log-log axes.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

__all__ = ["class_table", "growth", "growth_table", "growth_plot", "has_classes", "has_growth"]

MISSING = "–"


def _finite(v) -> float | None:
    return float(v) if isinstance(v, int | float) and math.isfinite(v) else None


def has_classes(results: dict) -> bool:
    return any("forget_class" in r for r in results.get("rows", []))


def has_growth(results: dict) -> bool:
    return any("n_train" in r.get("metrics", {}) for r in results.get("rows", []))


def _base(label: str) -> str:
    return label.split("@", 1)[0]


def _per_class(results: dict) -> tuple[list[str], dict]:
    """(methods in table order, {method: {class: {metric: mean over seeds}}})."""
    order: list[str] = []
    vals: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for r in results["rows"]:
        if "forget_class" not in r:
            continue
        m = _base(r["method"])
        if m not in order:
            order.append(m)
        for k, v in r["metrics"].items():
            if (f := _finite(v)) is not None:
                vals[m][r["forget_class"]][k].append(f)
    means = {
        m: {c: {k: float(np.mean(v)) for k, v in ks.items()} for c, ks in by_c.items()}
        for m, by_c in vals.items()
    }
    return order, means


def class_table(results: dict) -> str:
    """Per method: forget accuracy, test accuracy, its distance to the same class's oracle,
    and Avg.Gap, each as the mean over classes and the worst class (class in brackets)."""
    order, means = _per_class(results)
    oracle = means.get("retrain", {})
    cols = [
        ("forget_acc", "Forget acc", max),
        ("test_acc", "Test acc", min),
        ("test_gap", "abs(Test acc - oracle's)", max),
        ("avg_gap", "Avg.Gap", max),
    ]
    head = "| Method | " + " | ".join(f"{t} mean | {t} worst (class)" for _, t, _ in cols) + " |"
    lines = [head, "|---|" + "---|---|" * len(cols)]
    for m in order:
        cells = []
        for key, _, worst in cols:
            per = {}
            for c, ks in means[m].items():
                if key == "test_gap":
                    o = oracle.get(c, {}).get("test_acc")
                    v = ks.get("test_acc")
                    per[c] = None if o is None or v is None else abs(v - o)
                else:
                    per[c] = ks.get(key)
            have = {c: v for c, v in per.items() if v is not None}
            if not have or len(have) < len(per):
                cells += [MISSING, MISSING]
                continue
            wc = worst(have, key=have.get)
            cells += [f"{np.mean(list(have.values())):.2f}", f"{have[wc]:.2f} ({wc})"]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    n_classes = len({c for m in means.values() for c in m})
    seeds = sorted({r["seed"] for r in results["rows"]})
    return (
        f"Each of {n_classes} classes forgotten in turn, seeds {seeds}: per class the mean "
        "over seeds, then the mean over classes and the worst class. The oracle of a class "
        "is retrained without that class.\n\n" + "\n".join(lines)
    )


def _sweeps(rows: list[dict]) -> dict[str, tuple[str, object]]:
    """{'n_forget': ('n_train', N0), 'n_train': ('n_forget', F0)}: each sweep's fixed size."""
    pts = {(r["metrics"]["n_train"], r["metrics"]["n_forget"]) for r in rows}
    n0 = Counter(n for n, _ in pts).most_common(1)[0][0]
    f0 = Counter(f for _, f in pts).most_common(1)[0][0]
    return {"n_forget": ("n_train", n0), "n_train": ("n_forget", f0)}


def _slope(xs: list[float], ys: list[float]) -> float | None:
    pairs = [(x, y) for x, y in zip(xs, ys, strict=True) if x > 0 and y is not None and y > 0]
    if len({x for x, _ in pairs}) < 2:
        return None
    lx, ly = np.log([p[0] for p in pairs]), np.log([p[1] for p in pairs])
    return float(np.polyfit(lx, ly, 1)[0])


def growth(results: dict) -> dict:
    """{method: {sweep: {"sizes": [...], "seconds": [...], "peak_mem_mb": [...],
    "seconds_slope": s, "peak_mem_mb_slope": s}}}: means over seeds at each size, slopes of
    the log-log fit over every seed's point."""
    rows = [r for r in results["rows"] if "n_train" in r["metrics"]]
    sweeps = _sweeps(rows)
    out: dict = {}
    for r in rows:
        out.setdefault(_base(r["method"]), {})
    for m in out:
        mine = [r for r in rows if _base(r["method"]) == m]
        for var, (fixed, at) in sweeps.items():
            on = [r for r in mine if r["metrics"][fixed] == at]
            sizes = sorted({r["metrics"][var] for r in on})
            entry: dict = {"fixed": {fixed: at}, "sizes": sizes}
            for key in ("seconds", "peak_mem_mb"):
                xs = [r["metrics"][var] for r in on]
                ys = [_finite(r["metrics"].get(key)) for r in on]
                entry[f"{key}_slope"] = _slope(xs, ys)
                entry[key] = [
                    _mean([_finite(r["metrics"].get(key)) for r in on if r["metrics"][var] == s])
                    for s in sizes
                ]
            out[m][var] = entry
    return out


def _mean(vals: list) -> float | None:
    vals = [v for v in vals if v is not None]
    return float(np.mean(vals)) if vals else None


def _f(v, spec=".3g") -> str:
    return MISSING if v is None else format(v, spec)


def growth_table(results: dict) -> str:
    g = growth(results)
    if not g:
        return ""
    any_m = next(iter(g.values()))
    fs, ts = any_m["n_forget"], any_m["n_train"]
    lines = [
        f"Slopes of log(seconds) and log(peak MB) against log(size), fitted over every seed's "
        f"point: against the forget-set size at n_train = {fs['fixed']['n_train']} "
        f"(n_forget {fs['sizes']}), and against the training-set size at n_forget = "
        f"{ts['fixed']['n_forget']} (n_train {ts['sizes']}). A slope of 1 is linear growth, "
        "0 none. Seconds at each size are means over seeds.",
        "",
        "| Method | s/size slope vs n_forget | s/size slope vs n_train | MB slope vs n_forget "
        "| MB slope vs n_train | seconds over n_forget sizes | seconds over n_train sizes |",
        "|---|---|---|---|---|---|---|",
    ]
    for m, e in g.items():
        a, b = e["n_forget"], e["n_train"]
        lines.append(
            f"| {m} | {_f(a['seconds_slope'], '.2f')} | {_f(b['seconds_slope'], '.2f')} | "
            f"{_f(a['peak_mem_mb_slope'], '.2f')} | {_f(b['peak_mem_mb_slope'], '.2f')} | "
            + ", ".join(_f(v) for v in a["seconds"])
            + " | "
            + ", ".join(_f(v) for v in b["seconds"])
            + " |"
        )
    return "\n".join(lines)


def growth_plot(results: dict, folder: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    g = growth(results)
    if not g:
        return []
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4))
    for ax, var in zip(axes, ("n_forget", "n_train"), strict=True):
        for m, e in g.items():
            pts = [(s, v) for s, v in zip(e[var]["sizes"], e[var]["seconds"], strict=True) if v]
            if len(pts) < 2:
                continue
            style = {"lw": 2.5, "color": "k"} if m == "retrain" else {"lw": 1.2}
            slope = e[var]["seconds_slope"]
            ax.plot(*zip(*pts, strict=True), marker="o", label=f"{m} ({_f(slope, '.2f')})", **style)
        fixed = next(iter(g.values()))[var]["fixed"]
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(f"{var} (log; {', '.join(f'{k} = {v}' for k, v in fixed.items())})")
        ax.set_ylabel("seconds (log)")
        ax.grid(alpha=0.3, which="both")
        if ax.lines:
            ax.legend(fontsize=7, title="method (slope)", title_fontsize=7)
    fig.suptitle(f"{results['scenario_name']}: cost against size")
    fig.tight_layout()
    fig.savefig(folder / "cost_growth.png", dpi=110)
    plt.close(fig)
    return ["cost_growth.png"]
