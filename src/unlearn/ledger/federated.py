"""The ledger's handler for federations trained by a ``kind: federated`` scenario
(``unlearn train`` writes such a checkpoint).

The scenario names the data, its partition over the clients, the network and the
federated recipe (D-SGD or FedAvg) a retrain uses. The training set is the scenario's
training data in its order, each sample held by the client the partition gives it with
the registered seed (as the benchmark partitions seed ``s`` with ``s``): sample ids are
positions in it, ``group`` with ``by: client`` names every sample of some clients (a
client leaving the federation), and ``class`` every remaining sample of some classes.
The benchmark's planted triggers and feature biases are its own scenarios' requests: the
ledger trains and serves the federation on the data as the scenario loads it.

Training and retraining run on the in-process engine (exact, the same client code as
Flower's); a certified method's epsilon (``dfl_certified``) is recorded per request and
counts against the retrain policy's budget. The checkpoint holds the consensus / global
parameters, every node's parameters (D-SGD) and the gossip matrix, in safetensors, with
the clients in its metadata.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch

from ..errors import LedgerError, UnlearnError

__all__ = ["FederatedHandler", "FedSetup", "save_fed", "load_fed", "train_fed_checkpoint"]


class FedSetup:
    """A federated scenario made concrete: its task (in-process engine), training data
    (with clients) and test data."""

    def __init__(self, path: str | Path, seed: int):
        from ..bench.federated import _inputs, _owners, _parse, _task
        from ..bench.scenario import read_scenario_file
        from ..tasks.federated import FederatedData

        raw, path = read_scenario_file(path)
        cfg = _parse(raw, str(path))
        x, y, self.xt, self.yt, classes = _inputs(cfg)
        owner = _owners(y, cfg["clients"], cfg["partition"], cfg["alpha"], int(seed))
        self.train = FederatedData(x, y, owner, classes, "train")
        if len(self.train.clients()) != cfg["clients"]:
            raise LedgerError(f"{path}: the partition left some of the clients without data")
        self.task = _task(cfg, int(np.prod(x.shape[1:])), len(classes), engine="local")
        self.seed = int(seed)
        h = hashlib.sha256()
        for a in (x.numpy(), y.numpy(), owner):
            h.update(np.ascontiguousarray(a).tobytes())
        self.data_sha256 = h.hexdigest()

    def fit(self, keep: np.ndarray, seed: int):
        """The scenario's federation trained from scratch on the samples ``keep``."""
        from ..tasks.federated import FedModel

        data = self.train.subset(keep)
        start = time.perf_counter()
        with torch.random.fork_rng(devices=[]):
            model: FedModel = self.task.train(data, data.clients(), seed)
        return model, {
            "seconds": time.perf_counter() - start,
            "rounds": model.rounds,
            "grad_evals": model.grad_evals,
            "model_transfers": model.model_transfers,
        }


def save_fed(model, path: str | Path) -> None:
    """A :class:`~unlearn.tasks.federated.FedModel` as safetensors."""
    from safetensors.numpy import save_file

    tensors = {f"global.{i}": np.ascontiguousarray(a) for i, a in enumerate(model.parameters)}
    for n, params in enumerate(model.node_parameters or []):
        tensors.update({f"node{n}.{i}": np.ascontiguousarray(a) for i, a in enumerate(params)})
    if model.mixing is not None:
        tensors["mixing"] = np.ascontiguousarray(model.mixing)
    meta = {
        "clients": json.dumps([int(c) for c in model.clients]),
        "nodes": str(len(model.node_parameters or [])),
        "rounds": str(int(model.rounds)),
    }
    save_file(tensors, str(path), metadata=meta)


def load_fed(task, path: str | Path):
    """The federation saved at ``path``; refuses a file whose arrays are not this
    scenario's network."""
    from safetensors import SafetensorError, safe_open

    from ..tasks.federated import FedModel

    shapes = [a.shape for a in task.initial(0)]
    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
            arrays = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
        clients = tuple(int(c) for c in json.loads(meta["clients"]))
        nodes = int(meta["nodes"])
        rounds = int(meta["rounds"])
    except (SafetensorError, OSError, KeyError, ValueError, TypeError) as exc:
        raise LedgerError(f"{path} is not a federation checkpoint: {exc}") from None

    def take(prefix: str) -> list[np.ndarray]:
        out = [arrays.get(f"{prefix}.{i}") for i in range(len(shapes))]
        got = [None if a is None else a.shape for a in out]
        if got != shapes:
            raise LedgerError(
                f"{path} is not a checkpoint of this scenario's network: {prefix} has "
                f"arrays {got}, the network {shapes}"
            )
        return out

    params = take("global")
    node_params = [take(f"node{n}") for n in range(nodes)] or None
    if node_params is not None and len(node_params) != len(clients):
        raise LedgerError(f"{path}: {len(node_params)} nodes for {len(clients)} clients")
    return FedModel(
        parameters=params,
        clients=clients,
        node_parameters=node_params,
        mixing=arrays.get("mixing"),
        rounds=rounds,
        factory=task.model_factory,
    )


def train_fed_checkpoint(path: str | Path, seed: int, out: str | Path) -> float:
    """``unlearn train`` for a federated scenario: the federation of every client, trained
    with ``seed`` (and the partition drawn with it), written to ``out``; returns its test
    accuracy (%)."""
    setup = FedSetup(path, seed)
    model, _ = setup.fit(np.arange(len(setup.train)), seed)
    save_fed(model, out)
    return setup.task.accuracy(model, setup.xt, setup.yt)


class FederatedHandler:
    """A federation trained by a federated scenario."""

    family = "federated"
    #: what ``method: auto`` runs, per selector kind (the certified removal)
    auto_methods = {"samples": "fed_finetune", "class": "fed_finetune", "group": "dfl_certified"}

    def __init__(self, registration: dict):
        from .handlers import check_data_digest, registered_scenario

        path = registered_scenario(registration)
        self.setup = FedSetup(path, int(registration.get("seed", 0)))
        digest = self.setup.data_sha256
        self.data_sha256 = check_data_digest(registration, digest, path)
        self.train = self.setup.train
        self.task = self.setup.task

    def load(self, path: str | Path):
        return load_fed(self.task, path)

    def save(self, model, path: str | Path) -> None:
        save_fed(model, path)

    # -- requests ----------------------------------------------------------------------
    def check_selector(self, selector: dict) -> None:
        from .handlers import check_classes, check_sample_range

        if "samples" in selector:
            check_sample_range(selector["samples"], len(self.train))
        elif "class" in selector:
            check_classes(selector["class"], self.train.num_classes)
        else:
            g = selector["group"]
            if g["by"] != "client":
                raise LedgerError(
                    f"selector group by {g['by']!r}: a federation's samples are grouped by "
                    "client only"
                )
            clients = self.train.clients()
            bad = [c for c in g["ids"] if c not in clients]
            if bad:
                raise LedgerError(
                    f"client {bad[0]!r} is not one of the federation's clients (0..{max(clients)})"
                )

    def _request(self, selector: dict, local: list[int]):
        from ..requests import request_from_dict

        if "class" in selector:
            return request_from_dict({"kind": "class", "classes": selector["class"]})
        if "group" in selector:
            g = selector["group"]
            return request_from_dict({"kind": "group", "by": "client", "groups": g["ids"]})
        return request_from_dict({"kind": "samples", "indices": local})

    def resolve(self, selector: dict, removed: set[int]) -> list[int]:
        from .handlers import not_removed

        self.check_selector(selector)
        keep = np.array(sorted(set(range(len(self.train))) - removed), dtype=np.int64)
        if "samples" in selector:
            return not_removed(selector["samples"], removed)
        try:
            local = self._request(selector, []).resolve(
                self.train.subset(keep), self.train.num_classes
            )
        except UnlearnError as exc:
            raise LedgerError(f"selector {selector}: {exc}") from None
        return keep[local].tolist()

    def unlearn(
        self, model, selector: dict, ids: list[int], removed: set[int], method, config, seed: int
    ):
        """Remove ``ids`` from the federation ``model`` (trained on the training set less
        ``removed``), with a federated method run over the federation."""
        from ..data.core import split_request
        from ..methods.base import UnlearnContext, get_method

        keep = np.array(sorted(set(range(len(self.train))) - removed), dtype=np.int64)
        data = self.train.subset(keep)
        if tuple(model.clients) != tuple(data.clients()):
            raise LedgerError(
                f"the model's clients {list(model.clients)} are not those holding the "
                f"remaining data {data.clients()}"
            )
        pos = {int(v): i for i, v in enumerate(keep)}
        request = self._request(selector, sorted(pos[i] for i in ids))
        split = split_request(data, request)
        if sorted(keep[split.forget_idx].tolist()) != sorted(ids):
            raise LedgerError(f"selector {selector}: resolved to different samples on reload")
        try:
            m = get_method(method, config, family="federated")
        except UnlearnError as exc:
            raise LedgerError(f"method {method!r}: {exc}") from None
        ctx = UnlearnContext(
            task=self.task, split=split, request=request, original=model, seed=seed
        )
        return m.run(model, ctx)

    def retrain(self, removed: set[int], seed: int):
        keep = np.array(sorted(set(range(len(self.train))) - removed), dtype=np.int64)
        return self.setup.fit(keep, seed)

    # -- verification --------------------------------------------------------------------
    def metrics(self, model, ids: list[int], removed: set[int]) -> dict:
        """Test accuracy of the consensus / global model; forget accuracy and the loss
        attack's AUC (%) against the test set on the request's samples; the same attack on
        every sample removed so far; the certificate's figures where the model carries
        them."""
        from ..metrics.classification import loss_threshold_auc

        s, task = self.setup, self.task
        test_loss = task.losses(model, s.xt, s.yt)
        out: dict = {"test_acc": task.accuracy(model, s.xt, s.yt)}
        if removed:
            gone = self.train.subset(sorted(removed))
            out["removed_mia_auc"] = float(
                loss_threshold_auc(task.losses(model, gone.x, gone.y), test_loss)
            )
            out["removed_total"] = len(removed)
        if ids:
            f = self.train.subset(ids)
            out["forget_acc"] = task.accuracy(model, f.x, f.y)
            out["mia_auc"] = float(loss_threshold_auc(task.losses(model, f.x, f.y), test_loss))
        out["clients"] = len(model.clients)
        return out
