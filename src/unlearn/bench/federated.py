"""The ``kind: federated`` benchmark family: deleting a client from a trained federation.

A scenario mapping::

    name: dfl-certified-ring
    kind: federated
    data: {name: mnist1d}
    features: {random_fourier: 200, seed: 0}   # optional fixed per-sample map (see below)
    model: {name: linear}                      # or {name: mlp, hidden: [64]}
    federation: {clients: 16, partition: iid, engine: local}   # partition: dirichlet + alpha
    recipe: {protocol: dsgd, topology: ring, rounds: 100, lr: 0.5, weight_decay: 0.01}
    forget: {client: random}                   # or a client id
    seeds: [1, 2, 3]
    methods:
      - {name: dfl_certified, epsilon: 0.5, newton_steps: 3}
      - {name: fed_finetune, rounds: 10}

Per seed the training set is partitioned over the clients (seeded), the federation is
trained (``original``), the deleted client is drawn (``client: random``, seeded) or given,
and the federation of the remaining clients is trained again from scratch with the same
recipe and seed (``retrain``, the oracle; its graph is the topology rebuilt on ``N - 1``
nodes) and with another seed (``oracle_noise``). Every row reports accuracy on the test
set, on the remaining clients' data and on the deleted client's, the loss-threshold
membership AUC of the deleted client's samples against the test samples (``mia_auc``,
50 = indistinguishable), the distance of the consensus to the oracle's, and the work that
produced the row: ``grad_evals`` and ``model_transfers`` (training for the references,
the method's own for a method) with their ratios to the oracle's.

``features`` maps every sample on its own (no data statistics, so a deletion cannot
change another sample's features): random Fourier features ``cos(x W + b)`` with ``W``
Gaussian (variance ``1 / d``) and ``b`` uniform in ``[0, 2 pi)`` from ``seed``, a constant 1
appended, each row scaled to unit norm (the convex certificate's ``||x|| <= 1``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data import check_data_spec, load_dataset
from ..data.core import split_request
from ..errors import ScenarioError, UnlearnError
from ..methods.base import UnlearnContext, get_method
from ..requests import GroupRequest
from ..tasks.federated import ENGINES, FederatedData, FederatedTask, FedRecipe
from .core import Family, World, register_family, run_parsed
from .scenario import check_common

__all__ = ["FederatedFamily", "federation_of", "run_federated", "random_fourier"]

_KEYS = {
    "name",
    "kind",
    "description",
    "data",
    "features",
    "model",
    "federation",
    "recipe",
    "forget",
    "seeds",
    "noise_seed_offset",
    "methods",
    "targets",
    "device",
}


#: what a certified row adds (from :class:`unlearn.methods.federated.DFLCertified`)
CERTIFICATE = (
    "epsilon",
    "delta",
    "sigma",
    "sensitivity",
    "residual_bound",
    "measured_residual",
    "distributed_passes",
    "influence_share",
    "influence_max_deviation",
    "influence_mixing_bound",
)

ABOUT = """Rows: `original` (the federation trained on every client), `retrain` (the oracle:
the remaining clients trained again from scratch, same recipe and seed, on the topology
rebuilt for them) and `oracle_noise` (the oracle with another seed, scored against it),
then the methods. `mia_auc` is the loss-threshold attack's ROC-AUC of the deleted
client's samples against the test samples (50: indistinguishable). `grad_evals` counts
per-example gradient evaluations and `model_transfers` full parameter vectors sent over a
link: the references' training, each method's own work; `*_vs_oracle` divide by the
oracle's. Accuracy in percent on the consensus (the nodes' average) model."""


def random_fourier(x: torch.Tensor, dim: int, seed: int) -> torch.Tensor:
    """``cos(x W + b)`` (``W ~ N(0, 1/d)``, ``b ~ U[0, 2 pi)``, seeded), a 1 appended, rows
    scaled to unit L2 norm; every sample is mapped on its own."""
    flat = x.reshape(len(x), -1).double()
    d = flat.shape[1]
    gen = torch.Generator().manual_seed(int(seed))
    w = torch.randn(d, dim, generator=gen, dtype=torch.float64) / math.sqrt(d)
    b = torch.rand(dim, generator=gen, dtype=torch.float64) * (2 * math.pi)
    z = torch.cat([torch.cos(flat @ w + b), torch.ones(len(flat), 1, dtype=torch.float64)], 1)
    return (z / z.norm(dim=1, keepdim=True)).float()


def _fail(name: str, msg: str) -> ScenarioError:
    return ScenarioError(f"scenario {name}: {msg}")


def _mapping(raw: dict, key: str, name: str) -> dict:
    val = raw.get(key) or {}
    if not isinstance(val, dict):
        raise _fail(name, f"'{key}' must be a mapping")
    return dict(val)


def _parse(raw: Any, source: str) -> dict:
    common = check_common(raw, source)
    name = common.name
    unknown = sorted(set(raw) - _KEYS)
    if unknown:
        raise _fail(name, f"unknown key(s) {unknown} (known: {sorted(_KEYS)})")
    for key in ("data", "federation", "methods"):
        if key not in raw:
            raise _fail(name, f"missing key '{key}'")
    data = _mapping(raw, "data", name)
    try:
        check_data_spec(data)
    except UnlearnError as exc:
        raise _fail(name, f"'data': {exc}") from None
    feats = _mapping(raw, "features", name)
    if set(feats) - {"random_fourier", "seed"}:
        raise _fail(name, f"'features' knows random_fourier and seed, got {sorted(feats)}")
    if feats:
        dim = feats.get("random_fourier")
        if type(dim) is not int or dim < 1:
            raise _fail(name, f"features: random_fourier must be a positive integer, got {dim!r}")
        if type(feats.get("seed", 0)) is not int:
            raise _fail(name, "features: seed must be an integer")
    model = _mapping(raw, "model", name) or {"name": "linear"}
    if model.get("name") not in ("linear", "mlp") or set(model) - {"name", "hidden"}:
        raise _fail(
            name, f"model must be {{name: linear}} or {{name: mlp, hidden: [...]}}, got {model}"
        )
    hidden = model.get("hidden", [64] if model["name"] == "mlp" else [])
    if model["name"] == "linear" and hidden:
        raise _fail(name, "a linear model has no hidden layers")
    if not isinstance(hidden, list) or not all(type(h) is int and h > 0 for h in hidden):
        raise _fail(name, f"model: hidden must be a list of positive integers, got {hidden!r}")
    fed = _mapping(raw, "federation", name)
    bad = sorted(set(fed) - {"clients", "partition", "alpha", "engine"})
    if bad:
        raise _fail(name, f"federation: unknown key(s) {bad}")
    clients = fed.get("clients", 10)
    if type(clients) is not int or clients < 3:
        raise _fail(name, f"federation: clients must be an integer >= 3, got {clients!r}")
    partition = fed.get("partition", "iid")
    if partition not in ("iid", "dirichlet"):
        raise _fail(name, f"federation: partition must be iid or dirichlet, got {partition!r}")
    alpha = fed.get("alpha", 0.5)
    if partition == "dirichlet" and not (isinstance(alpha, int | float) and alpha > 0):
        raise _fail(name, f"federation: alpha must be a positive number, got {alpha!r}")
    engine = fed.get("engine", "local")
    if engine not in ENGINES:
        raise _fail(name, f"federation: engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    try:
        recipe = FedRecipe(**_mapping(raw, "recipe", name))
    except (UnlearnError, TypeError) as exc:
        raise _fail(name, f"recipe: {exc}") from None
    forget = _parse_forget(_mapping(raw, "forget", name) or {"client": "random"}, clients, name)
    methods = []
    if not isinstance(raw["methods"], list) or not raw["methods"]:
        raise _fail(name, "'methods' must be a non-empty list")
    for i, entry in enumerate(raw["methods"]):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise _fail(name, f"methods[{i}] must be a mapping with a 'name'")
        opts = {k: v for k, v in entry.items() if k not in ("name", "label")}
        label = entry.get("label", entry["name"])
        if not isinstance(label, str) or label in ("original", "retrain", "oracle_noise"):
            raise _fail(name, f"methods[{i}]: label {label!r} is not a string or is reserved")
        if any(lab == label for lab, _, _ in methods):
            raise _fail(name, f"method label {label!r} appears twice (give a 'label')")
        try:
            get_method(entry["name"], opts)  # builds and checks the config
        except UnlearnError as exc:
            raise _fail(name, f"methods[{i}]: {exc}") from None
        methods.append((label, entry["name"], opts))
    return {
        "name": name,
        "seeds": common.seeds,
        "offset": common.noise_seed_offset,
        "device": common.device,
        "data": data,
        "features": feats,
        "model": {"name": model["name"], "hidden": hidden},
        "clients": clients,
        "partition": partition,
        "alpha": float(alpha),
        "engine": engine,
        "recipe": recipe,
        "forget": forget,
        "methods": methods,
    }


def _client_id(who, clients: int, name: str, where: str, random_ok: bool = True):
    if random_ok and who == "random":
        return who
    if type(who) is not int or not 0 <= who < clients:
        allowed = "'random' or an id" if random_ok else "an id"
        raise _fail(name, f"{where}: client must be {allowed} in [0, {clients}), got {who!r}")
    return who


def _features(val, name: str, where: str) -> list[int]:
    if (
        not isinstance(val, list)
        or not val
        or not all(type(v) is int and v >= 0 for v in val)
        or len(set(val)) != len(val)
    ):
        raise _fail(name, f"{where} must be a list of distinct feature indices, got {val!r}")
    return sorted(val)


def _parse_forget(forget: dict, clients: int, name: str) -> dict:
    """``{client}`` (delete a whole client), ``{feature, client}`` (the client asks for the
    features to be forgotten) or ``{backdoor: {...}}`` (a client plants a trigger)."""
    if set(forget) == {"client"}:
        return {"kind": "client", "client": _client_id(forget["client"], clients, name, "forget")}
    if set(forget) == {"feature", "client"}:
        return {
            "kind": "feature",
            "client": _client_id(forget["client"], clients, name, "forget", random_ok=False),
            "features": _features(forget["feature"], name, "forget: feature"),
        }
    if set(forget) == {"backdoor"} and isinstance(forget["backdoor"], dict):
        b = dict(forget["backdoor"])
        keys = {"client", "fraction", "target", "features", "value"}
        if set(b) != keys:
            raise _fail(name, f"forget: backdoor needs exactly {sorted(keys)}, got {sorted(b)}")
        frac, value = b["fraction"], b["value"]
        if not isinstance(frac, int | float) or isinstance(frac, bool) or not 0 < frac <= 1:
            raise _fail(name, f"forget: backdoor fraction must lie in (0, 1], got {frac!r}")
        if type(b["target"]) is not int or b["target"] < 0:
            raise _fail(name, f"forget: backdoor target must be a class index, got {b['target']!r}")
        if (
            not isinstance(value, int | float)
            or isinstance(value, bool)
            or not math.isfinite(value)
        ):
            raise _fail(name, f"forget: backdoor value must be a number, got {value!r}")
        return {
            "kind": "backdoor",
            "client": _client_id(b["client"], clients, name, "forget: backdoor", random_ok=False),
            "fraction": float(frac),
            "target": b["target"],
            "features": _features(b["features"], name, "forget: backdoor features"),
            "value": float(value),
        }
    if set(forget) == {"bias"} and isinstance(forget["bias"], dict):
        b = dict(forget["bias"])
        keys = {"client", "feature", "scale"}
        if set(b) != keys:
            raise _fail(name, f"forget: bias needs exactly {sorted(keys)}, got {sorted(b)}")
        scale = b["scale"]
        if not isinstance(scale, int | float) or isinstance(scale, bool) or not scale > 0:
            raise _fail(name, f"forget: bias scale must be a positive number, got {scale!r}")
        if type(b["feature"]) is not int or b["feature"] < 0:
            raise _fail(name, f"forget: bias feature must be a feature index, got {b['feature']!r}")
        return {
            "kind": "bias",
            "client": _client_id(b["client"], clients, name, "forget: bias", random_ok=False),
            "features": [b["feature"]],
            "scale": float(scale),
        }
    raise _fail(
        name,
        "forget must be {client: <id> | random}, {feature: [...], client: <id>}, "
        "{backdoor: {client, fraction, target, features, value}} or "
        f"{{bias: {{client, feature, scale}}}}, got {forget}",
    )


def _owners(y: torch.Tensor, k: int, partition: str, alpha: float, seed: int) -> np.ndarray:
    """The client of every sample: an IID or Dirichlet partition of ``len(y)`` samples."""
    from ..federation.partition import dirichlet_partition, iid_partition

    if partition == "iid":
        parts = iid_partition(len(y), k, seed)
    else:
        parts = dirichlet_partition(y.numpy(), k, alpha, seed)
    owner = np.empty(len(y), dtype=np.int64)
    for c, idx in enumerate(parts):
        owner[np.asarray(idx, dtype=np.int64)] = c
    return owner


def _inputs(cfg: dict):
    """``(x, y, x_test, y_test, classes)`` of a parsed scenario: the data, mapped."""
    train, test = load_dataset(cfg["data"])
    x, xt = train.x, test.x
    feats = cfg["features"]
    if feats:
        x = random_fourier(x, feats["random_fourier"], feats.get("seed", 0))
        xt = random_fourier(xt, feats["random_fourier"], feats.get("seed", 0))
    return x, train.y, xt, test.y, train.classes


def _task(cfg: dict, d: int, k: int, engine: str | None = None) -> FederatedTask:
    make = _factory(cfg["model"]["name"], cfg["model"]["hidden"], d, k, not cfg["features"])
    return FederatedTask(make, cfg["recipe"], engine or cfg["engine"], cfg["device"])


def federation_of(job: dict) -> tuple[FederatedTask, FederatedData]:
    """The task (in-process engine) and the partitioned training data of a job mapping:
    the ``data``, ``features``, ``model``, ``federation`` and ``recipe`` keys of a
    ``kind: federated`` scenario, ``seed`` (the clients' and the initial model's) and
    ``partition_seed`` (the partition's; default ``seed``). What a deployment's nodes
    rebuild their clients from (``clients`` and ``start`` are theirs, passed through)."""
    if not isinstance(job, dict):
        raise UnlearnError(f"a federation job is a mapping, got {type(job).__name__}")
    known = {
        "data", "features", "model", "federation", "recipe", "seed", "partition_seed",
        "clients", "start",
    }  # fmt: skip
    extra = sorted(set(job) - known)
    if extra:
        raise UnlearnError(f"federation job: unknown key(s) {extra}")
    seed = job.get("seed", 0)
    if type(seed) is not int or seed < 0:
        raise UnlearnError(f"federation job: seed must be a non-negative integer, got {seed!r}")
    raw = {
        "name": "job",
        "kind": "federated",
        **{
            k: v for k, v in job.items() if k not in ("seed", "partition_seed", "clients", "start")
        },  # fmt: skip
        "methods": [{"name": "fed_finetune"}],
    }
    cfg = _parse(raw, "federation job")
    x, y, _, _, classes = _inputs(cfg)
    part = job.get("partition_seed", seed)
    if type(part) is not int or part < 0:
        raise UnlearnError(f"federation job: partition_seed must be >= 0, got {part!r}")
    owner = _owners(y, cfg["clients"], cfg["partition"], cfg["alpha"], part)
    task = _task(cfg, int(np.prod(x.shape[1:])), len(classes), engine="local")
    return task, FederatedData(x, y, owner, classes, "train")


class FeatureMask(nn.Module):
    """Zeroes chosen flat input features: the retrained model that never sees them."""

    def __init__(self, features: list[int]):
        super().__init__()
        self.register_buffer("cols", torch.as_tensor(features, dtype=torch.long), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(len(x), -1).clone()
        flat[:, self.cols] = 0.0
        return flat.view_as(x)


class _FedRun:
    def __init__(self, raw: dict, cfg: dict):
        self.raw, self.cfg, self.name = raw, cfg, cfg["name"]
        self.noise_seed_offset = cfg["offset"]
        # federated methods run on the federation; classifier methods at the requesting
        # client, on its own data (bound to that task when they run)
        self.methods = [(lab, get_method(n, o)) for lab, n, o in cfg["methods"]]

    @property
    def seeds(self):
        return self.cfg["seeds"]


def _factory(kind: str, hidden: list[int], d: int, k: int, bias: bool) -> Callable[[], nn.Module]:
    from ..models import MLP

    def make() -> nn.Module:
        if kind == "linear":  # the shape the convex certificate recognises
            return nn.Sequential(nn.Flatten(), nn.Linear(d, k, bias=bias))
        return MLP(d, k, tuple(hidden))

    return make


@register_family
class FederatedFamily(Family):
    """The ``kind: federated`` plugin (module docstring)."""

    kind = "federated"
    task_family = "federated"
    keep_models = False
    parallel_seeds = True

    def parse(self, raw, source, base_dir):
        return _FedRun(raw, _parse(raw, source))

    def setup(self, sc, say):
        cfg = sc.cfg
        self.x, self.y, self.xt, self.yt, self.classes = _inputs(cfg)
        x = self.x
        name, forget = cfg["name"], cfg["forget"]
        if cfg["clients"] * 2 > len(self.y):
            raise ScenarioError(
                f"scenario {name}: {cfg['clients']} clients for {len(self.y)} samples"
            )
        d = int(np.prod(x.shape[1:]))
        cols = forget.get("features")
        if cols is not None and max(cols) >= d:
            raise ScenarioError(
                f"scenario {name}: forget feature index {max(cols)} is beyond the {d} inputs"
            )
        if forget["kind"] == "backdoor" and forget["target"] >= len(self.classes):
            raise ScenarioError(
                f"scenario {name}: backdoor target {forget['target']} is not one of the "
                f"{len(self.classes)} classes"
            )
        self.task = _task(cfg, d, len(self.classes))
        if cfg["engine"] == "deployment":
            if forget["kind"] != "client":
                raise ScenarioError(
                    f"scenario {name}: engine deployment rebuilds every node's data from the "
                    "scenario, so it runs whole-client deletions only (a masked feature or a "
                    "planted trigger would need the nodes to change their own data)"
                )
            self.task.job = {
                key: sc.raw[key] for key in ("data", "features", "model", "federation")
                if key in sc.raw
            }  # fmt: skip
        make = self.task.model_factory
        if forget["kind"] in ("feature", "bias"):  # the oracle never sees the features
            mask = FeatureMask(cols)
            self.masked_task = FederatedTask(
                lambda: nn.Sequential(mask, make()), cfg["recipe"], cfg["engine"], cfg["device"]
            )
        self._check_methods(sc)

    def _request_for(self, method, forget: dict):
        """The request a method gets: a client deletion, the forget features, or (backdoor)
        the features for a method that serves feature requests, else the poisoned samples."""
        kinds = method.request_kinds
        if forget["kind"] == "client":
            return "group"
        if forget["kind"] in ("feature", "bias") or "feature" in kinds:
            return "feature"
        return "samples"

    def _check_methods(self, sc) -> None:
        from ..tasks.classifier import ClassifierTask

        cfg = sc.cfg
        forget = cfg["forget"]
        for label, method in sc.methods:
            fed = "federated" in type(method).families()
            if not fed and "classifier" not in type(method).families():
                raise ScenarioError(
                    f"scenario {cfg['name']}: method {label!r} runs on neither a federation nor "
                    "a client's classifier"
                )
            if not fed and forget["kind"] == "client":
                raise ScenarioError(
                    f"scenario {cfg['name']}: method {label!r} is a classifier method; a client "
                    "that leaves runs nothing (use a federated method)"
                )
            kind = self._request_for(method, forget)
            if kind not in method.request_kinds:
                raise ScenarioError(
                    f"scenario {cfg['name']}: method {label!r} does not serve {kind} requests, "
                    f"which this scenario makes (it serves {', '.join(method.request_kinds)})"
                )
            try:
                method.bind(self.task if fed else ClassifierTask(len(self.classes)))
            except UnlearnError as exc:
                raise ScenarioError(f"scenario {cfg['name']}: method {label!r}: {exc}") from None

    def worlds(self, sc, seed):
        from ..metrics.feature import plant_trigger
        from ..requests import FeatureRequest, SampleRequest

        cfg, task, forget = sc.cfg, self.task, sc.cfg["forget"]
        k = cfg["clients"]
        owner = _owners(self.y, k, cfg["partition"], cfg["alpha"], seed)
        if task.job is not None:  # deployment: the nodes rebuild this partition
            task.job = {**task.job, "partition_seed": int(seed)}
        x, y = self.x, self.y.clone()
        state: dict = {}
        who = forget["client"]
        if who == "random":
            who = int(np.random.default_rng([seed, 31]).integers(k))
        if forget["kind"] == "backdoor":
            mine = np.flatnonzero(owner == who)
            n_p = max(1, int(round(forget["fraction"] * len(mine))))
            poison = np.sort(np.random.default_rng([seed, 37]).choice(mine, n_p, replace=False))
            t = torch.as_tensor(poison)
            x = x.clone()
            x[t] = plant_trigger(x[t], forget["features"], forget["value"])
            y[t] = forget["target"]
            state["triggered_test"] = plant_trigger(self.xt, forget["features"], forget["value"])
        if forget["kind"] == "bias":  # test inputs whose feature names another class
            k_cls = len(self.classes)
            wrong = (self.yt + torch.as_tensor(
                np.random.default_rng([seed, 41]).integers(1, k_cls, len(self.yt))
            )) % k_cls  # fmt: skip
            code = forget["scale"] * (2.0 * wrong.float() / (k_cls - 1) - 1.0)
            flat = self.xt.reshape(len(self.xt), -1).clone()
            flat[:, forget["features"][0]] = code
            state["misleading_test"] = flat.view_as(self.xt)
        if forget["kind"] == "bias":  # the client's copy of the feature encodes its label
            mine = torch.as_tensor(np.flatnonzero(owner == who))
            code = forget["scale"] * (2.0 * y[mine].float() / (len(self.classes) - 1) - 1.0)
            x = x.clone()
            flat = x.reshape(len(x), -1)
            flat[mine, forget["features"][0]] = code
            x = flat.view_as(x)
        data = FederatedData(x, y, owner, self.classes, "train")
        everyone = data.clients()
        if len(everyone) != k:
            raise UnlearnError(f"the partition left {k - len(everyone)} clients without data")
        if forget["kind"] == "client":
            request = GroupRequest(groups=(int(who),), by="client")
            split = split_request(data, request)
            keep = [c for c in everyone if c != who]
            oracle_task, oracle_data = task, split.retain
        elif forget["kind"] in ("feature", "bias"):
            request = FeatureRequest(features=forget["features"])
            masked = FederatedData(
                FeatureMask(forget["features"])(x), y, owner, self.classes, "train"
            )
            split = split_request(masked, request)  # retain: everything, the features zeroed
            keep, oracle_task, oracle_data = everyone, self.masked_task, masked
        else:
            request = SampleRequest(indices=poison.tolist())
            split = split_request(data, request)
            keep, oracle_task, oracle_data = everyone, task, split.retain
        original, o_sec = _timed(lambda: task.train(data, everyone, seed))
        state.update(
            oracle=_timed(lambda: oracle_task.train(oracle_data, keep, seed)),
            noise=_timed(lambda: oracle_task.train(oracle_data, keep, seed + cfg["offset"])),
            data=data,
            split=split,
            client=int(who),
        )
        ctx = UnlearnContext(task=task, split=split, request=request, original=original, seed=seed)
        yield World(
            seed=seed,
            ctx=ctx,
            original_cost={"seconds": o_sec},
            state=state,
            fields={"forget_client": int(who)},
        )

    def set_oracle(self, sc, world, oracle, metrics):
        world.state["oracle_model"] = oracle
        world.state["oracle_cost"] = (oracle.grad_evals, oracle.model_transfers)

    def score(self, sc, world, model, row):
        from ..attacks.mia import roc_auc
        from ..metrics.feature import attack_success_rate, feature_sensitivity

        task, split, forget = self.task, world.state["split"], sc.cfg["forget"]
        data = world.state["data"]
        out = {"test_acc": task.accuracy(model, self.xt, self.yt)}
        if forget["kind"] in ("feature", "bias"):
            out["retain_acc"] = task.accuracy(model, data.x, data.y)
        else:
            f, r = split.forget, split.retain
            out["retain_acc"] = task.accuracy(model, r.x, r.y)
            out["forget_acc"] = task.accuracy(model, f.x, f.y)
            out["mia_auc"] = roc_auc(
                -task.losses(model, f.x, f.y), -task.losses(model, self.xt, self.yt)
            )
        if forget["kind"] != "client":
            net = task.module(model)
            out["feature_sensitivity"] = feature_sensitivity(
                net, self.xt, forget["features"], seed=world.seed
            )
            if forget["kind"] == "bias":
                out["misleading_test_acc"] = task.accuracy(
                    model, world.state["misleading_test"], self.yt
                )
            if forget["kind"] == "backdoor":
                out["attack_success_rate"] = attack_success_rate(
                    net, world.state["triggered_test"], forget["target"], self.yt
                )
        if model.grad_evals is not None:
            out["grad_evals"] = float(model.grad_evals)
        out["model_transfers"] = float(model.model_transfers)
        if model.node_parameters is not None and len(model.node_parameters) > 1:
            from ..federation.engine import consensus_distance

            out["consensus_distance"] = consensus_distance(model.node_parameters)
        oracle = world.state.get("oracle_model")
        if oracle is not None:
            a = np.concatenate([np.ravel(p) for p in model.parameters]).astype(np.float64)
            b = np.concatenate([np.ravel(p) for p in oracle.parameters]).astype(np.float64)
            out["param_distance_to_oracle"] = float(np.linalg.norm(a - b))
            ge, mt = world.state["oracle_cost"]
            if model.grad_evals is not None and ge:
                out["grad_evals_vs_oracle"] = model.grad_evals / ge
            out["transfers_vs_oracle"] = model.model_transfers / mt if mt else None
        for key in CERTIFICATE:  # what a certified removal put in its model's info
            if model.info.get(key) is not None:
                out[key] = float(model.info[key])
        return out

    def run_method(self, sc, world, method):
        if "federated" in type(method).families():
            return method.run(world.ctx.original, world.ctx)
        return self._at_client(sc, world, method)

    def _at_client(self, sc, world, method):
        """A classifier method run by the requesting client on its own data, from the
        global model; the result is uploaded as the new global model (2 transfers)."""
        from ..data.core import ArrayData
        from ..federation.engine import get_parameters
        from ..requests import FeatureRequest, SampleRequest
        from ..tasks.classifier import ClassifierTask

        forget, data = sc.cfg["forget"], world.state["data"]
        who = world.state["client"]
        idx = np.flatnonzero(data.client == who)
        t = torch.as_tensor(idx)
        local = ArrayData(data.x[t], data.y[t], self.classes, f"client {who}")
        if self._request_for(method, forget) == "feature":
            request = FeatureRequest(features=forget["features"])
        else:
            poisoned = set(world.ctx.request.indices)
            request = SampleRequest(indices=[i for i, g in enumerate(idx) if g in poisoned])
        ctask = ClassifierTask(len(self.classes), device=sc.cfg["device"])
        ctx = UnlearnContext(
            task=ctask,
            split=split_request(local, request),
            request=request,
            original=self.task.module(world.ctx.original),
            seed=world.seed,
        )
        net, rec = method.run(ctx.original, ctx)
        batch = getattr(method.config, "batch_size", None)
        evals = rec.steps * batch if batch else None
        original = world.ctx.original
        params = [
            a.astype(p.dtype) for a, p in zip(get_parameters(net), original.parameters, strict=True)
        ]
        out = original.replace(
            parameters=params,
            node_parameters=None
            if original.node_parameters is None
            else [[a.copy() for a in params] for _ in original.clients],
            grad_evals=evals,
            model_transfers=2,
            info={},
        )
        return out, rec

    def tick_text(self, row, m):
        extra = f", ASR {m['attack_success_rate']:.1f}" if "attack_success_rate" in m else ""
        if "feature_sensitivity" in m:
            extra += f", sensitivity {m['feature_sensitivity']:.3f}"
        if "mia_auc" in m:
            extra += f", MIA {m['mia_auc']:.1f}"
        return f": test {m['test_acc']:.1f}%{extra}"

    def document(self, sc):
        cfg = sc.cfg
        r, f = cfg["recipe"], cfg["forget"]
        if f["kind"] == "client" and f["client"] == "random":
            what = f"delete one of the {cfg['clients']} clients, drawn per seed"
        elif f["kind"] == "client":
            what = f"delete client {f['client']} of {cfg['clients']}"
        elif f["kind"] == "feature":
            what = (
                f"client {f['client']} of {cfg['clients']} asks to forget features {f['features']}"
            )
        elif f["kind"] == "bias":
            what = (
                f"in client {f['client']}'s data (of {cfg['clients']} clients) feature "
                f"{f['features'][0]} encodes the label (from -{f['scale']:g} to {f['scale']:g}); "
                "the client asks that it be forgotten"
            )
        else:
            what = (
                f"client {f['client']} of {cfg['clients']} planted a trigger (features "
                f"{f['features']} set to {f['value']:g}, relabelled {f['target']}) in "
                f"{100 * f['fraction']:g}% of its samples; they are forgotten"
            )
        return {
            "scenario": dict(sc.raw),
            "scenario_name": cfg["name"],
            "kind": "federated",
            "request": f"{what} ({cfg['partition']} partition)",
            "model_spec": {
                **cfg["model"],
                "features": cfg["features"] or "raw inputs",
                "num_classes": len(self.classes),
            },
            "train_recipe": {**r.__dict__, "engine": cfg["engine"], "clients": cfg["clients"]},
            "methods": {
                lab: {"method": m.name, "config": m.config.__dict__} for lab, m in sc.methods
            },
            "about": ABOUT,
        }


def _timed(fn):
    import time

    t0 = time.perf_counter()
    model = fn()
    return model, time.perf_counter() - t0


def run_federated(spec: dict, progress: Callable[[str], None] | None = None) -> dict:
    """Run a ``kind: federated`` scenario mapping through the one runner."""
    fam = FederatedFamily()
    return run_parsed(fam, fam.parse(spec, spec.get("name", "federated"), None), progress)
