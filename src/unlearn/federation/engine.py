"""An in-process simulator of federated (FedAvg) and decentralized (D-SGD) training.

Clients follow the semantics of Flower's ``NumPyClient``: parameters travel as a list of
numpy arrays, ``fit`` returns ``(parameters, n_examples, metrics)`` and ``evaluate`` returns
``(loss, n_examples, metrics)``, with scalar metrics. A client written against :class:`Client`
can therefore later be wrapped by Flower unchanged; the loops here only stand in for
Flower's server and transport, in one process and deterministically for a seed.

Costs are counted the same way for both loops: ``model_transfers`` is the number of full
parameter vectors sent over a link (FedAvg: one download and one upload per sampled client
per round; D-SGD: one per directed edge per round), ``grad_evals`` the per-example gradient
evaluations the clients report.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import networkx as nx
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..errors import UnlearnError
from ..training import OPTIMIZERS, make_optimizer
from ._checks import check_float, check_int, check_seed
from .topology import metropolis

__all__ = [
    "Client",
    "FedResult",
    "TorchClient",
    "consensus_distance",
    "dsgd",
    "fedavg",
    "get_parameters",
    "round_seed",
    "set_parameters",
]

Parameters = list[np.ndarray]
EvaluateFn = Callable[[int, Parameters], dict]


# ---------------------------------------------------------------------------- parameters


def _state_floats(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    return [(k, v) for k, v in model.state_dict().items() if torch.is_floating_point(v)]


def get_parameters(model: nn.Module) -> Parameters:
    """The model's floating-point state (weights and float buffers), in ``state_dict`` order,
    as copied numpy arrays. Integer buffers (e.g. BatchNorm's batch counter) are left out."""
    return [v.detach().cpu().numpy().copy() for _, v in _state_floats(model)]


def set_parameters(model: nn.Module, parameters: Sequence[np.ndarray]) -> None:
    """Load arrays from :func:`get_parameters` (same order and shapes) into ``model`` in place."""
    slots = _state_floats(model)
    if len(parameters) != len(slots):
        raise UnlearnError(
            f"parameters: got {len(parameters)} arrays, the model has {len(slots)} float tensors"
        )
    with torch.no_grad():
        for (name, tensor), array in zip(slots, parameters, strict=True):
            array = np.asarray(array)
            if tuple(array.shape) != tuple(tensor.shape):
                raise UnlearnError(
                    f"parameters: {name} has shape {tuple(tensor.shape)}, got {array.shape}"
                )
            tensor.copy_(torch.tensor(array).to(dtype=tensor.dtype, device=tensor.device))


def _copy(parameters: Sequence[np.ndarray]) -> Parameters:
    return [np.array(p, copy=True) for p in parameters]


def _check_like(parameters, reference: Parameters, who: str) -> Parameters:
    if not isinstance(parameters, (list, tuple)) or len(parameters) != len(reference):
        count = len(parameters) if isinstance(parameters, (list, tuple)) else type(parameters)
        raise UnlearnError(f"{who} returned {count} parameter arrays, expected {len(reference)}")
    out = []
    for i, (p, r) in enumerate(zip(parameters, reference, strict=True)):
        p = np.asarray(p)
        if p.shape != r.shape:
            raise UnlearnError(f"{who} returned array {i} with shape {p.shape}, expected {r.shape}")
        out.append(p)
    return out


def _cast(mean: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if np.issubdtype(dtype, np.integer):
        mean = np.rint(mean)
    return mean.astype(dtype)


def consensus_distance(node_parameters: Sequence[Sequence[np.ndarray]]) -> float:
    """Mean over nodes of the squared Euclidean distance (all arrays together) to their average."""
    k = len(node_parameters)
    if k == 0:
        raise UnlearnError("consensus_distance needs at least one node")
    total = 0.0
    for arrays in zip(*node_parameters, strict=True):
        stack = np.stack([np.asarray(a, dtype=np.float64) for a in arrays])
        total += float(((stack - stack.mean(axis=0)) ** 2).sum())
    return total / k


# ---------------------------------------------------------------------------- clients


def round_seed(seed: int, rnd: int, stream: int = 0) -> int:
    """A 63-bit seed derived from a client's ``seed``, the round number and a stream id.

    :class:`TorchClient` shuffles its data in round ``rnd`` with a ``torch.Generator`` seeded
    by ``round_seed(seed, rnd)`` (stream 0) and seeds torch's global generator (dropout and
    other in-model randomness) with stream 1.
    """
    entropy = [check_seed(seed), check_int("round", rnd, low=0), check_int("stream", stream, 0)]
    state = np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0]
    return int(state) & (2**63 - 1)


class Client:
    """A federated client with Flower ``NumPyClient`` semantics; subclass and override.

    ``fit`` trains from the given parameters and returns ``(parameters, n_examples, metrics)``;
    ``evaluate`` returns ``(loss, n_examples, metrics)``. ``config`` carries the round number
    under ``"round"`` (1-based, like Flower's ``server_round``) and any options the loop was
    given. Metrics values should be scalars (int, float, str, bool) to cross Flower's wire.
    """

    def get_parameters(self, config: dict) -> Parameters:
        """The client's own starting parameters (optional; the loops never call it)."""
        raise NotImplementedError

    def fit(self, parameters: Parameters, config: dict) -> tuple[Parameters, int, dict]:
        raise NotImplementedError

    def evaluate(self, parameters: Parameters, config: dict) -> tuple[float, int, dict]:
        raise NotImplementedError


def _as_xy(data, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise UnlearnError(f"{what} must be a pair (x, y) of tensors")
    x, y = (torch.as_tensor(t) for t in data)
    if x.ndim < 1 or y.ndim != 1 or len(x) != len(y):
        raise UnlearnError(
            f"{what}: x needs one row per label and y must be 1-D; got {tuple(x.shape)} and "
            f"{tuple(y.shape)}"
        )
    if len(y) == 0:
        raise UnlearnError(f"{what} must not be empty")
    if y.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise UnlearnError(f"{what}: labels must be integers, got {y.dtype}")
    return x, y.long()


class TorchClient(Client):
    """A client that trains a fresh copy of a PyTorch classifier on its local ``(x, y)``.

    Every ``fit`` builds ``model_factory()``, loads the received parameters, runs
    ``local_epochs`` passes of mini-batch training with cross-entropy (a fresh optimizer each
    round, as a stateless Flower client would) and returns the new parameters, the number of
    local examples and ``{"loss": mean training loss, "grad_evals": examples processed}``.
    Shuffling uses a ``torch.Generator`` seeded by :func:`round_seed` from ``seed`` and
    ``config["round"]``; torch's global generator is forked and seeded too, so a round's
    result depends only on the inputs, and the caller's random state is left alone.

    ``lr=0.0`` or ``local_epochs=0`` turns training off: ``fit`` hands the parameters back
    unchanged (``grad_evals`` 0, ``loss`` the local loss at those parameters), which makes
    :func:`dsgd` pure gossip averaging. ``evaluate`` scores ``eval_data`` (default: the
    training data) and reports ``{"accuracy": ...}``.
    """

    def __init__(
        self,
        model_factory: Callable[[], nn.Module],
        data,
        local_epochs: int = 1,
        batch_size: int = 32,
        lr: float = 0.01,
        optimizer: str = "sgd",
        momentum: float = 0.0,
        seed: int = 0,
        device: str = "cpu",
        weight_decay: float = 0.0,
        eval_data=None,
    ):
        if not callable(model_factory):
            raise UnlearnError("model_factory must be a callable returning an nn.Module")
        self.model_factory = model_factory
        self.device = torch.device(device)
        x, y = _as_xy(data, "data")
        self.x, self.y = x.to(self.device), y.to(self.device)
        if eval_data is None:
            self.eval_x, self.eval_y = self.x, self.y
        else:
            ex, ey = _as_xy(eval_data, "eval_data")
            self.eval_x, self.eval_y = ex.to(self.device), ey.to(self.device)
        self.local_epochs = check_int("local_epochs", local_epochs, low=0)
        self.batch_size = check_int("batch_size", batch_size, low=1)
        self.lr = check_float("lr", lr, low=0.0)
        if optimizer not in OPTIMIZERS:
            raise UnlearnError(f"unknown optimizer {optimizer!r} ({', '.join(OPTIMIZERS)})")
        self.optimizer = optimizer
        self.momentum = check_float("momentum", momentum, low=0.0, high=1.0)
        self.weight_decay = check_float("weight_decay", weight_decay, low=0.0)
        self.seed = check_seed(seed)

    def __len__(self) -> int:
        return len(self.y)

    def _fork(self):
        # CPU state is always saved and restored; a CUDA device's state too when used.
        return torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else [])

    def _model(self, parameters: Parameters | None, rnd: int) -> nn.Module:
        torch.manual_seed(round_seed(self.seed, rnd, stream=1))
        model = self.model_factory()
        if not isinstance(model, nn.Module):
            raise UnlearnError("model_factory must return an nn.Module")
        model = model.to(self.device)
        if parameters is not None:
            set_parameters(model, parameters)
        return model

    @torch.no_grad()
    def _score(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
        model.eval()
        loss, correct = 0.0, 0
        for s in range(0, len(y), 1024):
            logits = model(x[s : s + 1024])
            loss += float(F.cross_entropy(logits, y[s : s + 1024], reduction="sum"))
            correct += int((logits.argmax(dim=1) == y[s : s + 1024]).sum())
        return loss / len(y), correct / len(y)

    def get_parameters(self, config: dict) -> Parameters:
        """Parameters of a freshly built model (seeded from ``seed``, round 0)."""
        with self._fork():
            return get_parameters(self._model(None, 0))

    def fit(self, parameters: Parameters, config: dict) -> tuple[Parameters, int, dict]:
        rnd = check_int('config["round"]', config.get("round", 0), low=0)
        n = len(self.y)
        with self._fork():
            model = self._model(parameters, rnd)
            if self.lr == 0.0 or self.local_epochs == 0:
                loss, _ = self._score(model, self.x, self.y)
                return get_parameters(model), n, {"loss": loss, "grad_evals": 0}
            opt = make_optimizer(
                model.parameters(), self.optimizer, self.lr, self.weight_decay, self.momentum
            )
            gen = torch.Generator().manual_seed(round_seed(self.seed, rnd))
            model.train()
            total, seen = 0.0, 0
            for _ in range(self.local_epochs):
                order = torch.randperm(n, generator=gen).to(self.device)
                for s in range(0, n, self.batch_size):
                    idx = order[s : s + self.batch_size]
                    opt.zero_grad(set_to_none=True)
                    loss = F.cross_entropy(model(self.x[idx]), self.y[idx])
                    loss.backward()
                    opt.step()
                    total += float(loss.detach()) * len(idx)
                    seen += len(idx)
            if not math.isfinite(total):
                raise UnlearnError("local training diverged (non-finite loss): lower lr")
            return get_parameters(model), n, {"loss": total / seen, "grad_evals": seen}

    def evaluate(self, parameters: Parameters, config: dict) -> tuple[float, int, dict]:
        rnd = check_int('config["round"]', config.get("round", 0), low=0)
        with self._fork():
            model = self._model(parameters, rnd)
            loss, acc = self._score(model, self.eval_x, self.eval_y)
        return loss, len(self.eval_y), {"accuracy": acc}


# ---------------------------------------------------------------------------- loops


@dataclass
class FedResult:
    """What a federated or decentralized run produced.

    ``parameters``: the global model (FedAvg) or the nodes' average, the consensus (D-SGD).
    ``node_parameters``: every node's own parameters (D-SGD only). ``model_transfers`` and
    ``grad_evals``: totals over the run (see the module docstring). ``history``: one dict per
    round with that round's costs, mean client loss and, for D-SGD, the consensus distance.
    ``consensus_distance``: for D-SGD, the mean squared distance of the nodes to their average
    at the end.
    """

    parameters: Parameters
    node_parameters: list[Parameters] | None = None
    rounds: int = 0
    model_transfers: int = 0
    grad_evals: int = 0
    history: list[dict] = field(default_factory=list)
    consensus_distance: float | None = None


def _check_clients(clients) -> list:
    clients = list(clients)
    if not clients:
        raise UnlearnError("clients must not be empty")
    for i, c in enumerate(clients):
        if not callable(getattr(c, "fit", None)):
            raise UnlearnError(f"clients[{i}] has no fit(parameters, config) method")
    return clients


def _check_parameters(parameters, what: str) -> Parameters:
    if not isinstance(parameters, (list, tuple)) or not parameters:
        raise UnlearnError(f"{what} must be a non-empty list of numpy arrays")
    if not all(isinstance(p, np.ndarray) for p in parameters):
        raise UnlearnError(f"{what} must be a list of numpy arrays")
    return _copy(parameters)


def _weighted_mean(updates: list[tuple[Parameters, float]], reference: Parameters) -> Parameters:
    total = sum(w for _, w in updates)
    if not total > 0:
        raise UnlearnError("cannot average: the clients' weights sum to zero")
    out = []
    for i, ref in enumerate(reference):
        acc = np.zeros(ref.shape, dtype=np.float64)
        for params, w in updates:
            acc += np.asarray(params[i], dtype=np.float64) * w
        out.append(_cast(acc / total, ref.dtype))
    return out


def _fit(client, parameters: Parameters, config: dict, who: str):
    result = client.fit(_copy(parameters), dict(config))
    if not isinstance(result, (tuple, list)) or len(result) != 3:
        raise UnlearnError(f"{who}.fit must return (parameters, n_examples, metrics)")
    params, n, metrics = result
    params = _check_like(params, parameters, f"{who}.fit")
    n = check_int(f"{who}.fit n_examples", n, low=0)
    metrics = dict(metrics or {})
    return params, n, metrics


def _mean_loss(fits: list[tuple[Parameters, int, dict]]) -> float | None:
    pairs = [(float(m["loss"]), n) for _, n, m in fits if "loss" in m]
    weight = sum(n for _, n in pairs)
    if not pairs:
        return None
    if weight == 0:
        return sum(v for v, _ in pairs) / len(pairs)
    return sum(v * n for v, n in pairs) / weight


FitResult = tuple[Parameters, int, dict]


def _fedavg_args(clients, initial_parameters, rounds, fraction, seed, config):
    """The checked arguments of :func:`fedavg` (shared with the Flower engine)."""
    clients = _check_clients(clients)
    params = _check_parameters(initial_parameters, "initial_parameters")
    rounds = check_int("rounds", rounds, low=0)
    fraction = check_float("fraction", fraction, low=0.0, high=1.0, low_open=True)
    seed = check_seed(seed)
    return clients, params, rounds, fraction, seed, dict(config or {})


def _sample_size(k: int, fraction: float) -> int:
    """How many of ``k`` clients a FedAvg round samples."""
    return min(k, max(1, math.ceil(fraction * k - 1e-12)))


def _fedavg_loop(
    k: int,
    params: Parameters,
    rounds: int,
    fraction: float,
    seed: int,
    base: dict,
    evaluate_fn: EvaluateFn | None,
    fit_round: Callable[[list[int], Parameters, dict], list[FitResult]],
) -> FedResult:
    """FedAvg's rounds: sampling, aggregation, costs and history; ``fit_round(chosen,
    params, cfg)`` returns the checked fits of the clients ``chosen``, in that order."""
    m = _sample_size(k, fraction)
    rng = np.random.default_rng(seed)
    transfers = grad_evals = 0
    history = []
    for r in range(1, rounds + 1):
        chosen = list(range(k)) if m == k else sorted(rng.choice(k, m, replace=False).tolist())
        cfg = {**base, "round": r}
        fits = fit_round(chosen, params, cfg)
        params = _weighted_mean([(p, float(n)) for p, n, _ in fits], params)
        transfers += 2 * len(chosen)
        grad_evals += sum(int(mt.get("grad_evals", 0)) for _, _, mt in fits)
        entry = {
            "round": r,
            "clients": chosen,
            "loss": _mean_loss(fits),
            "model_transfers": transfers,
            "grad_evals": grad_evals,
        }
        if evaluate_fn is not None:
            entry.update(evaluate_fn(r, _copy(params)) or {})
        history.append(entry)
    return FedResult(
        parameters=params,
        rounds=rounds,
        model_transfers=transfers,
        grad_evals=grad_evals,
        history=history,
    )


def fedavg(
    clients: Sequence[Client],
    initial_parameters: Parameters,
    rounds: int,
    fraction: float = 1.0,
    seed: int = 0,
    *,
    config: dict | None = None,
    evaluate_fn: EvaluateFn | None = None,
) -> FedResult:
    """Federated averaging: each round, ``ceil(fraction * len(clients))`` clients (drawn
    without replacement from ``default_rng(seed)``; all of them when ``fraction`` is 1) fit
    from the global parameters, which become the average of their results weighted by their
    example counts (accumulated in float64, cast back to each array's dtype).

    Clients get ``{**config, "round": r}`` with ``r`` from 1. ``evaluate_fn(r, parameters)``,
    when given, runs on the new global model after each round and its dict is merged into
    that round's history entry.
    """
    clients, params, rounds, fraction, seed, base = _fedavg_args(
        clients, initial_parameters, rounds, fraction, seed, config
    )

    def fit_round(chosen, params, cfg):
        return [_fit(clients[i], params, cfg, f"clients[{i}]") for i in chosen]

    return _fedavg_loop(len(clients), params, rounds, fraction, seed, base, evaluate_fn, fit_round)


def _check_mixing(mixing, k: int) -> np.ndarray:
    if isinstance(mixing, nx.Graph):
        mixing = metropolis(mixing)
    q = np.asarray(mixing, dtype=np.float64)
    if q.shape != (k, k):
        raise UnlearnError(f"mixing must be a {k} x {k} matrix (one row per client), got {q.shape}")
    if not np.all(np.isfinite(q)) or np.any(q < 0):
        raise UnlearnError("mixing must be finite and non-negative")
    if not np.allclose(q.sum(axis=1), 1.0, rtol=0.0, atol=1e-8):
        raise UnlearnError("mixing rows must each sum to 1")
    return q


def _dsgd_args(clients, initial_parameters, mixing, rounds, seed, config):
    """The checked arguments of :func:`dsgd`: clients, one parameter list per node, the
    mixing matrix, rounds and the base config (shared with the Flower engine)."""
    clients = _check_clients(clients)
    k = len(clients)
    rounds = check_int("rounds", rounds, low=0)
    check_seed(seed)
    q = _check_mixing(mixing, k)
    nodes = _node_lists(initial_parameters, k, "initial_parameters", f"{k} nodes")
    if nodes is None:
        start = _check_parameters(initial_parameters, "initial_parameters")
        nodes = [_copy(start) for _ in range(k)]
    return clients, nodes, q, rounds, dict(config or {})


def _node_lists(value, k: int, name: str, nodes_text: str) -> list[Parameters] | None:
    """``value`` checked as one parameter list per node (``k`` of them, all alike), or None
    when it is not a list of lists (a single parameter list, checked by the caller)."""
    if not (
        isinstance(value, (list, tuple))
        and value
        and all(isinstance(p, (list, tuple)) for p in value)
    ):
        return None
    if len(value) != k:
        raise UnlearnError(f"{name}: got {len(value)} per-node lists for {nodes_text}")
    nodes = [_check_parameters(p, f"{name}[{i}]") for i, p in enumerate(value)]
    for i, p in enumerate(nodes[1:], start=1):
        _check_like(p, nodes[0], f"{name}[{i}]")
    return nodes


def _neighbours(q: np.ndarray) -> list[list[int]]:
    """Per node ``i``, the ``j`` with ``Q[i, j] > 0`` (``i`` itself included), ascending."""
    return [np.flatnonzero(q[i]).tolist() for i in range(len(q))]


def _gossip_transfers(q: np.ndarray) -> int:
    """Models sent per D-SGD round: one per off-diagonal nonzero of ``Q``."""
    return int(np.count_nonzero(q) - np.count_nonzero(np.diag(q)))


def _dsgd_loop(
    nodes: list[Parameters],
    q: np.ndarray,
    rounds: int,
    base: dict,
    evaluate_fn: EvaluateFn | None,
    step: Callable[[list[Parameters], dict], list[FitResult]],
) -> FedResult:
    """D-SGD's rounds: costs and history; ``step(nodes, cfg)`` mixes and trains every node
    and returns the checked fits in node order."""
    per_round = _gossip_transfers(q)
    transfers = grad_evals = 0
    history = []
    for r in range(1, rounds + 1):
        cfg = {**base, "round": r}
        fits = step(nodes, cfg)
        nodes = [p for p, _, _ in fits]
        transfers += per_round
        grad_evals += sum(int(mt.get("grad_evals", 0)) for _, _, mt in fits)
        entry = {
            "round": r,
            "loss": _mean_loss(fits),
            "consensus_distance": consensus_distance(nodes),
            "model_transfers": transfers,
            "grad_evals": grad_evals,
        }
        if evaluate_fn is not None:
            entry.update(evaluate_fn(r, _average(nodes)) or {})
        history.append(entry)
    return FedResult(
        parameters=_average(nodes),
        node_parameters=nodes,
        rounds=rounds,
        model_transfers=transfers,
        grad_evals=grad_evals,
        history=history,
        consensus_distance=consensus_distance(nodes),
    )


def dsgd(
    clients: Sequence[Client],
    initial_parameters,
    mixing,
    rounds: int,
    seed: int = 0,
    *,
    config: dict | None = None,
    evaluate_fn: EvaluateFn | None = None,
) -> FedResult:
    """Decentralized SGD (gossip then local training) over a mixing matrix.

    Node ``i`` is ``clients[i]``. Each round every node first replaces its parameters by
    ``sum_j Q[i, j] * x_j`` over its neighbours' current parameters (float64, cast back),
    then fits locally from there. ``mixing`` is a row-stochastic ``n x n`` matrix or a graph
    (then its :func:`~unlearn.federation.topology.metropolis` matrix).
    ``initial_parameters`` is one list of arrays every node starts from, or a list holding
    one such list per node. Each round costs one transfer per off-diagonal nonzero of ``Q``
    (2 per undirected edge). The result's ``parameters`` is the plain average of the nodes
    (the quantity a doubly stochastic ``Q`` preserves); ``evaluate_fn(r, consensus)`` runs
    after each round. ``seed`` is checked and kept for symmetry with :func:`fedavg` (and a
    later random node activation): with every node active every round nothing here is
    random, the clients carry their own seeds.
    """
    clients, nodes, q, rounds, base = _dsgd_args(
        clients, initial_parameters, mixing, rounds, seed, config
    )
    neighbours = _neighbours(q)

    def step(nodes, cfg):
        mixed = [
            _weighted_mean([(nodes[j], q[i, j]) for j in neighbours[i]], nodes[i])
            for i in range(len(nodes))
        ]
        return [_fit(clients[i], mixed[i], cfg, f"clients[{i}]") for i in range(len(nodes))]

    return _dsgd_loop(nodes, q, rounds, base, evaluate_fn, step)


def _average(nodes: list[Parameters]) -> Parameters:
    return _weighted_mean([(p, 1.0) for p in nodes], nodes[0])
