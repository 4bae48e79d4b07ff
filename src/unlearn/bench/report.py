"""Write a run's results: ``results.json``, ``report.md``, ``report.html`` and plots.

Everything is written into a temporary folder beside the output folder and
moved into place only when all of it exists, so a failed run leaves nothing
partial behind.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
import shutil
import tempfile
from pathlib import Path

from ..errors import UnlearnError

__all__ = ["write_outputs", "markdown_table", "TABLE_METRICS"]

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
    ("fluency_ppl", "Fluency PPL", 1),
    ("challenge_score", "Challenge score", 3),
    ("epsilon", "epsilon", 3),
    ("residual_bound", "Residual bound", None),
    ("param_distance_to_oracle", "Distance to oracle", None),
    ("js_to_oracle", "JS to oracle", 4),
    ("avg_gap", "Avg.Gap", 2),
    ("seconds", "Seconds", None),
    ("train_state_mb", "Train state MB", None),
    ("peak_mem_mb", "Peak MB", None),
    ("time_vs_oracle", "Time / oracle", 3),
)


REFERENCE_ROWS = ("original", "retrain", "oracle_noise")


def is_reference(label: str) -> bool:
    """Reference rows, also when a label carries a suffix (``retrain@5%``)."""
    return label.split("@", 1)[0] in REFERENCE_ROWS


def _fmt(summary: dict, key: str, decimals: int | None) -> str:
    """Mean ± std with ``decimals`` places (None: three significant digits)."""
    if key not in summary["mean"]:
        return "-"
    mean, std = summary["mean"][key], summary["std"].get(key, 0.0)
    if not math.isfinite(mean):
        return "missing"
    spec = ".3g" if decimals is None else f".{decimals}f"
    if summary.get("n_seeds", 1) > 1:
        return f"{mean:{spec}} ± {std:{spec}}"
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
    colors = plt.get_cmap("tab20")
    for i, s in enumerate(summ):
        m, sd = s["mean"], s["std"]
        if xk not in m or yk not in m:
            continue
        marker = {"original": "s", "retrain": "*", "oracle_noise": "D"}.get(s["method"], "o")
        ax.errorbar(
            m[xk],
            max(m[yk], 1e-12) if fq else m[yk],
            xerr=sd[xk],
            yerr=None if fq else sd[yk],
            fmt=marker,
            capsize=3,
            color=colors(i % 20),
            label=s["method"],
            markersize=9 if marker == "*" else 6,
        )
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
    ax.legend(fontsize=7, ncol=2)
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
    names = []
    summ = results["summary"]
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    colors = plt.get_cmap("tab20")
    for i, s in enumerate(summ):
        m, sd = s["mean"], s["std"]
        marker = {"original": "s", "retrain": "*", "oracle_noise": "D"}.get(
            s["method"].split("@", 1)[0], "o"
        )
        ax.errorbar(
            m["forget_acc"],
            m["test_acc"],
            xerr=sd["forget_acc"],
            yerr=sd["test_acc"],
            fmt=marker,
            capsize=3,
            color=colors(i % 20),
            label=s["method"],
            markersize=9 if marker == "*" else 6,
        )
    ax.set_xlabel("forget accuracy (%)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{results['scenario_name']}: forget vs test accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(folder / "forget_vs_test.png", dpi=110)
    plt.close(fig)
    names.append("forget_vs_test.png")

    rows = [s for s in summ if s["method"] != "retrain" and "avg_gap" in s["mean"]]
    timed = [s for s in summ if not is_reference(s["method"]) and "time_vs_oracle" in s["mean"]]
    fig, axes = plt.subplots(1, 2 if rows else 1, figsize=(10 if rows else 5.5, 4.2))
    axes = list(axes) if rows else [None, axes]
    if rows:
        axes[0].barh(
            [s["method"] for s in rows],
            [s["mean"]["avg_gap"] for s in rows],
            xerr=[s["std"]["avg_gap"] for s in rows],
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


def _markdown(results: dict, images: list[str]) -> str:
    hp = "\n".join(
        f"- `{label}` ({v['method']}): `{json.dumps(v['config'], sort_keys=True)}`"
        for label, v in results["methods"].items()
    )
    figures = "".join(f"![{n}]({n})\n" for n in images)
    return f"""# {results["scenario_name"]}

{results["scenario"].get("description", "").strip()}

Request: {results["request"]}. Model: `{json.dumps(results["model_spec"], sort_keys=True)}`.
Seeds: {results["seeds"]} (mean ± sample standard deviation over seeds).
Training recipe (original and oracle): `{json.dumps(results["train_recipe"], sort_keys=True)}`.

{results.get("about", ABOUT)}

{markdown_table(results)}

{figures}
## Hyperparameters

{hp}

Total wall time of the run: {results["total_seconds"]:.0f} s.
Versions: `{json.dumps(results["versions"], sort_keys=True)}`.
"""


def _html(results: dict, images: list[str], folder: Path) -> str:
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
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(results["scenario_name"])}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1100px}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}
td:first-child{{text-align:left}}tr.ref{{background:#f3f3f3}}img{{max-width:100%}}</style>
</head><body>
<h1>{html.escape(results["scenario_name"])}</h1>
<p>{html.escape(results["scenario"].get("description", ""))}</p>
<p>Request: {html.escape(results["request"])}. Seeds: {results["seeds"]}
(mean &plusmn; sample standard deviation).</p>
<table><tr><th>Method</th>{head}</tr>
{body}</table>
{imgs}
<pre>{html.escape(json.dumps(results["methods"], indent=1, sort_keys=True))}</pre>
</body></html>
"""


def write_outputs(results: dict, out_dir: str | Path) -> Path:
    """Write all outputs of ``results`` into ``out_dir`` (created if needed), atomically."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UnlearnError(f"output path {out} exists and is not a folder")
    parent = out.parent if str(out.parent) else Path(".")
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=parent))
    try:
        (tmp / "results.json").write_text(json.dumps(results, indent=1, sort_keys=False))
        images = _plots(results, tmp)
        (tmp / "report.md").write_text(_markdown(results, images))
        (tmp / "report.html").write_text(_html(results, images, tmp))
        if not out.exists():
            os.replace(tmp, out)
        else:
            for f in tmp.iterdir():
                os.replace(f, out / f.name)
            shutil.rmtree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
