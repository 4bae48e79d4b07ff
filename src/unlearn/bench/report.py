"""Write a run's results: ``results.json``, ``report.md``, ``report.html`` and plots.

``results.json`` is strict JSON: a value that is missing or not finite (NaN,
infinity) is written as ``null``, and the reports show it as missing (``–``),
never as 0. The targets of the scenario's ``targets:`` block are judged by
:mod:`unlearn.bench.targets` and listed in the report.

The output folder is replaced as one unit. Everything is written into a hidden
folder beside it (``.NAME.tmp-*``), which then takes the output's place: on
Linux in one step (``renameat2`` with ``RENAME_EXCHANGE``), elsewhere by
renaming the old folder to ``.NAME.trash-*`` and the new one into place. A
process killed at any point leaves the complete old folder or the complete new
one (with the two-rename fallback, between the renames the old one is under its
trash name, and the next write puts it back first). Each write starts by
removing the hidden leftovers of earlier killed writes of the same output, and
writers of one parent folder take turns (an exclusive ``flock`` on it, where the
platform has one).
"""

from __future__ import annotations

import base64
import ctypes
import errno
import html
import json
import math
import os
import re
import secrets
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UnlearnError
from .diffusion_report import diffusion_section
from .llm_sections import llm_sections
from .targets import is_reference, target_lines

__all__ = ["write_outputs", "markdown_table", "strict_json", "TABLE_METRICS"]

#: (metric key, column title, decimals) of the human tables.
TABLE_METRICS = (
    ("forget_acc", "Forget acc", 2),
    ("retain_acc", "Retain acc", 2),
    ("test_acc", "Test acc", 2),
    ("test_forget_acc", "Test acc (forgotten classes)", 2),
    ("mia_efficacy", "MIA-eff.", 2),
    ("loss_auc", "Loss-attack AUC", 2),
    ("ulira_auc", "U-LiRA AUC", 2),
    ("ulira_tpr_1fpr", "U-LiRA TPR@1%FPR", 2),
    ("rmia_auc", "RMIA AUC", 2),
    ("mia_nn_auc", "MIA-NN AUC", 2),
    ("forget_answer_acc", "Forget answer acc", 1),
    ("retain_answer_acc", "Retain answer acc", 1),
    ("world_answer_acc", "World answer acc", 1),
    ("forget_rouge", "Forget ROUGE-L", 3),
    ("retain_rouge", "Retain ROUGE-L", 3),
    ("forget_prob", "Forget prob", 3),
    ("verbmem_forget", "VerbMem", 3),
    ("model_utility", "Model utility", 3),
    ("forget_quality", "Forget quality", 3),
    ("mink_auc", "Min-K% AUC", 1),
    ("privleak", "PrivLeak", 1),
    ("relearn_before_acc", "Held-out forget acc", 1),
    ("relearn_answer_acc", "Relearn acc", 1),
    ("relearn_recovery", "Recovery", 2),
    ("relearn_benign_answer_acc", "Benign relearn acc", 1),
    ("relearn_benign_recovery", "Benign recovery", 2),
    ("target_recall", "Target recall", 1),
    ("closure_recall", "Closure recall", 1),
    ("unrelated_acc", "Unrelated acc", 1),
    ("rederivation_rate", "Re-derivation", 1),
    ("deep_recall", "Deep recall", 1),
    ("decoded_cosine", "Decoded cosine", 3),
    ("decoded_cosine_pinv", "Pinv cosine", 3),
    ("full_grad_evals", "Full grad evals", 0),
    ("fluency_ppl", "Fluency PPL", 1),
    ("challenge_score", "Challenge score", 3),
    ("mia_auc", "MIA AUC", 1),
    ("attack_success_rate", "Attack success", 1),
    ("feature_sensitivity", "Feature sensitivity", 3),
    ("misleading_test_acc", "Misleading test acc", 2),
    ("epsilon", "epsilon", 3),
    ("sigma", "sigma", None),
    ("sensitivity", "Sensitivity", None),
    ("residual_bound", "Residual bound", None),
    ("param_distance_to_oracle", "Distance to oracle", None),
    ("js_to_oracle", "JS to oracle", 4),
    ("base_min_class_acc", "Base min class acc", 1),
    ("forgotten_class_rate", "Forgotten class rate", 1),
    ("kept_class_acc", "Kept class acc", 1),
    ("min_kept_class_acc", "Min kept class acc", 1),
    ("forgotten_id_sim", "Forgotten id sim", 3),
    ("unrelated_id_sim_mean", "Unrelated id sim", 3),
    ("unrelated_id_sim_std", "Unrelated id sim std", 3),
    ("retained_id_sim", "Retained id sim", 3),
    ("retained_id_sim_vs_original", "Retained / original", 3),
    ("surrogate_mutual_sim", "Surrogate mutual sim", 3),
    ("frechet", "Frechet", 2),
    ("frechet_vs_original", "Frechet / original", 3),
    ("frechet_retained", "Frechet / original", 3),
    ("dimra_forgotten_class_rate", "After DiMRA: forgotten rate", 1),
    ("dimra_max_forgotten_class_rate", "DiMRA max forgotten rate", 1),
    ("dimra_kept_class_acc", "After DiMRA: kept acc", 1),
    ("avg_gap", "Avg.Gap", 2),
    ("seconds", "Seconds", None),
    ("train_state_mb", "Train state MB", None),
    ("peak_mem_mb", "Peak MB", None),
    ("time_vs_oracle", "Time / oracle", 3),
    ("grad_evals", "Grad evals", None),
    ("grad_evals_vs_oracle", "Grad evals / oracle", 3),
    ("model_transfers", "Transfers", None),
    ("transfers_vs_oracle", "Transfers / oracle", 3),
)


MISSING = "–"


def _value(d: dict | None, key: str) -> float | None:
    """``d[key]`` as a float, or None where it is absent, null or not finite."""
    v = None if d is None else d.get(key)
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        return None
    return float(v)


def strict_json(obj: Any) -> Any:
    """``obj`` with every float that is not finite (NaN, infinity) replaced by None.

    Mappings and sequences are converted recursively (tuples become lists, NumPy
    scalars Python numbers), so ``json.dumps(..., allow_nan=False)`` accepts it.
    """
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [strict_json(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _fmt(summary: dict, key: str, decimals: int | None) -> str:
    """Mean ± std with ``decimals`` places (None: three significant digits); ``–`` if missing."""
    mean = _value(summary["mean"], key)
    if mean is None:
        return MISSING
    spec = ".3g" if decimals is None else f".{decimals}f"
    if summary.get("n_seeds", 1) > 1:
        std = _value(summary.get("std"), key)
        return f"{mean:{spec}} ± {MISSING if std is None else format(std, spec)}"
    return f"{mean:{spec}}"


def _columns(results: dict) -> list[tuple[str, str, int]]:
    present = {k for s in results["summary"] for k in s["mean"]}
    return [c for c in TABLE_METRICS if c[0] in present]


def markdown_table(results: dict) -> str:
    cols = _columns(results)
    lines = ["| Method | " + " | ".join(c[1] for c in cols) + " |", "|---|" + "---|" * len(cols)]
    for s in results["summary"]:
        lines.append(f"| {s['method']} | " + " | ".join(_fmt(s, k, d) for k, _, d in cols) + " |")
    return "\n".join(lines)


def _point(s: dict, xk: str, yk: str) -> tuple[float, float, float | None, float | None] | None:
    """(x, y, x error, y error) of a summary row; None where x or y is missing."""
    m, sd = s["mean"], s.get("std", {})
    x, y = _value(m, xk), _value(m, yk)
    if x is None or y is None:
        return None
    return x, y, _value(sd, xk), _value(sd, yk)


def _marker(label: str) -> str:
    return {"original": "s", "retrain": "*", "oracle_noise": "D"}.get(label.split("@", 1)[0], "o")


def _scatter(ax, summ: list[dict], xk: str, yk: str, log_y: bool = False) -> None:
    """One point per summary row with its error bars; rows missing x or y are left out."""
    import matplotlib.pyplot as plt

    colors = plt.get_cmap("tab20")
    for i, s in enumerate(summ):
        p = _point(s, xk, yk)
        if p is None:
            continue
        x, y, xerr, yerr = p
        marker = _marker(s["method"])
        ax.errorbar(
            x,
            max(y, 1e-12) if log_y else y,
            xerr=xerr,
            yerr=None if log_y else yerr,
            fmt=marker,
            capsize=3,
            color=colors(i % 20),
            label=s["method"],
            markersize=9 if marker == "*" else 6,
        )


def _legend(ax) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7, ncol=2)


def _ablation_plots(results: dict, folder: Path) -> list[str]:
    """Targets still answered (directly and re-derived) against unrelated facts kept."""
    import matplotlib.pyplot as plt

    summ = results["summary"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6), sharex=True)
    for ax, yk, what in (
        (axes[0], "target_recall", "targets still answered (%)"),
        (axes[1], "rederivation_rate", "targets re-derived from stated premises (%)"),
    ):
        _scatter(ax, summ, "unrelated_acc", yk)
        ax.set_xlabel("unrelated facts still answered (%)")
        ax.set_ylabel(what)
        ax.grid(alpha=0.3)
    axes[0].set_title(results["scenario_name"])
    _legend(axes[1])
    fig.tight_layout()
    name = "targets_vs_unrelated.png"
    fig.savefig(folder / name, dpi=110)
    plt.close(fig)
    return [name]


def _generator_plots(results: dict, folder: Path) -> list[str]:
    """Forgotten identities' similarity (against the floor's band) and retained utility,
    against the count of forgotten identities."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4), sharex=True)
    by: dict[str, list] = {}
    for s in results["summary"]:
        label, _, tag = s["method"].partition("@n")
        if tag.isdigit():
            by.setdefault(label, []).append((int(tag), s["mean"]))
    for label, pts in by.items():
        pts.sort()
        xs = [n for n, _ in pts]
        for ax, key in ((axes[0], "forgotten_id_sim"), (axes[1], "retained_id_sim_vs_original")):
            ys = [m.get(key) for _, m in pts]
            if any(y is not None for y in ys):
                ax.plot(xs, ys, marker="o", label=label)
    floor = by.get("original", [])
    if floor:
        xs = [n for n, _ in floor]
        lo = [m["unrelated_id_sim_mean"] - m["unrelated_id_sim_std"] for _, m in floor]
        hi = [m["unrelated_id_sim_mean"] + m["unrelated_id_sim_std"] for _, m in floor]
        axes[0].fill_between(xs, lo, hi, color="grey", alpha=0.25, label="unrelated ± std")
    axes[1].axhline(0.95, color="k", lw=1, ls="--")
    axes[0].set_ylabel("forgotten identities' similarity to themselves")
    axes[1].set_ylabel("retained identity similarity / original's")
    for ax in axes:
        ax.set_xlabel("identities forgotten")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    axes[0].set_title(results["scenario_name"])
    fig.tight_layout()
    fig.savefig(folder / "identities_vs_count.png", dpi=110)
    plt.close(fig)
    return ["identities_vs_count.png"]


def _llm_plots(results: dict, folder: Path) -> list[str]:
    """Forget quality (log) against model utility; without an oracle (real facts), forget
    against retain answer accuracy."""
    import matplotlib.pyplot as plt

    summ = results["summary"]
    fq = any("forget_quality" in s["mean"] for s in summ)
    xk, yk = (
        ("model_utility", "forget_quality") if fq else ("retain_answer_acc", "forget_answer_acc")
    )
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    _scatter(ax, summ, xk, yk, log_y=fq)
    if fq:
        ax.axhline(0.05, color="k", lw=1, ls="--")
        ax.set_yscale("log")
        ax.set_xlabel("model utility (harmonic mean, higher is better)")
        ax.set_ylabel("forget quality (KS p-value vs oracle, log)")
        name = "forget_quality_vs_utility.png"
    else:
        ax.axhline(10, color="k", lw=1, ls="--")
        ax.set_xlabel("retained facts answered right (%)")
        ax.set_ylabel("forgotten facts answered right (%)")
        name = "forget_vs_retain_answers.png"
    ax.set_title(results["scenario_name"])
    ax.grid(alpha=0.3)
    _legend(ax)
    fig.tight_layout()
    fig.savefig(folder / name, dpi=110)
    plt.close(fig)
    return [name]


def _plots(results: dict, folder: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if results.get("kind") == "llm":
        return _llm_plots(results, folder)
    if results.get("kind") == "llm_ablation":
        return _ablation_plots(results, folder)
    if results.get("kind") == "diffusion":
        from .diffusion_report import diffusion_plots

        return diffusion_plots(results, folder)
    if results.get("kind") == "generator":
        return _generator_plots(results, folder)
    from .parts import growth_plot, has_growth

    names = growth_plot(results, folder) if has_growth(results) else []
    summ = results["summary"]
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    _scatter(ax, summ, "forget_acc", "test_acc")
    ax.set_xlabel("forget accuracy (%)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{results['scenario_name']}: forget vs test accuracy")
    ax.grid(alpha=0.3)
    _legend(ax)
    fig.tight_layout()
    fig.savefig(folder / "forget_vs_test.png", dpi=110)
    plt.close(fig)
    names.append("forget_vs_test.png")

    rows = [
        s for s in summ if s["method"] != "retrain" and _value(s["mean"], "avg_gap") is not None
    ]
    timed = [
        s
        for s in summ
        if not is_reference(s["method"]) and (_value(s["mean"], "time_vs_oracle") or 0) > 0
    ]
    fig, axes = plt.subplots(1, 2 if rows else 1, figsize=(10 if rows else 5.5, 4.2))
    axes = list(axes) if rows else [None, axes]
    if rows:
        axes[0].barh(
            [s["method"] for s in rows],
            [s["mean"]["avg_gap"] for s in rows],
            xerr=[_value(s.get("std"), "avg_gap") or 0.0 for s in rows],
            color="#4c72b0",
        )
        axes[0].set_xlabel("Avg.Gap to the oracle (points, lower is better)")
        axes[0].invert_yaxis()
    axes[1].barh(
        [s["method"] for s in timed], [s["mean"]["time_vs_oracle"] for s in timed], color="#dd8452"
    )
    axes[1].axvline(1.0, color="k", lw=1, ls="--")
    axes[1].set_xscale("log")
    axes[1].set_xlabel("wall time relative to retraining (log)")
    axes[1].invert_yaxis()
    fig.tight_layout()
    fig.savefig(folder / "gap_and_time.png", dpi=110)
    plt.close(fig)
    names.append("gap_and_time.png")
    return names


ABOUT = """Reference rows: `original` is the trained model untouched (doing nothing),
`retrain` is the oracle (retrained without the forget set, same seed), and
`oracle_noise` is the oracle retrained with another seed and scored against
it: the noise floor. Avg.Gap is the mean absolute difference to the oracle
over unlearning accuracy (100 - forget acc), retain, test accuracy and
MIA-efficacy. Seconds exclude evaluation."""


def _seconds(results: dict) -> str:
    total = _value(results, "total_seconds")
    return MISSING if total is None else f"{total:.0f} s"


def _run_how(results: dict) -> str:
    text = execution_text(results)
    return f"; {text}" if text else ""


def execution_text(results: dict) -> str:
    """How the run was spread: engine, worker processes, BLAS threads per process."""
    ex = results.get("execution")
    if not ex:
        return ""
    workers = ex.get("workers")
    return (
        f"engine `{ex.get('engine')}`, {workers} worker process{'es' if workers != 1 else ''}, "
        f"{ex.get('threads')} BLAS thread{'s' if ex.get('threads') != 1 else ''} per process"
    )


def _probe_section(results: dict) -> str:
    """Which forget questions the early stops read (never the ones that are scored)."""
    info = results.get("info") or {}
    seeds = [k for k in info if k.startswith("probe_questions_seed")]
    if not seeds:
        return ""
    body = "\n".join(
        f"- seed {k.removeprefix('probe_questions_seed')}: " + "; ".join(f"“{q}”" for q in info[k])
        for k in seeds
    )
    return (
        "## Early-stop probe\n\nMethods with `target_forget_acc` stop when these forget "
        "questions (and their paraphrases) are answered right at most that often. They are "
        "forgotten like the others but never scored: the forget metrics above are computed "
        f"on the other forget items.\n\n{body}\n\n"
    )


def parts_section(results: dict) -> str:
    """The by-class table (``forget: {each:}``) or the cost-growth slopes (``grow:``), with
    a heading for the full table that follows."""
    from .parts import class_table, growth_table, has_classes, has_growth

    if has_classes(results):
        return f"### By class\n\n{class_table(results)}\n\n### Every class and seed\n\n"
    if has_growth(results):
        return f"### Cost growth\n\n{growth_table(results)}\n\n### Every size\n\n"
    return ""


def _markdown(results: dict, images: list[str], targets: list[str]) -> str:
    hp = "\n".join(
        f"- `{label}` ({v['method']}): `{json.dumps(v['config'], sort_keys=True)}`"
        for label, v in results["methods"].items()
    )
    figures = "".join(f"![{n}]({n})\n" for n in images)
    judged = (
        "## Targets\n\nDeclared in the scenario's `targets:` block; judged on the means "
        "over seeds.\n\n" + "\n".join(targets) + "\n\n"
        if targets
        else ""
    )
    probes = _probe_section(results)
    parts = parts_section(results)
    lm = llm_sections(results) + diffusion_section(results)
    return f"""# {results["scenario_name"]}

{results["scenario"].get("description", "").strip()}

Request: {results["request"]}. Model: `{json.dumps(results["model_spec"], sort_keys=True)}`.
Seeds: {results["seeds"]} (mean ± sample standard deviation over seeds; {MISSING}: not measured).
Training recipe (original and oracle): `{json.dumps(results["train_recipe"], sort_keys=True)}`.

{results.get("about", ABOUT)}

{parts}{markdown_table(results)}

{figures}
{judged}{lm}{probes}## Hyperparameters

{hp}

Total wall time of the run: {_seconds(results)}{_run_how(results)}.
Versions: `{json.dumps(results["versions"], sort_keys=True)}`.
"""


def _html_parts(results: dict) -> str:
    """The by-class or cost-growth table of a run made of parts, as an HTML table."""
    text = parts_section(results)
    if not text:
        return ""
    table = _html_table([ln for ln in text.splitlines() if ln.startswith("|")])
    intro = next((ln for ln in text.splitlines() if ln and not ln.startswith(("|", "#"))), "")
    return f"<p>{html.escape(intro)}</p>\n{table}\n<p>Every row:</p>\n"


def _html_table(lines: list[str]) -> str:
    """The lines of one Markdown table (header, separator, rows) as an HTML table."""
    out = []
    for i, ln in enumerate(lines):
        if i == 1:
            continue  # the Markdown separator line
        cells = [c.strip() for c in ln.strip().strip("|").split("|")]
        tag = "th" if i == 0 else "td"
        out.append("<tr>" + "".join(f"<{tag}>{html.escape(c)}</{tag}>" for c in cells) + "</tr>")
    return f"<table>{''.join(out)}</table>"


def _md_to_html(text: str) -> str:
    """The few Markdown shapes the family sections use (## headings, tables, bullets,
    paragraphs) as HTML."""
    out: list[str] = []
    table: list[str] = []

    def flush() -> None:
        if table:
            out.append(_html_table(table))
            table.clear()

    for ln in text.splitlines():
        if ln.startswith("|"):
            table.append(ln)
            continue
        flush()
        if ln.startswith("## "):
            out.append(f"<h2>{html.escape(ln[3:])}</h2>")
        elif ln.startswith("- "):
            out.append(f"<p>&bull; {html.escape(ln[2:])}</p>")
        elif ln.strip():
            out.append(f"<p>{html.escape(ln)}</p>")
    flush()
    return "\n".join(out) + ("\n" if out else "")


def _html(results: dict, images: list[str], folder: Path, targets: list[str]) -> str:
    cols = _columns(results)
    head = "".join(f"<th>{html.escape(c[1])}</th>" for c in cols)
    body = ""
    for s in results["summary"]:
        cls = ' class="ref"' if is_reference(s["method"]) else ""
        body += (
            f"<tr{cls}><td>{html.escape(s['method'])}</td>"
            + "".join(f"<td>{html.escape(_fmt(s, k, d))}</td>" for k, _, d in cols)
            + "</tr>\n"
        )
    imgs = "".join(
        f'<img alt="{n}" src="data:image/png;base64,'
        f'{base64.b64encode((folder / n).read_bytes()).decode()}">\n'
        for n in images
    )
    judged = (
        "<h2>Targets</h2>\n<ul>\n"
        + "".join(f"<li>{html.escape(t.removeprefix('- '))}</li>\n" for t in targets)
        + "</ul>\n"
        if targets
        else ""
    )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(results["scenario_name"])}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1100px}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}
td:first-child{{text-align:left}}tr.ref{{background:#f3f3f3}}img{{max-width:100%}}</style>
</head><body>
<h1>{html.escape(results["scenario_name"])}</h1>
<p>{html.escape(results["scenario"].get("description", ""))}</p>
<p>Request: {html.escape(results["request"])}. Seeds: {results["seeds"]}
(mean &plusmn; sample standard deviation; {MISSING}: not measured).
{html.escape(_run_how(results).removeprefix("; "))}</p>
{_html_parts(results)}<table><tr><th>Method</th>{head}</tr>
{body}</table>
{judged}{_md_to_html(llm_sections(results) + diffusion_section(results))}{imgs}
<pre>{html.escape(json.dumps(results["methods"], indent=1, sort_keys=True))}</pre>
</body></html>
"""


# ---------------------------------------------------------------- the output folder, as one unit

_KINDS = ("tmp", "trash", "del")
_TOKEN = r"[0-9]{20}_[0-9a-f]{6}"


def _sibling(out: Path, kind: str) -> Path:
    """A fresh hidden name beside ``out``: ``.NAME.KIND-<time ns>_<random>`` (sorts by time)."""
    return out.parent / f".{out.name}.{kind}-{time.time_ns():020d}_{secrets.token_hex(3)}"


def _leftovers(out: Path) -> dict[str, list[Path]]:
    """The hidden folders earlier writes of ``out`` left behind, by kind."""
    pattern = re.compile(rf"\.{re.escape(out.name)}\.({'|'.join(_KINDS)})-{_TOKEN}")
    found: dict[str, list[Path]] = {k: [] for k in _KINDS}
    for entry in os.scandir(out.parent):
        m = pattern.fullmatch(entry.name)
        if m:
            found[m.group(1)].append(Path(entry.path))
    return found


def _discard(out: Path, path: Path) -> None:
    """Remove a folder: first renamed to a ``del`` name (never restored), then deleted, so a
    kill half-way through never leaves a partial folder under a name that may be restored."""
    doomed = _sibling(out, "del")
    os.rename(path, doomed)
    shutil.rmtree(doomed)


def _recover(out: Path) -> None:
    """Undo what killed writes of ``out`` left: put back an old folder a kill left under its
    trash name (when ``out`` is missing), then remove every hidden leftover of ``out``."""
    left = _leftovers(out)
    if left["trash"] and not os.path.lexists(out):
        newest = max(left["trash"], key=lambda p: p.name)
        os.rename(newest, out)
        left["trash"].remove(newest)
    for path in left["tmp"] + left["trash"]:
        _discard(out, path)
    for path in left["del"]:
        shutil.rmtree(path)


_AT_FDCWD, _RENAME_EXCHANGE = -100, 2
_UNSUPPORTED = {errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP}


def _renameat2():
    if not sys.platform.startswith("linux"):
        return None
    fn = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if fn is not None:
        fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
        fn.restype = ctypes.c_int
    return fn


def _exchange(a: Path, b: Path) -> bool:
    """Swap the folders ``a`` and ``b`` in one step; False where the system cannot."""
    fn = _renameat2()
    if fn is None:
        return False
    rc = fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in _UNSUPPORTED:
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


def _swap(new: Path, out: Path) -> None:
    """Put the complete folder ``new`` in the place of ``out``."""
    if not os.path.lexists(out):
        os.rename(new, out)
    elif _exchange(new, out):
        _discard(out, new)  # ``new`` now holds the old folder
    else:
        trash = _sibling(out, "trash")
        os.rename(out, trash)
        try:
            os.rename(new, out)
        except BaseException:
            os.rename(trash, out)
            raise
        _discard(out, trash)


@contextmanager
def _turn(folder: Path) -> Iterator[None]:
    """Writers of one parent folder take turns (an exclusive flock on it, where there is one)."""
    try:
        import fcntl
    except ImportError:  # no flock (Windows): writers are not serialised
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def write_outputs(results: dict, out_dir: str | Path) -> Path:
    """Write all outputs of ``results`` into ``out_dir``, replacing it as one unit.

    ``out_dir`` and its parents are created if needed; an existing ``out_dir`` is replaced
    as a whole (files in it that this run does not write are gone afterwards).
    """
    out = Path(out_dir)
    if out.name in ("", ".", ".."):
        raise UnlearnError(f"output folder {str(out_dir)!r} has no name of its own")
    if out.exists() and not out.is_dir():
        raise UnlearnError(f"output path {out} exists and is not a folder")
    clean = strict_json(results)
    text = json.dumps(clean, indent=1, allow_nan=False)
    targets = target_lines(clean)  # a malformed targets block fails here, before any writing

    def write(tmp: Path) -> None:
        (tmp / "results.json").write_text(text, encoding="utf-8")
        images = _plots(clean, tmp)
        (tmp / "report.md").write_text(_markdown(clean, images, targets), encoding="utf-8")
        (tmp / "report.html").write_text(_html(clean, images, tmp, targets), encoding="utf-8")

    return write_folder(out, write)


def write_folder(out: Path, write: Callable[[Path], None]) -> Path:
    """Fill a new folder with ``write(folder)`` beside ``out``, then put it in the place of
    ``out`` as one unit (a kill leaves the old folder or the new, never a mix; leftovers of
    an interrupted write are removed on the next)."""
    out = Path(out)
    parent = out.parent
    parent.mkdir(parents=True, exist_ok=True)
    with _turn(parent):
        _recover(out)
        tmp = _sibling(out, "tmp")
        tmp.mkdir()
        try:
            write(tmp)
            _swap(tmp, out)
        except BaseException as exc:
            if tmp.exists():
                try:
                    shutil.rmtree(tmp)
                except OSError as cleanup:
                    exc.add_note(f"(the next write removes {tmp}: {cleanup})")
            raise
    return out
