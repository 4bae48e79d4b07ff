"""The metric registry: every metric a benchmark row can carry, and what it needs.

A metric declares the families that compute it, what its computation needs
(``outputs`` of the model on the forget/retain/test data, the ``oracle``,
``reference`` models trained for an attack, ``holdout`` items never trained on,
``generation`` of answers, an ``attack`` that fine-tunes copies of the model, or the
run's ``cost``), its unit and which direction
is good (``higher``, ``lower``, ``oracle``: closest to the oracle's value, or
``none`` for a descriptive quantity). The one runner checks every row against
the registry, so a family cannot emit an undeclared metric, and the reports and
docs read units and directions from here. A value that cannot be computed for a
row is ``None`` (shown as missing), never a made-up number.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..errors import UnlearnError

__all__ = ["MetricSpec", "METRICS", "register_metric", "declare_for", "check_rows", "NEEDS"]

NEEDS = ("outputs", "oracle", "reference", "holdout", "generation", "attack", "cost")


@dataclass(frozen=True)
class MetricSpec:
    name: str
    families: tuple[str, ...]
    needs: tuple[str, ...]
    unit: str
    better: str
    about: str

    def __post_init__(self) -> None:
        bad = [n for n in self.needs if n not in NEEDS]
        if bad or self.better not in ("higher", "lower", "oracle", "none"):
            raise ValueError(f"metric {self.name}: bad needs {bad} or direction {self.better!r}")


METRICS: dict[str, MetricSpec] = {}


def register_metric(spec: MetricSpec) -> MetricSpec:
    METRICS[spec.name] = spec
    return spec


def declare_for(family: str, *names: str) -> None:
    """Declare that a (new) family also reports these registered metrics."""
    for name in names:
        spec = METRICS[name]
        if family not in spec.families:
            METRICS[name] = dataclasses.replace(spec, families=(*spec.families, family))


def _add(name, families, needs, unit, better, about) -> None:
    register_metric(MetricSpec(name, tuple(families), tuple(needs), unit, better, about))


CLS, LLM, CVX = "classifier", "causal_lm", "convex"
ALL = (CLS, LLM, CVX)

# -- cost (every family) ----------------------------------------------------------------
_add("seconds", ALL, ["cost"], "s", "lower", "wall time of the run itself")
_add("peak_mem_mb", ALL, ["cost"], "MB", "lower", "peak resident growth above the baseline")
_add("baseline_mem_mb", ALL, ["cost"], "MB", "none", "resident memory when the run started")
_add("peak_cuda_mb", ALL, ["cost"], "MB", "lower", "CUDA allocator peak")
_add("train_state_mb", ALL, ["cost"], "MB", "lower", "gradients + optimizer state")
_add("steps", ALL, ["cost"], "", "none", "optimiser steps (or Newton steps)")
_add("time_vs_oracle", ALL, ["cost", "oracle"], "ratio", "lower", "seconds / oracle's seconds")
_add("n_train", ALL, ["cost"], "", "none", "training-set size of the run (cost growth)")
_add("n_forget", ALL, ["cost"], "", "none", "forget-set size of the run (cost growth)")

# -- classifiers ------------------------------------------------------------------------
for key, about in [
    ("forget_acc", "accuracy on the forget set"),
    ("retain_acc", "accuracy on the retain set"),
    ("test_acc", "accuracy on the test set (remaining classes for class requests)"),
    ("unlearn_acc", "UA = 100 - forget accuracy"),
    ("test_forget_acc", "accuracy on the forgotten classes' test samples"),
]:
    _add(key, (CLS, CVX) if key != "unlearn_acc" else (CLS,), ["outputs"], "%", "oracle", about)
_add("mia_efficacy", [CLS], ["outputs"], "%", "oracle", "SalUn's SVC MIA-efficacy")
_add("loss_auc", [CLS, LLM], ["outputs"], "%", "oracle", "loss-threshold attack ROC-AUC")
_add("js_to_oracle", [CLS], ["outputs", "oracle"], "bits", "lower", "JS divergence to the oracle")
_add("avg_gap", [CLS], ["outputs", "oracle"], "points", "lower", "mean |UA, RA, TA, MIA - oracle|")
_add("ulira_auc", [CLS], ["reference"], "%", "oracle", "U-LiRA AUC (forget vs test)")
_add("rmia_auc", [CLS], ["reference"], "%", "oracle", "RMIA AUC (forget vs test)")
_add("ulira_tpr_1fpr", [CLS], ["reference"], "%", "oracle", "U-LiRA TPR at 1 % FPR")
_add("rmia_tpr_1fpr", [CLS], ["reference"], "%", "oracle", "RMIA TPR at 1 % FPR")
_add("mia_nn_auc", [CLS], ["reference"], "%", "oracle", "MIA-NN AUC on the forgotten class")
_add(
    "forget_quality",
    [CLS, LLM],
    ["reference", "oracle"],
    "p-value / score",
    "higher",
    "LLM: TOFU KS p-value vs the oracle; classifier: the NeurIPS 2023 challenge's",
)
_add("challenge_score", [CLS], ["reference"], "", "higher", "NeurIPS 2023 challenge score")
_add(
    "feature_sensitivity",
    [CLS],
    ["outputs"],
    "",
    "lower",
    "Ferrari: mean norm of the output change per unit norm of noise on the features",
)
_add(
    "attack_success_rate",
    [CLS],
    ["outputs"],
    "%",
    "lower",
    "triggered inputs not of the target class that are classified as the target",
)

# -- language models --------------------------------------------------------------------
for split in ("forget", "retain", "world"):
    good = "lower" if split == "forget" else "higher"
    _add(f"{split}_prob", [LLM], ["outputs"], "", good, f"TOFU probability, {split} set")
    _add(f"{split}_rouge", [LLM], ["generation"], "", good, f"ROUGE-L recall, {split} set")
    _add(f"{split}_answer_acc", [LLM], ["generation"], "%", good, f"answers right, {split} set")
    _add(f"{split}_truth_ratio", [LLM], ["outputs"], "", "higher", f"TOFU truth ratio, {split}")
_add("model_utility", [LLM], ["outputs", "generation"], "", "higher", "TOFU model utility")
_add("verbmem_forget", [LLM], ["generation"], "", "lower", "MUSE VerbMem on the forget answers")
for key, about in [
    ("zlib_auc", "zlib-ratio attack AUC"),
    ("mink_auc", "Min-K% attack AUC"),
    ("minkpp_auc", "Min-K%++ attack AUC"),
]:
    _add(key, [LLM], ["outputs", "holdout"], "%", "oracle", about)
_add("privleak", [LLM], ["outputs", "holdout", "oracle"], "%", "oracle", "MUSE PrivLeak")
_add("fluency_ppl", [LLM], ["outputs"], "", "lower", "perplexity on held-out prose")
_add("decoded_cosine", [LLM], [], "", "higher", "R2F: median decoded-vs-true gradient cosine")
_add("decoded_cosine_pinv", [LLM], [], "", "higher", "R2F: the same for the pseudo-inverse")
_add("full_grad_evals", [LLM], ["cost"], "", "lower", "R2F: full weight gradients on the target")
_add(
    "relearn_before_acc",
    [LLM],
    ["generation"],
    "%",
    "lower",
    "held-out forget answers, before the relearning attack",
)
_add(
    "relearn_answer_acc",
    [LLM],
    ["generation", "attack"],
    "%",
    "lower",
    "held-out forget answers after the relearning attack",
)
_add(
    "relearn_recovery",
    [LLM],
    ["generation", "attack"],
    "",
    "lower",
    "share of what unlearning removed that the attack brings back",
)
_add(
    "relearn_benign_answer_acc",
    [LLM],
    ["generation", "attack"],
    "%",
    "lower",
    "forget answers after fine-tuning on 10 unrelated pairs",
)
_add(
    "relearn_benign_recovery",
    [LLM],
    ["generation", "attack"],
    "",
    "lower",
    "recovery after the benign fine-tuning",
)

# -- unlearning as ablation (kind: llm_ablation) ---------------------------------------
_add("target_recall", [LLM], ["generation"], "%", "lower", "target facts still answered")
_add(
    "closure_recall", [LLM], ["generation"], "%", "lower", "facts the targets follow from, answered"
)
_add("unrelated_acc", [LLM], ["generation"], "%", "higher", "unrelated facts still answered")
_add(
    "rederivation_rate",
    [LLM],
    ["generation"],
    "%",
    "lower",
    "targets answered with their premises stated in the prompt",
)
_add("deep_recall", [LLM], ["generation"], "%", "higher", "Wu et al.'s recall, smallest set")

# -- certified removal ------------------------------------------------------------------
_add("delta", [CVX], [], "", "none", "the certificate's delta")
_add("epsilon", [CVX], ["cost"], "", "lower", "epsilon certified at delta")
_add("residual_bound", [CVX], [], "", "lower", "accumulated gradient-residual bound")
_add("grad_residual_norm", [CVX], [], "", "lower", "measured gradient residual")
_add("data_independent_bound", [CVX], [], "", "lower", "worst-case residual bound")
_add("param_distance_to_oracle", [CVX], ["oracle"], "", "lower", "||w - w_oracle||")
_add("retrained", [CVX], [], "", "none", "1 where the budget was spent and the model retrained")
_add("refresh_seconds", [CVX], ["cost"], "s", "lower", "Hessian cache refresh after a removal")
_add(
    "time_vs_oracle_with_refresh",
    [CVX],
    ["cost", "oracle"],
    "ratio",
    "lower",
    "(removal + refresh) / oracle seconds",
)

# -- federations (kind: federated) -------------------------------------------------------
FED = "federated"
_add("mia_auc", [FED], ["outputs"], "%", "oracle", "loss attack AUC, deleted client vs test")
_add("grad_evals", [FED], ["cost"], "", "lower", "per-example gradient evaluations")
_add("model_transfers", [FED], ["cost"], "", "lower", "parameter vectors sent over a link")
_add("grad_evals_vs_oracle", [FED], ["cost", "oracle"], "ratio", "lower", "grad_evals / oracle's")
_add("transfers_vs_oracle", [FED], ["cost", "oracle"], "ratio", "lower", "transfers / oracle's")
_add("consensus_distance", [FED], ["outputs"], "", "none", "nodes' mean sq. distance to mean")
_add("sigma", [FED], [], "", "none", "Gaussian noise scale of the certificate")
_add("sensitivity", [FED], [], "", "lower", "certified distance to the retained optimum")
_add("measured_residual", [FED], [], "", "lower", "retained gradient norm the bound covers")
_add("distributed_passes", [FED], ["cost"], "", "lower", "passes over the clients' data")
# the shared metrics a federation's rows carry as well
declare_for(
    FED,
    "seconds",
    "peak_mem_mb",
    "baseline_mem_mb",
    "peak_cuda_mb",
    "train_state_mb",
    "steps",
    "time_vs_oracle",
    "test_acc",
    "retain_acc",
    "forget_acc",
    "epsilon",
    "delta",
    "residual_bound",
    "param_distance_to_oracle",
    "feature_sensitivity",
    "attack_success_rate",
)

_add("influence_share", [FED], [], "", "none", "D-SGD: rounds / nodes, the even spread")
_add(
    "influence_max_deviation",
    [FED],
    [],
    "",
    "none",
    "D-SGD: max over nodes of |unrolled weight of the deleted client's steps - share|",
)
_add("influence_mixing_bound", [FED], [], "", "none", "D-SGD: the spectral bound on it")
_add(
    "misleading_test_acc",
    [FED],
    ["outputs"],
    "%",
    "higher",
    "test accuracy with the spurious feature set to another class's code",
)


def check_rows(rows: list[dict], family: str) -> None:
    """Raise if a row carries a metric the registry does not declare for ``family``."""
    for row in rows:
        for key in row["metrics"]:
            spec = METRICS.get(key)
            if spec is None or family not in spec.families:
                raise UnlearnError(
                    f"row {row['method']!r} carries metric {key!r}, which the metric registry "
                    f"does not declare for {family} (unlearn/metrics/registry.py)"
                )


# -- diffusion models (kind: diffusion) ----------------------------------------------------
DIF = "diffusion"
_add("forgotten_class_rate", [DIF], ["generation"], "%", "lower",
     "samples asked for the forgotten class that the judge labels as it")  # fmt: skip
_add("kept_class_acc", [DIF], ["generation"], "%", "higher",
     "mean over kept classes of samples the judge labels as the asked class")  # fmt: skip
_add("min_kept_class_acc", [DIF], ["generation"], "%", "higher",
     "the lowest kept class's recognition rate")  # fmt: skip
_add("base_min_class_acc", [DIF], ["generation"], "%", "higher",
     "the seed's base model: its lowest per-class recognition rate, every class")  # fmt: skip
_add("frechet", [DIF], ["generation"], "", "lower",
     "Frechet distance, judge features, kept-class samples vs real kept-class images")  # fmt: skip
_add("frechet_retained", [DIF], ["generation"], "ratio", "lower",
     "frechet / the original model's (same samples' noise)")  # fmt: skip
_add("dimra_forgotten_class_rate", [DIF], ["generation", "attack"], "%", "lower",
     "forgotten_class_rate after the DiMRA fine-tuning attack (its last step)")  # fmt: skip
_add("dimra_max_forgotten_class_rate", [DIF], ["generation", "attack"], "%", "lower",
     "the highest forgotten_class_rate over the attack's checkpoints")  # fmt: skip
_add("dimra_kept_class_acc", [DIF], ["generation", "attack"], "%", "higher",
     "kept_class_acc after the DiMRA attack")  # fmt: skip
GEN = "generator"
for key, unit, better, about in [
    ("forgotten_id_sim", "", "lower", "cosine: forgotten identities' samples vs their images"),
    ("unrelated_id_sim_mean", "", "none", "the floor: other identities' samples vs theirs"),
    ("unrelated_id_sim_std", "", "none", "spread of the floor"),
    ("retained_id_sim", "", "higher", "cosine: kept identities' samples vs their images"),
    ("retained_id_sim_vs_original", "ratio", "higher", "retained_id_sim / the original's"),
    ("frechet_vs_original", "ratio", "lower", "frechet / the original's"),
    ("surrogate_mutual_sim", "", "lower", "cosine between forgotten identities' samples"),
    ("forgotten_above_floor", "", "lower", "forgotten_id_sim - (floor mean + 1 sd); <= 0 is in"),
    ("n_forgotten", "", "none", "identities forgotten so far"),
]:
    _add(key, [GEN], ["generation"], unit, better, about)
declare_for(
    GEN, "seconds", "peak_mem_mb", "baseline_mem_mb", "peak_cuda_mb", "train_state_mb", "steps",
    "time_vs_oracle", "frechet",
)  # fmt: skip
declare_for(
    DIF, "seconds", "peak_mem_mb", "baseline_mem_mb", "peak_cuda_mb", "train_state_mb", "steps",
    "time_vs_oracle",
)  # fmt: skip

# -- vision-language models (kind: vlm), MMUBench's measures ---------------------------------
VLM = "vlm"
for key, better, about in [
    ("efficacy", "higher", "answers on the training image that do not name the concept"),
    ("generality", "lower", "the concept's held-out images on which it is still named"),
    ("specificity", "higher", "kept concepts named right from held-out images"),
    ("facts_by_name_acc", "higher", "the concept's facts asked by name, answered with the key"),
    ("diversity", "higher", "distinct tokens among the answers on the concept's images"),
    ("base_naming_acc", "higher", "the seed's original: concepts named from held-out images"),
]:
    _add(key, [VLM], ["generation"], "%", better, about)
declare_for(
    VLM, "seconds", "peak_mem_mb", "baseline_mem_mb", "peak_cuda_mb", "train_state_mb", "steps",
    "time_vs_oracle", "mia_auc", "fluency_ppl",
)  # fmt: skip
