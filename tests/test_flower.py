"""The Flower engine (unlearn.federation.flower) against the in-process engine.

The ``test_simulation_*`` tests are the slow ones (deselect them with ``-k "not
simulation"``): each runs Flower's Simulation Runtime, with Ray actors that import Flower
and torch. Starting Ray is the largest part of a run, and Flower's Ray backend calls
``ray.shutdown()`` at the end of every simulation, so runs cannot share a Ray start on
their own; here they share one anyway (the ``shared_ray`` fixture keeps Flower from shutting
the session down between them). Two more runs are left out unless ``UNLEARN_FLOWER_SLOW=1``:
the default way, where a call starts and removes its own Ray session (one more Ray start),
and a client failing inside its Flower node (the error mapping itself is tested without
Flower). The module checks at the end that every Ray process and temporary directory its
tests created is gone.
"""

from __future__ import annotations

import os

# Flower reads this once, on import: no telemetry requests from the tests.
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")

import ast
import glob
import importlib.util
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch
from torch import nn

import unlearn
from unlearn.errors import UnlearnError
from unlearn.federation import (
    Client,
    TorchClient,
    dsgd,
    edges,
    fedavg,
    flower_dsgd,
    flower_fedavg,
    get_parameters,
    metropolis,
    ring,
    set_parameters,
)

HAVE_FLOWER = all(importlib.util.find_spec(m) is not None for m in ("flwr", "ray"))
needs_flower = pytest.mark.skipif(not HAVE_FLOWER, reason="flwr[simulation] not installed")
# raised by ray.init for num_gpus=0; nothing of ours to change
ray_tip = pytest.mark.filterwarnings("ignore:Tip. In future versions of Ray:FutureWarning")
# raised inside typer (imported by flwr) by the installed click; nothing of ours either
pytestmark = pytest.mark.filterwarnings("ignore:'click.utils.get_:DeprecationWarning")

DIM, CLASSES, N = 8, 3, 120


def make_model() -> nn.Module:
    return nn.Sequential(nn.Linear(DIM, 16), nn.ReLU(), nn.Linear(16, CLASSES))


@pytest.fixture(scope="module")
def blobs() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    centres = 3.0 * torch.randn(CLASSES, DIM, generator=gen)
    y = torch.arange(N) % CLASSES
    return centres[y] + 0.5 * torch.randn(N, DIM, generator=gen), y


@pytest.fixture(scope="module")
def start() -> list[np.ndarray]:
    torch.manual_seed(0)
    return get_parameters(make_model())


class Chatty(TorchClient):
    """A TorchClient that also reports a numpy scalar, a str and a bool (module level, so
    Ray's workers can unpickle it)."""

    def fit(self, parameters, config):
        params, n, metrics = super().fit(parameters, config)
        extra = {"lr": np.float32(self.lr), "tag": f"round {config['round']}", "ok": True}
        return params, n, {**metrics, **extra}


def clients_for(data, cuts, kind=TorchClient) -> list[TorchClient]:
    """Clients on consecutive slices of ``data`` (unequal sizes, so FedAvg's weights
    matter); client ``i`` has seed ``i``."""
    x, y = data
    bounds = [0, *cuts, len(y)]
    return [
        kind(make_model, (x[a:b], y[a:b]), batch_size=16, lr=0.1, seed=i)
        for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:], strict=True))
    ]


def accuracy(params, data) -> float:
    model = make_model()
    set_parameters(model, params)
    with torch.no_grad():
        return float((model(data[0]).argmax(1) == data[1]).float().mean())


def max_diff(a, b) -> float:
    assert len(a) == len(b)
    return max(float(np.max(np.abs(p - q))) for p, q in zip(a, b, strict=True))


def same_history(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for key in x:
            if isinstance(x[key], float):
                assert y[key] == pytest.approx(x[key], rel=1e-9, abs=1e-12), key
            else:
                assert y[key] == x[key], key


# ---------------------------------------------------------------------------- clean-up


RAY_MARKERS = ("ray::", "raylet", "gcs_server", f"{os.sep}ray{os.sep}")


def ray_processes() -> dict[int, str]:
    out = {}
    for proc in psutil.process_iter(["cmdline", "name"]):
        cmd = " ".join(proc.info["cmdline"] or []) or (proc.info["name"] or "")
        if any(marker in cmd for marker in RAY_MARKERS):
            out[proc.pid] = cmd
    return out


def ray_temp_dirs() -> set[str]:
    roots = {tempfile.gettempdir(), "/tmp"}
    return {d for root in roots for d in glob.glob(os.path.join(root, "unlearn-ray-*"))}


@pytest.fixture(scope="module", autouse=True)
def nothing_left_behind():
    """Ray processes and session directories started by this module are gone at its end
    (processes that existed before are not looked at)."""
    before, dirs = set(ray_processes()), ray_temp_dirs()
    yield
    deadline = time.monotonic() + 30.0  # actors exit shortly after their raylet
    while (left := {p: c for p, c in ray_processes().items() if p not in before}) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.25)
    assert not left, f"Ray processes left behind: {left}"
    assert ray_temp_dirs() <= dirs, f"Ray temp dirs left behind: {ray_temp_dirs() - dirs}"


@pytest.fixture(scope="module")
def shared_ray():
    """One Ray session (one CPU) for the simulations that ask for it: the engine uses a
    session that is already up, and while these tests run ``ray.shutdown`` (called by
    Flower's ``RayBackend.terminate`` after each simulation) does nothing; the session is
    shut down for real, and its temporary directory removed, when the module is done."""
    import ray

    from unlearn.federation.flower import _ray

    with _ray(1, 0, None, False), pytest.MonkeyPatch.context() as patch:
        patch.setattr(ray, "shutdown", lambda *args, **kwargs: None)
        yield
    assert not ray.is_initialized()


# ---------------------------------------------------------------------------- simulations


def check_fedavg(blobs, start, fraction, chosen, **opts):
    evaluate = lambda r, p: {"accuracy": accuracy(p, blobs)}  # noqa: E731
    ref = fedavg(clients_for(blobs, [30, 70]), start, 2, fraction, seed=0, evaluate_fn=evaluate)
    out = flower_fedavg(
        clients_for(blobs, [30, 70]), start, 2, fraction, seed=0, evaluate_fn=evaluate, **opts
    )
    assert [h["clients"] for h in out.history] == chosen
    assert max_diff(out.parameters, ref.parameters) < 1e-6
    assert all(p.dtype == np.float32 for p in out.parameters)
    assert out.model_transfers == ref.model_transfers == 2 * sum(len(c) for c in chosen)
    assert out.grad_evals == ref.grad_evals
    assert out.rounds == 2 and out.node_parameters is None
    same_history(ref.history, out.history)
    assert max_diff(out.parameters, start) > 1e-3  # it trained


SLOW = os.environ.get("UNLEARN_FLOWER_SLOW") == "1"
slow = pytest.mark.skipif(not SLOW, reason="one more Flower run; set UNLEARN_FLOWER_SLOW=1")


@needs_flower
@ray_tip
@slow
def test_simulation_fedavg_own_ray(blobs, start):
    """The default way: flower_fedavg starts its own Ray session and leaves nothing behind
    (Flower shuts Ray down, the engine removes the session's temporary directory). Runs
    before any test asks for ``shared_ray``."""
    import ray

    assert not ray.is_initialized()
    dirs = ray_temp_dirs()
    check_fedavg(blobs, start, 1.0, [[0, 1, 2], [0, 1, 2]], num_cpus=1)
    assert not ray.is_initialized()
    assert ray_temp_dirs() <= dirs


@needs_flower
@ray_tip
def test_simulation_fedavg_all_clients(blobs, start, shared_ray):
    """FedAvg, fraction 1.0."""
    check_fedavg(blobs, start, 1.0, [[0, 1, 2], [0, 1, 2]])


@needs_flower
@ray_tip
def test_simulation_fedavg_sampled(blobs, start, shared_ray):
    """FedAvg, 2 of 3 clients a round: default_rng(0) draws {1, 2}, then {0, 2}. (Fraction
    0.67 of 3 clients rounds up to all three, see test_fraction_067_of_three_is_everyone.)"""
    check_fedavg(blobs, start, 0.5, [[1, 2], [0, 2]])


@needs_flower
@ray_tip
def test_simulation_dsgd_ring(blobs, shared_ray):
    """D-SGD on a ring of 4 from 4 different starting points, 2 rounds; the clients' metrics
    include non-numbers, which cross as a ConfigRecord."""
    graph = ring(4)
    q = metropolis(graph)
    nodes = []
    for i in range(4):  # different starting points, so round 1's gossip matters
        torch.manual_seed(10 + i)
        nodes.append(get_parameters(make_model()))
    ref = dsgd(clients_for(blobs, [20, 50, 80], Chatty), nodes, q, rounds=2)
    out = flower_dsgd(clients_for(blobs, [20, 50, 80], Chatty), nodes, q, rounds=2)
    assert max_diff(out.parameters, ref.parameters) < 1e-6
    for mine, theirs in zip(out.node_parameters, ref.node_parameters, strict=True):
        assert max_diff(mine, theirs) < 1e-6
    assert out.model_transfers == ref.model_transfers == 2 * edges(graph) * 2
    assert out.grad_evals == ref.grad_evals == 2 * N
    assert out.consensus_distance == pytest.approx(ref.consensus_distance, rel=1e-9)
    same_history(ref.history, out.history)


class Failing(Client):
    """Fails in round 2 (module level, so Ray's workers can unpickle it)."""

    def fit(self, parameters, config):
        if config["round"] == 2:
            raise ValueError("no data today")
        return parameters, 1, {"loss": 0.5, "note": "fine"}


@needs_flower
@ray_tip
@slow
def test_simulation_client_error_names_the_client(blobs, start, shared_ray):
    clients = [*clients_for(blobs, [60]), Failing()]
    with pytest.raises(UnlearnError, match=r"round 2: clients\[2\] failed .*: no data today"):
        flower_fedavg(clients, start, rounds=2)


# ---------------------------------------------------------------------------- no Ray start


def test_fraction_067_of_three_is_everyone(blobs, start):
    out = fedavg(clients_for(blobs, [30, 70]), start, rounds=2, fraction=0.67, seed=0)
    assert [h["clients"] for h in out.history] == [[0, 1, 2], [0, 1, 2]]


def test_missing_flower_names_the_extra(blobs, start, monkeypatch):
    monkeypatch.setitem(sys.modules, "flwr", None)  # `import flwr` now raises ImportError
    clients = clients_for(blobs, [60])
    with pytest.raises(UnlearnError, match=r"pip install 'unlearn-toolkit\[federated\]'"):
        flower_fedavg(clients, start, rounds=1)
    with pytest.raises(UnlearnError, match=r"unlearn-toolkit\[federated\]"):
        flower_dsgd(clients, start, np.full((2, 2), 0.5), rounds=1)


def test_no_module_level_flower_import():
    """The toolkit imports without flwr: no module of the package imports it (or, in the
    Flower engine, Ray) at module level; the engine imports both inside its functions."""
    package = Path(unlearn.__file__).parent
    for path in sorted(package.rglob("*.py")):
        banned = {"flwr", "ray"} if path.name == "flower.py" else {"flwr"}
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert name.split(".")[0] not in banned, f"{path}: module-level import {name}"


@needs_flower
def test_checks_run_before_ray_starts(blobs, start):
    clients = clients_for(blobs, [60])
    with pytest.raises(UnlearnError, match=r"config\['bad'\]: Flower's ConfigRecord"):
        flower_fedavg(clients, start, rounds=1, config={"bad": {"nested": 1}})
    with pytest.raises(UnlearnError, match="fraction"):
        flower_fedavg(clients, start, rounds=1, fraction=0.0)
    with pytest.raises(UnlearnError, match="2 x 2"):
        flower_dsgd(clients, start, np.eye(3), rounds=1)
    with pytest.raises(UnlearnError, match="num_cpus"):
        flower_dsgd(clients, start, np.full((2, 2), 0.5), rounds=1, num_cpus=0)
    # no rounds: nothing to simulate, the starting point comes back
    out = flower_fedavg(clients, start, rounds=0)
    assert max_diff(out.parameters, start) == 0.0 and out.model_transfers == 0
    out = flower_dsgd(clients, start, np.full((2, 2), 0.5), rounds=0)
    assert max_diff(out.parameters, start) == 0.0 and len(out.node_parameters) == 2


def test_reply_errors_name_the_client():
    """How a failed or missing reply surfaces (the grid and messages are stand-ins; the
    reason has the form Flower 1.42 gives a ClientApp's exception)."""
    from types import SimpleNamespace as NS

    from unlearn.federation.flower import _exchange

    reason = (
        "<class 'ray.exceptions.RayTaskError(ClientAppException)'>:<'ray::ClientAppActor.run()"
        ' (pid=1)\n  File "client_app.py", line 161\nValueError: no data today\n\n'
        "flwr.clientapp.client_app.ClientAppException: \nException ClientAppException "
        "occurred. Message: no data today'>"
    )

    def reply(node, error=None):
        return NS(
            metadata=NS(src_node_id=node),
            has_error=lambda: error is not None,
            error=NS(reason=error),
        )

    class Grid:
        def __init__(self, replies):
            self.replies = replies

        def send_and_receive(self, messages, *, timeout=None):
            return self.replies

    messages = {0: NS(metadata=NS(dst_node_id=11)), 1: NS(metadata=NS(dst_node_id=22))}
    out = _exchange(Grid([reply(22), reply(11)]), messages, None, "round 1")
    assert out[0].metadata.src_node_id == 11 and out[1].metadata.src_node_id == 22
    with pytest.raises(
        UnlearnError, match=r"^round 2: clients\[1\] failed on its Flower node: no data today\n"
    ):
        _exchange(Grid([reply(11), reply(22, reason)]), messages, None, "round 2")
    with pytest.raises(UnlearnError, match=r"no reply from clients\[0\] within 5.0 s"):
        _exchange(Grid([reply(22)]), messages, 5.0, "round 3")
