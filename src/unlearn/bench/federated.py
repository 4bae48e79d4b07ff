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
from ..metrics.registry import declare_for
from ..requests import GroupRequest
from ..tasks.federated import ENGINES, FederatedData, FederatedTask, FedRecipe
from .core import Family, World, register_family, run_parsed
from .scenario import check_common

__all__ = ["FederatedFamily", "run_federated", "random_fourier"]

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

declare_for(
    "federated",
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
)

#: what a certified row adds (from :class:`unlearn.methods.federated.DFLCertified`)
CERTIFICATE = (
    "epsilon",
    "delta",
    "sigma",
    "sensitivity",
    "residual_bound",
    "measured_residual",
    "distributed_passes",
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
    forget = _mapping(raw, "forget", name) or {"client": "random"}
    if set(forget) != {"client"}:
        raise _fail(name, f"forget must be {{client: <id> | random}}, got {forget}")
    who = forget["client"]
    if who != "random" and not (type(who) is int and 0 <= who < clients):
        raise _fail(
            name, f"forget: client must be 'random' or an id in [0, {clients}), got {who!r}"
        )
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
        "forget": who,
        "methods": methods,
    }


class _FedRun:
    def __init__(self, raw: dict, cfg: dict):
        self.raw, self.cfg, self.name = raw, cfg, cfg["name"]
        self.noise_seed_offset = cfg["offset"]
        self.methods = [(lab, get_method(n, o, family="federated")) for lab, n, o in cfg["methods"]]

    @property
    def seeds(self):
        return self.cfg["seeds"]


def _factory(kind: str, hidden: list[int], d: int, k: int, bias: bool) -> Callable[[], nn.Module]:
    def make() -> nn.Module:
        if kind == "linear":
            return nn.Sequential(nn.Flatten(), nn.Linear(d, k, bias=bias))
        layers: list[nn.Module] = [nn.Flatten()]
        width = d
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, k))
        return nn.Sequential(*layers)

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
        train, test = load_dataset(cfg["data"])
        x, xt = train.x, test.x
        feats = cfg["features"]
        if feats:
            x = random_fourier(x, feats["random_fourier"], feats.get("seed", 0))
            xt = random_fourier(xt, feats["random_fourier"], feats.get("seed", 0))
        self.x, self.y, self.xt, self.yt = x, train.y, xt, test.y
        self.classes = train.classes
        if cfg["clients"] * 2 > len(self.y):
            raise ScenarioError(
                f"scenario {cfg['name']}: {cfg['clients']} clients for {len(self.y)} samples"
            )
        d = int(np.prod(x.shape[1:]))
        # with the features' constant column the linear model needs no bias of its own
        self.factory = _factory(
            cfg["model"]["name"], cfg["model"]["hidden"], d, len(self.classes), bias=not feats
        )
        self.task = FederatedTask(self.factory, cfg["recipe"], cfg["engine"], cfg["device"])
        for label, method in sc.methods:  # a method that cannot serve this task fails now
            method.bind(self.task)
            try:
                method.check(GroupRequest(groups=(0,), by="client"), self.task)
            except UnlearnError as exc:
                raise ScenarioError(f"scenario {cfg['name']}: method {label!r}: {exc}") from None

    def worlds(self, sc, seed):
        from ..federation.partition import dirichlet_partition, iid_partition

        cfg, task = sc.cfg, self.task
        k = cfg["clients"]
        if cfg["partition"] == "iid":
            parts = iid_partition(len(self.y), k, seed)
        else:
            parts = dirichlet_partition(self.y.numpy(), k, cfg["alpha"], seed)
        owner = np.empty(len(self.y), dtype=np.int64)
        for c, idx in enumerate(parts):
            owner[np.asarray(idx, dtype=np.int64)] = c
        data = FederatedData(self.x, self.y, owner, self.classes, "train")
        who = cfg["forget"]
        if who == "random":
            who = int(np.random.default_rng([seed, 31]).integers(k))
        request = GroupRequest(groups=(int(who),), by="client")
        split = split_request(data, request)
        everyone = data.clients()
        if len(everyone) != k:
            raise UnlearnError(f"the partition left {k - len(everyone)} clients without data")
        keep = [c for c in everyone if c != who]
        original, o_sec = _timed(lambda: task.train(data, everyone, seed))
        state = {
            "oracle": _timed(lambda: task.train(split.retain, keep, seed)),
            "noise": _timed(lambda: task.train(split.retain, keep, seed + cfg["offset"])),
            "data": data,
            "split": split,
        }
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

        task, split = self.task, world.state["split"]
        f, r = split.forget, split.retain
        out = {
            "test_acc": task.accuracy(model, self.xt, self.yt),
            "retain_acc": task.accuracy(model, r.x, r.y),
            "forget_acc": task.accuracy(model, f.x, f.y),
            "mia_auc": roc_auc(
                -task.losses(model, f.x, f.y), -task.losses(model, self.xt, self.yt)
            ),
            "grad_evals": float(model.grad_evals),
            "model_transfers": float(model.model_transfers),
        }
        if model.node_parameters is not None and len(model.node_parameters) > 1:
            from ..federation.engine import consensus_distance

            out["consensus_distance"] = consensus_distance(model.node_parameters)
        oracle = world.state.get("oracle_model")
        if oracle is not None:
            a = np.concatenate([np.ravel(p) for p in model.parameters]).astype(np.float64)
            b = np.concatenate([np.ravel(p) for p in oracle.parameters]).astype(np.float64)
            out["param_distance_to_oracle"] = float(np.linalg.norm(a - b))
            ge, mt = world.state["oracle_cost"]
            out["grad_evals_vs_oracle"] = model.grad_evals / ge if ge else None
            out["transfers_vs_oracle"] = model.model_transfers / mt if mt else None
        if row not in ("original", "retrain", "oracle_noise"):
            extra = world.state.pop("last_extra", {})
            for key in CERTIFICATE:
                if extra.get(key) is not None:
                    out[key] = float(extra[key])
        return out

    def run_method(self, sc, world, method):
        model, rec = method.run(world.ctx.original, world.ctx)
        world.state["last_extra"] = dict(rec.extra or {})  # read by score() for this row
        return model, rec

    def tick_text(self, row, m):
        return f": test {m['test_acc']:.1f}%, MIA {m['mia_auc']:.1f}"

    def document(self, sc):
        cfg = sc.cfg
        r = cfg["recipe"]
        return {
            "scenario": dict(sc.raw),
            "scenario_name": cfg["name"],
            "kind": "federated",
            "request": (
                f"delete client {cfg['forget']} of {cfg['clients']} ({cfg['partition']} "
                "partition; a random client is drawn per seed)"
            ),
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
