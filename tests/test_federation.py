"""Federation groundwork: partitions, topologies and mixing matrices, FedAvg and D-SGD."""

from __future__ import annotations

import math

import networkx as nx
import numpy as np
import pytest
import torch
from torch import nn

from unlearn.errors import UnlearnError
from unlearn.federation import (
    Client,
    TorchClient,
    complete,
    consensus_distance,
    dirichlet_partition,
    dsgd,
    edges,
    erdos_renyi,
    fedavg,
    get_parameters,
    iid_partition,
    metropolis,
    ring,
    round_seed,
    set_parameters,
    spectral_gap,
    topology,
    torus,
)

DIM, CLASSES, N = 8, 3, 240


def make_model() -> nn.Module:
    return nn.Sequential(nn.Linear(DIM, 16), nn.ReLU(), nn.Linear(16, CLASSES))


@pytest.fixture(scope="module")
def blobs() -> tuple[torch.Tensor, torch.Tensor]:
    """Three well separated Gaussian blobs in 8-D."""
    gen = torch.Generator().manual_seed(0)
    centres = 3.0 * torch.randn(CLASSES, DIM, generator=gen)
    y = torch.arange(N) % CLASSES
    x = centres[y] + 0.5 * torch.randn(N, DIM, generator=gen)
    return x, y


@pytest.fixture(scope="module")
def start() -> list[np.ndarray]:
    torch.manual_seed(0)
    return get_parameters(make_model())


def clients_for(parts, data, **kw) -> list[TorchClient]:
    """One TorchClient per index array; client ``i`` gets seed ``i`` unless ``seed`` is given."""
    x, y = data
    seed = kw.pop("seed", None)
    opts = {"local_epochs": 1, "batch_size": 16, "lr": 0.1, **kw}
    return [
        TorchClient(make_model, (x[p], y[p]), seed=i if seed is None else seed, **opts)
        for i, p in enumerate(parts)
    ]


def accuracy(params, data) -> float:
    model = make_model()
    set_parameters(model, params)
    with torch.no_grad():
        return float((model(data[0]).argmax(1) == data[1]).float().mean())


def max_diff(a, b) -> float:
    return max(float(np.max(np.abs(p - q))) for p, q in zip(a, b, strict=True))


def check_split(parts, n):
    joined = np.concatenate(parts)
    assert all(p.dtype == np.int64 for p in parts)
    assert all(np.all(np.diff(p) > 0) for p in parts)  # sorted, no repeats
    assert len(joined) == n and np.array_equal(np.sort(joined), np.arange(n))


# ---------------------------------------------------------------------------- partitions


def test_iid_partition_disjoint_covering_seeded():
    parts = iid_partition(103, 5, seed=3)
    check_split(parts, 103)
    assert sorted(len(p) for p in parts) == [20, 20, 21, 21, 21]
    again = iid_partition(103, 5, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))
    other = iid_partition(103, 5, seed=4)
    assert not all(np.array_equal(a, b) for a, b in zip(parts, other, strict=True))


def test_dirichlet_partition_disjoint_covering_seeded():
    labels = np.arange(300) % 5
    parts = dirichlet_partition(labels, 6, alpha=0.5, seed=1, min_size=5)
    check_split(parts, 300)
    assert min(len(p) for p in parts) >= 5
    again = dirichlet_partition(labels, 6, alpha=0.5, seed=1, min_size=5)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))
    other = dirichlet_partition(labels, 6, alpha=0.5, seed=2, min_size=5)
    assert not all(np.array_equal(a, b) for a, b in zip(parts, other, strict=True))


def mean_label_entropy(parts, labels, classes) -> float:
    out = []
    for p in parts:
        freq = np.bincount(labels[p], minlength=classes) / len(p)
        freq = freq[freq > 0]
        out.append(float(-(freq * np.log(freq)).sum()))
    return float(np.mean(out))


def test_dirichlet_small_alpha_is_more_skewed():
    labels = np.arange(1000) % 10
    skewed = dirichlet_partition(labels, 8, alpha=0.1, seed=0)
    even = dirichlet_partition(labels, 8, alpha=100.0, seed=0)
    h_skewed = mean_label_entropy(skewed, labels, 10)
    h_even = mean_label_entropy(even, labels, 10)
    assert h_skewed < h_even - 0.5
    assert h_even > 0.95 * math.log(10)  # large alpha: close to the uniform label mix


def test_dirichlet_gives_up_with_a_clear_error():
    labels = np.arange(100) % 2
    with pytest.raises(UnlearnError, match="min_size=12.*max_tries=3"):
        dirichlet_partition(labels, 8, alpha=0.01, seed=0, min_size=12, max_tries=3)
    with pytest.raises(UnlearnError, match="min_size"):
        dirichlet_partition(labels, 8, alpha=1.0, seed=0, min_size=13)  # 104 > 100


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: iid_partition(10, 0, 0), "clients"),
        (lambda: iid_partition(10, 11, 0), "clients"),
        (lambda: iid_partition(10, 2.0, 0), "clients"),
        (lambda: iid_partition(10, 2, 1.5), "seed"),
        (lambda: iid_partition(10, 2, "0"), "seed"),
        (lambda: iid_partition(10, 2, True), "seed"),
        (lambda: iid_partition(10, 2, -1), "seed"),
        (lambda: dirichlet_partition(np.arange(10), 2, 0.0, 0), "alpha"),
        (lambda: dirichlet_partition(np.arange(10), 2, -1.0, 0), "alpha"),
        (lambda: dirichlet_partition(np.arange(10), 2, float("nan"), 0), "alpha"),
        (lambda: dirichlet_partition(np.arange(10), 2, float("inf"), 0), "alpha"),
        (lambda: dirichlet_partition(np.zeros((5, 2), int), 2, 1.0, 0), "labels"),
        (lambda: dirichlet_partition(np.zeros(10), 2, 1.0, 0), "labels"),
        (lambda: dirichlet_partition(np.arange(10), 11, 1.0, 0), "clients"),
        (lambda: dirichlet_partition(np.arange(10), 2, 1.0, np.float64(1)), "seed"),
    ],
)
def test_partition_errors_name_the_argument(call, name):
    with pytest.raises(UnlearnError, match=name):
        call()


# ---------------------------------------------------------------------------- topologies


@pytest.mark.parametrize(
    "graph", [ring(16), torus(4, 4), complete(16), erdos_renyi(16, 0.3, seed=0), ring(2)]
)
def test_metropolis_is_symmetric_doubly_stochastic(graph):
    q = metropolis(graph)
    n = graph.number_of_nodes()
    assert q.shape == (n, n)
    assert np.array_equal(q, q.T)
    assert np.all(q >= 0)
    assert np.allclose(q.sum(axis=1), 1.0, atol=1e-12)
    # nonzero off-diagonal entries exactly on the edges
    assert np.count_nonzero(q - np.diag(np.diag(q))) == 2 * edges(graph)
    assert 0.0 < spectral_gap(q) <= 1.0 + 1e-12


def test_spectral_gap_orders_complete_torus_ring():
    gaps = [spectral_gap(metropolis(g)) for g in (complete(16), torus(4, 4), ring(16))]
    assert gaps[0] == pytest.approx(1.0)
    assert gaps[1] == pytest.approx(0.4)  # Q = (I + A) / 5, |lambda_2| = 3/5
    assert gaps[2] == pytest.approx(1 - (1 + 2 * math.cos(2 * math.pi / 16)) / 3)
    assert gaps[0] > gaps[1] > gaps[2] > 0
    # a disconnected graph never mixes
    two = nx.disjoint_union(complete(3), complete(3))
    assert spectral_gap(metropolis(two)) == pytest.approx(0.0, abs=1e-12)


def test_graph_shapes_and_edge_counts():
    assert edges(ring(16)) == 16 and edges(ring(2)) == 1 and edges(ring(1)) == 0
    assert edges(torus(4, 4)) == 32 and edges(torus(2, 3)) == 9
    assert edges(complete(16)) == 120
    for g in (ring(16), torus(4, 4), complete(5)):
        assert sorted(g.nodes) == list(range(g.number_of_nodes()))
        assert nx.number_of_selfloops(g) == 0
    assert all(d == 4 for _, d in torus(4, 5).degree())


def test_erdos_renyi_connected_and_seeded():
    g = erdos_renyi(30, 0.15, seed=5)
    assert nx.is_connected(g) and sorted(g.nodes) == list(range(30))
    assert set(g.edges) == set(erdos_renyi(30, 0.15, seed=5).edges)
    assert set(g.edges) != set(erdos_renyi(30, 0.15, seed=6).edges)
    with pytest.raises(UnlearnError, match="connected"):
        erdos_renyi(50, 0.005, seed=0, max_tries=3)
    with pytest.raises(UnlearnError, match="p must"):
        erdos_renyi(10, 0.0)


def test_topology_dispatch():
    assert set(topology("ring", 6).edges) == set(ring(6).edges)
    assert set(topology("complete", 5).edges) == set(complete(5).edges)
    assert set(topology("torus", 12).edges) == set(torus(3, 4).edges)
    assert set(topology("torus", 7, rows=1).edges) == set(ring(7).edges)
    assert set(topology("erdos_renyi", 12, p=0.4, seed=2).edges) == set(
        erdos_renyi(12, 0.4, seed=2).edges
    )
    assert edges(topology("torus", 3)) == 3
    with pytest.raises(UnlearnError, match="prime"):
        topology("torus", 13)
    with pytest.raises(UnlearnError, match="rows"):
        topology("torus", 12, rows=5)
    with pytest.raises(UnlearnError, match="unknown topology"):
        topology("star", 5)
    with pytest.raises(UnlearnError, match="needs the edge probability p"):
        topology("erdos_renyi", 5)
    with pytest.raises(UnlearnError, match="unknown option"):
        topology("ring", 5, p=0.3)


# ---------------------------------------------------------------------------- engine


def test_parameters_round_trip_with_float_buffers():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    model.train()
    model(torch.randn(8, 4))  # moves the running statistics
    params = get_parameters(model)
    # weight, bias, bn weight, bn bias, running_mean, running_var (no num_batches_tracked)
    assert [p.shape for p in params] == [(3, 4), (3,), (3,), (3,), (3,), (3,)]
    fresh = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    set_parameters(fresh, params)
    assert max_diff(get_parameters(fresh), params) == 0.0
    with pytest.raises(UnlearnError, match="shape"):
        set_parameters(fresh, [p.T for p in params])
    with pytest.raises(UnlearnError, match="arrays"):
        set_parameters(fresh, params[:-1])


def test_fedavg_one_client_equals_local_training(blobs, start):
    x, y = blobs
    client = TorchClient(make_model, (x, y), local_epochs=1, batch_size=16, lr=0.1, seed=7)
    result = fedavg([client], start, rounds=1)

    model = make_model()
    set_parameters(model, start)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.0)
    order = torch.randperm(N, generator=torch.Generator().manual_seed(round_seed(7, 1)))
    for s in range(0, N, 16):
        idx = order[s : s + 16]
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
    assert max_diff(result.parameters, get_parameters(model)) < 1e-6
    assert result.model_transfers == 2 and result.grad_evals == N and result.rounds == 1


def test_fedavg_identical_clients_equal_one_client(blobs, start):
    one = fedavg(clients_for([np.arange(N)], blobs, seed=3), start, rounds=2)
    same = fedavg(clients_for([np.arange(N)] * 3, blobs, seed=3), start, rounds=2)
    assert max_diff(one.parameters, same.parameters) < 1e-6
    assert same.model_transfers == 2 * 3 * 2 and same.grad_evals == 3 * one.grad_evals


def test_fedavg_deterministic_and_learns(blobs, start):
    parts = dirichlet_partition(blobs[1].numpy(), 6, alpha=0.5, seed=0, min_size=8)
    seen = []

    def run():
        clients = clients_for(parts, blobs, local_epochs=2)
        return fedavg(
            clients,
            start,
            rounds=4,
            fraction=0.5,
            seed=11,
            evaluate_fn=lambda r, p: {"accuracy": accuracy(p, blobs)},
        )

    a, b = run(), run()
    for p, q in zip(a.parameters, b.parameters, strict=True):
        assert np.array_equal(p, q) and p.dtype == np.float32
    assert a.history == b.history
    # three of six clients each round, seeded: the same draws, not always the same three
    for entry in a.history:
        seen.append(tuple(entry["clients"]))
        assert len(entry["clients"]) == 3
    assert len(set(seen)) > 1
    assert a.model_transfers == 2 * 3 * 4
    sizes = [len(p) for p in parts]
    assert a.grad_evals == sum(2 * sizes[i] for entry in a.history for i in entry["clients"])
    assert accuracy(a.parameters, blobs) > max(0.9, accuracy(start, blobs) + 0.2)
    assert a.history[-1]["accuracy"] == accuracy(a.parameters, blobs)


def test_dsgd_complete_uniform_equals_fedavg(blobs, start):
    parts = iid_partition(N, 4, seed=0)  # equal sizes: FedAvg weights are uniform too
    fed = fedavg(clients_for(parts, blobs), start, rounds=3)
    dec = dsgd(clients_for(parts, blobs), start, np.full((4, 4), 0.25), rounds=3)
    assert max_diff(fed.parameters, dec.parameters) < 1e-6
    assert dec.grad_evals == fed.grad_evals == 3 * N
    assert len(dec.node_parameters) == 4 and dec.consensus_distance > 0
    assert dec.model_transfers == 2 * edges(complete(4)) * 3


@pytest.mark.parametrize("graph", [ring(6), torus(2, 3), erdos_renyi(6, 0.5, seed=1)])
def test_dsgd_transfer_counts(blobs, start, graph):
    parts = iid_partition(N, 6, seed=1)
    result = dsgd(clients_for(parts, blobs), start, graph, rounds=2)
    assert result.model_transfers == 2 * edges(graph) * 2
    assert [h["model_transfers"] for h in result.history] == [2 * edges(graph), 4 * edges(graph)]
    assert result.grad_evals == 2 * N


def test_gossip_converges_to_the_initial_average_at_the_spectral_rate(blobs):
    graph = torus(3, 3)
    q = metropolis(graph)
    lam = 1.0 - spectral_gap(q)  # 0.4 for the 3 x 3 torus
    nodes = []
    for i in range(9):
        torch.manual_seed(100 + i)
        nodes.append(get_parameters(make_model()))
    mean0 = [np.mean(np.stack(a).astype(np.float64), axis=0) for a in zip(*nodes, strict=True)]
    d0 = consensus_distance(nodes)
    parts = iid_partition(N, 9, seed=0)
    result = dsgd(clients_for(parts, blobs, lr=0.0), nodes, q, rounds=12)
    assert result.grad_evals == 0
    for t, entry in enumerate(result.history, start=1):
        assert entry["consensus_distance"] <= lam ** (2 * t) * d0 * (1 + 1e-6) + 1e-10
    assert result.consensus_distance < 1e-8 * d0
    assert max_diff(result.parameters, mean0) < 1e-5
    for node in result.node_parameters:
        assert max_diff(node, mean0) < 1e-5


def test_engine_errors(blobs, start):
    clients = clients_for(iid_partition(N, 3, seed=0), blobs)
    with pytest.raises(UnlearnError, match="fraction"):
        fedavg(clients, start, rounds=1, fraction=0.0)
    with pytest.raises(UnlearnError, match="rounds"):
        fedavg(clients, start, rounds=-1)
    with pytest.raises(UnlearnError, match="clients"):
        fedavg([], start, rounds=1)
    with pytest.raises(UnlearnError, match="3 x 3"):
        dsgd(clients, start, np.eye(4), rounds=1)
    with pytest.raises(UnlearnError, match="sum to 1"):
        dsgd(clients, start, np.full((3, 3), 0.5), rounds=1)
    with pytest.raises(UnlearnError, match="lr"):
        TorchClient(make_model, blobs, lr=-0.1)
    with pytest.raises(UnlearnError, match="labels"):
        TorchClient(make_model, (blobs[0], blobs[1].float()))

    class Broken(Client):
        def fit(self, parameters, config):
            return parameters[:-1], 1, {}

    with pytest.raises(UnlearnError, match="returned 3 parameter arrays, expected 4"):
        fedavg([Broken()], start, rounds=1)


def test_torch_client_evaluate_and_config_round(blobs, start):
    client = TorchClient(make_model, blobs, batch_size=32, lr=0.1, seed=0)
    loss, n, metrics = client.evaluate(start, {})
    assert n == N and loss > 0 and 0.0 <= metrics["accuracy"] <= 1.0
    r1 = client.fit(start, {"round": 1})
    r1b = client.fit(start, {"round": 1})
    r2 = client.fit(start, {"round": 2})
    assert max_diff(r1[0], r1b[0]) == 0.0 and max_diff(r1[0], r2[0]) > 0.0
    assert r1[1] == N and r1[2]["grad_evals"] == N and isinstance(r1[2]["loss"], float)
    state = torch.random.get_rng_state()
    client.fit(start, {"round": 3})
    assert torch.equal(state, torch.random.get_rng_state())  # caller's generator untouched
