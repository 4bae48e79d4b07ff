"""How the ledger loads, unlearns, retrains and checks a registered model.

A model is registered with the scenario file that trained it (``unlearn train``
writes such a checkpoint): the scenario names the data, the architecture and the
training recipe the oracle retrains with. Sample ids are positions in that
scenario's training set, and stay so however many requests removed data before.

Classifier scenarios are served here, causal language models fine-tuned by a
fictitious-facts scenario in :mod:`unlearn.ledger.lm`, federations in
:mod:`unlearn.ledger.federated` and identity generators in :mod:`unlearn.ledger.generator`;
diffusion and vision-language models have their own set-ups in the benchmark runner only
and are refused with a message saying so.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import LedgerError, UnlearnError
from ..requests import request_from_dict

__all__ = [
    "ClassifierHandler",
    "handler_for",
    "scenario_family",
    "file_sha256",
    "selector_request",
    "SELECTORS",
]

#: the selector keys a request may use, and what each names
SELECTORS = {
    "samples": "sample ids (positions in the training set)",
    "class": "every remaining sample of these classes",
    "group": "every remaining sample of these groups ({by: client|person|..., ids: [...]})",
}


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def registered_scenario(registration: dict) -> Path:
    """The registration's scenario file, refused when missing or changed since."""
    scen = registration["scenario"]
    path = Path(scen["path"])
    if not path.is_file():
        raise LedgerError(f"the model's scenario file {path} does not exist")
    if file_sha256(path) != scen["sha256"]:
        raise LedgerError(
            f"the scenario file {path} changed since the model was registered "
            f"(sha256 {file_sha256(path)[:16]}..., registered {scen['sha256'][:16]}...)"
        )
    return path


def check_data_digest(registration: dict, digest: str, path: Path) -> str:
    """``digest`` of the scenario's training data, refused when it is not the registered one."""
    if "data_sha256" in registration and digest != registration["data_sha256"]:
        raise LedgerError(
            f"the training data of {path} is not what the model was registered with "
            f"(sha256 {digest[:16]}..., registered {registration['data_sha256'][:16]}...)"
        )
    return digest


def check_sample_range(ids, n: int) -> None:
    """Refuse sample ids outside a training set of ``n`` samples."""
    bad = [i for i in ids if not 0 <= i < n]
    if bad:
        raise LedgerError(f"sample id {bad[0]} is outside the training set (0..{n - 1})")


def check_classes(classes, k: int) -> None:
    bad = [c for c in classes if not 0 <= c < k]
    if bad:
        raise LedgerError(f"class {bad[0]} is not one of the model's {k} classes")


def not_removed(ids, removed: set[int]) -> list[int]:
    """``ids`` as a list, refused when an earlier request removed any of them."""
    gone = sorted(set(ids) & removed)
    if gone:
        raise LedgerError(
            f"sample {gone[0]} was already removed by an earlier request"
            + (f" ({len(gone)} of the {len(ids)} were)" if len(gone) > 1 else "")
        )
    return list(ids)


def _ints(values: Any, what: str) -> list[int]:
    if not isinstance(values, list | tuple) or not values:
        raise LedgerError(f"{what} must be a non-empty list of integers")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int | np.integer):
            raise LedgerError(f"{what} must hold integers, got {v!r}")
        out.append(int(v))
    if len(set(out)) != len(out):
        raise LedgerError(f"{what} holds duplicates")
    return out


def selector_request(selector: Any) -> dict:
    """Check a selector mapping (one of :data:`SELECTORS`) and return it normalised."""
    if not isinstance(selector, dict) or len(selector) != 1:
        raise LedgerError(
            "a selector names exactly one of "
            + ", ".join(f"{k} ({v})" for k, v in SELECTORS.items())
            + f"; got {selector!r}"
        )
    ((key, value),) = selector.items()
    if key == "samples":
        return {"samples": sorted(_ints(value, "selector 'samples'"))}
    if key == "class":
        return {"class": sorted(_ints(value if isinstance(value, list) else [value], "class"))}
    if key == "group":
        if not isinstance(value, dict) or set(value) != {"by", "ids"}:
            raise LedgerError("selector 'group' must be {by: KIND, ids: [...]}")
        ids = value["ids"] if isinstance(value["ids"], list) else [value["ids"]]
        if not ids:
            raise LedgerError("selector 'group' needs at least one id")
        return {"group": {"by": str(value["by"]), "ids": list(ids)}}
    raise LedgerError(f"unknown selector {key!r}: expected one of {', '.join(SELECTORS)}")


class ClassifierHandler:
    """A classifier trained by a classifier scenario (its data, model spec and recipe)."""

    family = "classifier"
    #: what ``method: auto`` runs, per selector kind
    auto_methods = {"samples": "neggrad_plus", "class": "trw", "group": "neggrad_plus"}

    def __init__(self, registration: dict):
        from ..bench.scenario import load_scenario, model_spec
        from ..data import load_dataset
        from ..tasks import ClassifierTask

        path = registered_scenario(registration)
        self.scenario = load_scenario(path)
        self.train, self.test = load_dataset(self.scenario.data)
        digest = data_digest(self.train)
        self.data_sha256 = check_data_digest(registration, digest, path)
        self.spec = model_spec(self.scenario, self.train)
        self.seed = int(registration.get("seed", 0))
        self.task = ClassifierTask(self.train.num_classes, self.scenario.device)

    # -- files -----------------------------------------------------------------------
    def load(self, path: str | Path) -> torch.nn.Module:
        from ..io import load_model
        from ..models import build_model

        model = build_model(self.spec, seed=0)
        return load_model(model, path, self.spec)

    def save(self, model: torch.nn.Module, path: str | Path) -> None:
        from ..io import save_model

        save_model(model, path, self.spec)

    # -- requests ----------------------------------------------------------------------
    def check_selector(self, selector: dict) -> None:
        """Refuse a selector that cannot name training data of this model, whatever
        other requests remove first (sample ids out of range, unknown classes)."""
        if "samples" in selector:
            check_sample_range(selector["samples"], len(self.train))
        elif "class" in selector:
            check_classes(selector["class"], self.train.num_classes)
        elif not callable(getattr(self.train, "group_labels", None)):
            raise LedgerError(
                f"selector {selector}: this model's training data has no group labels"
            )

    def resolve(self, selector: dict, removed: set[int]) -> list[int]:
        """The training-set positions ``selector`` names, none of them removed before."""
        n = len(self.train)
        if "samples" in selector:
            check_sample_range(selector["samples"], n)
            return not_removed(selector["samples"], removed)
        keep = np.array(sorted(set(range(n)) - removed), dtype=np.int64)
        sub = self.train.subset(keep)
        if "class" in selector:
            req = request_from_dict({"kind": "class", "classes": selector["class"]})
        else:
            g = selector["group"]
            req = request_from_dict({"kind": "group", "by": g["by"], "groups": g["ids"]})
        try:
            local = req.resolve(sub, self.train.num_classes)
        except UnlearnError as exc:
            raise LedgerError(f"selector {selector}: {exc}") from None
        return keep[local].tolist()

    def _retain_and_forget(self, ids: list[int], removed: set[int]):
        keep = np.array(sorted(set(range(len(self.train))) - removed), dtype=np.int64)
        data = self.train.subset(keep)
        pos = {int(v): i for i, v in enumerate(keep)}
        return data, [pos[i] for i in ids]

    def unlearn(
        self, model, selector: dict, ids: list[int], removed: set[int], method, config, seed: int
    ):
        """Remove ``ids`` (what ``selector`` resolved to) from ``model``, trained on the
        training set less ``removed``. The method gets the selector's own request kind
        (a class request for a class, so class-only methods such as TRW serve it)."""
        from ..api import unlearn
        from ..models import build_model
        from ..requests import SampleRequest

        data, local = self._retain_and_forget(ids, removed)
        if "class" in selector:
            request = request_from_dict({"kind": "class", "classes": selector["class"]})
        elif "group" in selector:
            g = selector["group"]
            request = request_from_dict({"kind": "group", "by": g["by"], "groups": g["ids"]})
        else:
            request = SampleRequest(indices=local)
        resolved = request.resolve(data, self.train.num_classes)
        if sorted(resolved.tolist()) != sorted(local):  # the same data, resolved twice
            raise LedgerError(f"selector {selector}: resolved to different samples on reload")
        return unlearn(
            method,
            model,
            data,
            request,
            task=self.task,
            seed=seed,
            config=config,
            recipe=self.scenario.train,
            model_factory=lambda s: build_model(self.spec, seed=s),
        )

    def retrain(self, removed: set[int], seed: int):
        """The scenario's recipe from scratch on the training set less ``removed``."""
        import time

        from ..models import build_model

        keep = np.array(sorted(set(range(len(self.train))) - removed), dtype=np.int64)
        start = time.perf_counter()
        model = build_model(self.spec, seed=seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            steps = self.task.fit(model, self.train.subset(keep), self.scenario.train, seed)
        return model, {"seconds": time.perf_counter() - start, "steps": int(steps)}

    # -- verification --------------------------------------------------------------------
    def metrics(self, model, ids: list[int], removed: set[int]) -> dict:
        """What the certificate reports: test accuracy; accuracy, the loss-threshold
        attack's AUC against the test set, and SalUn's MIA-efficacy on the request's
        samples (when it has any); the same attack on every sample removed so far."""
        from ..metrics.classification import accuracy, loss_threshold_auc, mia_efficacy

        test_probs = self.task.probs(model, self.test).numpy()
        test_loss = self.task.per_sample_loss(model, self.test).numpy()
        out = {"test_acc": accuracy(test_probs, self.test.y.numpy())}
        if removed:
            gone = self.train.subset(sorted(removed))
            out["removed_mia_auc"] = loss_threshold_auc(
                self.task.per_sample_loss(model, gone).numpy(), test_loss
            )
            out["removed_total"] = len(removed)
        if ids:
            forget = self.train.subset(ids)
            fp = self.task.probs(model, forget).numpy()
            out["forget_acc"] = accuracy(fp, forget.y.numpy())
            out["mia_auc"] = loss_threshold_auc(
                self.task.per_sample_loss(model, forget).numpy(), test_loss
            )
            keep = sorted(set(range(len(self.train))) - removed)
            rng = np.random.default_rng(len(removed))
            sample = rng.choice(keep, size=min(len(keep), len(self.test)), replace=False)
            retain = self.train.subset(np.sort(sample))
            out["mia_efficacy"] = mia_efficacy(
                self.task.probs(model, retain).numpy(),
                retain.y.numpy(),
                test_probs,
                self.test.y.numpy(),
                fp,
                forget.y.numpy(),
                seed=len(removed),
            )
        return {k: float(v) if isinstance(v, float | np.floating) else v for k, v in out.items()}


def data_digest(data) -> str:
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(data.x.numpy()).tobytes())
    h.update(np.ascontiguousarray(data.y.numpy()).tobytes())
    return h.hexdigest()


#: the scenario kinds the ledger serves, and the family each registers as
FAMILIES = {
    "classifier": "classifier",
    "llm": "causal_lm",
    "federated": "federated",
    "generator": "generator",
}


def scenario_family(path: str | Path) -> str:
    """The model family a scenario file trains (its ``kind``; classifier by default)."""
    from ..bench.scenario import read_scenario_file

    raw, _ = read_scenario_file(path)
    kind = raw.get("kind", "classifier")
    if kind not in FAMILIES:
        raise LedgerError(
            f"{path}: the ledger serves classifier, federated, generator and fictitious-facts "
            "LLM scenarios; "
            f"this one is kind {kind!r}"
        )
    return FAMILIES[kind]


def handler_for(registration: dict):
    family = registration.get("family")
    if family == "classifier":
        return ClassifierHandler(registration)
    if family == "causal_lm":
        from .lm import CausalLMHandler

        return CausalLMHandler(registration)
    if family == "federated":
        from .federated import FederatedHandler

        return FederatedHandler(registration)
    if family == "generator":
        from .generator import GeneratorHandler

        return GeneratorHandler(registration)
    raise LedgerError(
        f"the ledger processes classifier, causal-LM, federated and generator models; model "
        f"{registration.get('name')!r} is a {family!r} model"
    )
