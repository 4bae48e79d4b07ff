"""The federated task: one model trained by many clients, each over its own data.

A federation's data is a :class:`FederatedData`: inputs, labels and the client that
holds each sample, so a whole-client deletion is a ``GroupRequest(by="client")`` and a
sample or class deletion is the usual request. The model a method receives and returns
is a :class:`FedModel`: every node's parameters (decentralized training) or the global
model (FedAvg), the clients that hold it and what training it cost. The task trains a
federation with its :class:`FedRecipe` over any subset of the clients (the oracle is
the federation trained again without the deleted data), on the in-process engine or on
Flower, with the same client code (:mod:`unlearn.federation`).

Topology after a whole-client deletion: the remaining clients form the same kind of
graph again (a ring of ``N - 1`` nodes, a fresh Erdos-Renyi draw with the same ``p`` and
seed), for the retrained federation and for every method alike.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..errors import InvalidRequestError, UnlearnError
from ..validate import check_fields
from .base import Task, register_task

__all__ = ["FedRecipe", "FederatedData", "FedModel", "FederatedTask", "PROTOCOLS", "ENGINES"]

PROTOCOLS = ("dsgd", "fedavg")
ENGINES = ("local", "flower", "deployment")


@dataclass(frozen=True)
class FedRecipe:
    """How a federation trains: ``protocol`` (``dsgd``: gossip over ``topology`` then
    local training, every round; ``fedavg``: a server averages a ``fraction`` of the
    clients each round), ``rounds``, and each client's local training (``local_epochs``
    passes of mini-batch SGD / AdamW with ``lr``, ``batch_size``, ``weight_decay``,
    ``momentum``). ``topology`` is ``ring``, ``torus``, ``erdos_renyi`` (with ``p``) or
    ``complete``; ``graph_seed`` seeds the random graph."""

    protocol: str = "dsgd"
    rounds: int = 100
    local_epochs: int = 1
    batch_size: int = 32
    lr: float = 0.5
    optimizer: str = "sgd"
    momentum: float = 0.0
    weight_decay: float = 1e-2
    topology: str = "ring"
    p: float = 0.3
    graph_seed: int = 0
    fraction: float = 1.0

    def __post_init__(self) -> None:
        check_fields(self, "federated recipe")
        from ..federation.topology import TOPOLOGIES

        bad = []
        if self.protocol not in PROTOCOLS:
            bad.append(f"protocol must be one of {', '.join(PROTOCOLS)}, got {self.protocol!r}")
        if self.topology not in TOPOLOGIES:
            bad.append(f"topology must be one of {', '.join(TOPOLOGIES)}, got {self.topology!r}")
        if self.rounds < 1 or self.local_epochs < 1 or self.batch_size < 1:
            bad.append("rounds, local_epochs and batch_size must be >= 1")
        if not self.lr > 0 or self.weight_decay < 0 or not 0 <= self.momentum < 1:
            bad.append("lr must be > 0, weight_decay >= 0 and momentum in [0, 1)")
        if not 0 < self.p <= 1 or not 0 < self.fraction <= 1:
            bad.append("p and fraction must lie in (0, 1]")
        if bad:
            raise UnlearnError("federated recipe: " + "; ".join(bad))


class FederatedData:
    """Samples ``x`` (N, ...) float32 with labels ``y`` (N,) and the ``client`` holding each."""

    def __init__(self, x, y, client, classes: Sequence[str] | None = None, name: str = "data"):
        self.x = torch.as_tensor(x).float()
        self.y = torch.as_tensor(y).long()
        self.client = np.asarray(client, dtype=np.int64)
        self.name = str(name)
        if self.x.ndim < 2 or self.y.ndim != 1 or len(self.x) != len(self.y):
            raise UnlearnError(
                f"{self.name}: x must be (samples, features...) and y one label per sample, got "
                f"{tuple(self.x.shape)} and {tuple(self.y.shape)}"
            )
        if self.client.shape != (len(self.y),):
            raise UnlearnError(f"{self.name}: client must hold one client id per sample")
        if not bool(torch.isfinite(self.x).all()):
            raise UnlearnError(f"{self.name}: x holds NaN or infinite values")
        k = int(self.y.max()) + 1 if len(self.y) else 0
        self.classes = tuple(str(c) for c in (classes if classes is not None else range(k)))
        if len(self.y) and (int(self.y.min()) < 0 or int(self.y.max()) >= len(self.classes)):
            raise UnlearnError(f"{self.name}: labels must lie in [0, {len(self.classes)})")

    def __len__(self) -> int:
        return len(self.y)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def targets(self) -> np.ndarray:
        return self.y.numpy()

    def group_labels(self, by: str) -> np.ndarray:
        if by != "client":
            raise InvalidRequestError(f"{self.name} has no {by!r} labels (it has: client)")
        return self.client

    def subset(self, idx, name: str | None = None) -> FederatedData:
        idx = np.asarray(idx, dtype=np.int64)
        t = torch.as_tensor(idx)
        return FederatedData(
            self.x[t], self.y[t], self.client[idx], self.classes, name or self.name
        )

    def clients(self) -> list[int]:
        """The client ids that hold at least one sample, ascending."""
        return sorted(set(self.client.tolist()))

    def of(self, client: int) -> tuple[torch.Tensor, torch.Tensor]:
        t = torch.as_tensor(np.flatnonzero(self.client == client))
        return self.x[t], self.y[t]


@dataclass
class FedModel:
    """A federation's model: ``node_parameters`` (one list per node, ``clients`` order;
    D-SGD) or None (FedAvg), and ``parameters``, the consensus / global model. ``mixing`` is
    the gossip matrix of those nodes (D-SGD). ``grad_evals`` and ``model_transfers`` count
    the work that produced it (training, or a method's own; None where not counted)."""

    parameters: list[np.ndarray]
    clients: tuple[int, ...]
    node_parameters: list[list[np.ndarray]] | None = None
    mixing: np.ndarray | None = None
    grad_evals: int | None = 0
    model_transfers: int = 0
    rounds: int = 0
    info: dict = field(default_factory=dict)
    #: the network it lives in (None: the task's ``model_factory``)
    factory: Callable[[], nn.Module] | None = field(default=None, compare=False, repr=False)

    def replace(self, **changes) -> FedModel:
        return dataclasses.replace(self, **changes)


@register_task
class FederatedTask(Task):
    """Clients' data, a model factory and a :class:`FedRecipe`; trains and scores federations.

    ``model_factory()`` builds the (untrained) network every client trains; ``engine`` is
    ``local`` (the in-process simulator, exact) or ``flower`` (Flower's simulation, the same
    client objects; needs the ``federated`` extra).
    """

    family = "federated"
    provides = frozenset({"federated", "membership"})

    def __init__(
        self,
        model_factory: Callable[[], nn.Module],
        recipe: FedRecipe | dict | None = None,
        engine: str = "local",
        device: str = "cpu",
    ):
        if not callable(model_factory):
            raise UnlearnError("model_factory must be a callable returning an nn.Module")
        self.model_factory = model_factory
        self.recipe = recipe if isinstance(recipe, FedRecipe) else FedRecipe(**(recipe or {}))
        if engine not in ENGINES:
            raise UnlearnError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
        self.engine = engine
        self.device = torch.device(device)
        #: engine ``deployment``: the job mapping the nodes rebuild their data from (the
        #: ``data``, ``features``, ``model`` and ``federation`` of a scenario)
        self.job: dict | None = None

    recipe_type = FedRecipe

    def check_model(self, model: Any) -> None:
        if not isinstance(model, FedModel):
            raise UnlearnError(
                f"a federated task's model is a FedModel, got {type(model).__name__}"
            )

    # -- graphs and clients ------------------------------------------------------------
    def graph(self, n: int, recipe: FedRecipe | None = None):
        from ..federation.topology import topology

        r = recipe or self.recipe
        opts = {"p": r.p, "seed": r.graph_seed} if r.topology == "erdos_renyi" else {}
        return topology(r.topology, n, **opts)

    def mixing(self, n: int, recipe: FedRecipe | None = None) -> np.ndarray:
        from ..federation.topology import metropolis

        return metropolis(self.graph(n, recipe))

    def client(self, data: FederatedData, cid: int, seed: int, recipe: FedRecipe | None = None):
        """The :class:`~unlearn.federation.TorchClient` of client ``cid`` (seeded per client)."""
        from ..federation.engine import TorchClient

        r = recipe or self.recipe
        return TorchClient(
            self.model_factory,
            data.of(cid),
            local_epochs=r.local_epochs,
            batch_size=r.batch_size,
            lr=r.lr,
            optimizer=r.optimizer,
            momentum=r.momentum,
            seed=int(seed) * 1009 + int(cid),
            device=str(self.device),
            weight_decay=r.weight_decay,
        )

    def initial(self, seed: int) -> list[np.ndarray]:
        """The seeded starting parameters every node shares."""
        from ..federation.engine import get_parameters

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            return get_parameters(self.model_factory())

    # -- training -------------------------------------------------------------------------
    def train(
        self,
        data: FederatedData,
        clients: Sequence[int],
        seed: int,
        start: FedModel | None = None,
        recipe: FedRecipe | None = None,
    ) -> FedModel:
        """Train the federation of ``clients`` (ids in ``data``) with the recipe, from the
        seeded initial model or from ``start`` (its nodes, where they are the same clients)."""
        from ..federation import engine as E

        r = recipe or self.recipe
        ids = tuple(int(c) for c in clients)
        if len(ids) < 2:
            raise UnlearnError(f"a federation needs at least 2 clients, got {len(ids)}")
        present = set(data.clients())
        missing = [c for c in ids if c not in present]
        if missing:
            raise UnlearnError(f"clients {missing} hold no data")
        cl = [self.client(data, c, seed, r) for c in ids]
        if start is None:
            init: Any = self.initial(seed)
        elif start.node_parameters is not None and start.clients == ids:
            init = [list(p) for p in start.node_parameters]
        else:
            init = list(start.parameters)
        if self.engine == "deployment":
            return self._deployed(data, ids, seed, init, r)
        if r.protocol == "dsgd":
            q = self.mixing(len(ids), r)
            if self.engine == "flower":
                from ..federation.flower import flower_dsgd as run_dsgd
            else:
                run_dsgd = E.dsgd
            res = run_dsgd(cl, init, q, r.rounds, int(seed))
            return FedModel(
                parameters=res.parameters,
                clients=ids,
                node_parameters=res.node_parameters,
                mixing=q,
                grad_evals=res.grad_evals,
                model_transfers=res.model_transfers,
                rounds=r.rounds,
                info={"consensus_distance": res.consensus_distance},
                factory=self.model_factory,
            )
        if isinstance(init[0], list):
            init = E._average(init)
        if self.engine == "flower":
            from ..federation.flower import flower_fedavg as run_fedavg
        else:
            run_fedavg = E.fedavg
        res = run_fedavg(cl, init, r.rounds, r.fraction, int(seed))
        return FedModel(
            parameters=res.parameters,
            clients=ids,
            grad_evals=res.grad_evals,
            model_transfers=res.model_transfers,
            rounds=r.rounds,
            factory=self.model_factory,
        )

    def _deployed(self, data, ids, seed, init, r: FedRecipe) -> FedModel:
        """Train on Flower's deployment runtime: the nodes rebuild their data from
        ``self.job``, which must give exactly ``data`` for these clients."""
        import json
        import tempfile
        from dataclasses import asdict

        from ..federation.deploy import run_deployment

        if self.job is None:
            raise UnlearnError(
                "engine deployment needs task.job, the mapping the nodes rebuild their data "
                "from (a kind: federated scenario sets it)"
            )
        from ..bench.federated import federation_of

        _, rebuilt = federation_of({**self.job, "recipe": asdict(r), "seed": int(seed)})
        for c in ids:
            (xa, ya), (xb, yb) = data.of(c), rebuilt.of(c)
            if not (torch.equal(xa, xb) and torch.equal(ya, yb)):
                raise UnlearnError(
                    f"engine deployment: client {c}'s data differs from what its node rebuilds "
                    "from the job (masked or poisoned data cannot be deployed)"
                )
        job = {**self.job, "recipe": asdict(r), "seed": int(seed), "clients": list(ids)}
        with tempfile.TemporaryDirectory(prefix="unlearn-start-") as tmp:
            path = f"{tmp}/start.npz"
            nodes = init if isinstance(init[0], list) else [init]
            np.savez(path, **{f"n{n}_{i}": a for n, p in enumerate(nodes) for i, a in enumerate(p)},
                     shape=np.array([len(nodes), len(nodes[0])]))  # fmt: skip
            job["start"] = path
            json.dumps(job)  # plain JSON, or a clear error here
            res = run_deployment(job)
        return FedModel(
            parameters=res.parameters,
            clients=ids,
            node_parameters=res.node_parameters,
            mixing=self.mixing(len(ids), r) if r.protocol == "dsgd" else None,
            grad_evals=res.grad_evals,
            model_transfers=res.model_transfers,
            rounds=r.rounds,
            info={"consensus_distance": res.consensus_distance},
            factory=self.model_factory,
        )

    # -- scoring --------------------------------------------------------------------------
    def module(self, model: FedModel) -> nn.Module:
        """``model``'s consensus / global parameters in a fresh network, in eval mode."""
        from ..federation.engine import set_parameters

        net = (model.factory or self.model_factory)().to(self.device)
        set_parameters(net, model.parameters)
        return net.eval()

    @torch.no_grad()
    def losses(self, model: FedModel, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
        """Per-example cross-entropy of the consensus model."""
        net = self.module(model)
        out = [
            F.cross_entropy(
                net(x[s : s + 1024].to(self.device)),
                y[s : s + 1024].to(self.device),
                reduction="none",
            )
            for s in range(0, len(y), 1024)
        ]
        return torch.cat(out).cpu().numpy() if out else np.zeros(0)

    @torch.no_grad()
    def accuracy(self, model: FedModel, x: torch.Tensor, y: torch.Tensor) -> float:
        """Accuracy (percent) of the consensus model."""
        if len(y) == 0:
            raise UnlearnError("accuracy of an empty set")
        net = self.module(model)
        hits = sum(
            int((net(x[s : s + 1024].to(self.device)).argmax(1).cpu() == y[s : s + 1024]).sum())
            for s in range(0, len(y), 1024)
        )
        return 100.0 * hits / len(y)

    def membership_scores(self, model: FedModel, data: FederatedData) -> np.ndarray:
        return self.losses(model, data.x, data.y)
