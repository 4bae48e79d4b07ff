"""The ``kind: federated`` family: a federation trained, one client deleted, the oracle
retrained without it, and the federated methods (certified DFL removal, fine-tuning,
projected gradient ascent) scored against it with their compute and communication."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from unlearn.bench.core import family_for
from unlearn.bench.federated import random_fourier, run_federated
from unlearn.data import split_request
from unlearn.errors import ScenarioError, UnlearnError, UnsupportedRequestError
from unlearn.federation import iid_partition
from unlearn.federation.certified import flatten_parameters, gradient_residual_bound
from unlearn.federation.engine import set_parameters
from unlearn.methods import UnlearnContext, get_method
from unlearn.methods.federated import tree_pass_transfers
from unlearn.requests import GroupRequest, SampleRequest
from unlearn.tasks.federated import FederatedData, FederatedTask, FedRecipe

SPEC = {
    "name": "fed-tiny",
    "kind": "federated",
    "data": {"name": "digits"},
    "features": {"random_fourier": 24, "seed": 0},
    "model": {"name": "linear"},
    "federation": {"clients": 5, "partition": "iid"},
    "recipe": {"rounds": 15, "lr": 0.5, "weight_decay": 0.01, "topology": "ring"},
    "forget": {"client": 2},
    "seeds": [0],
    "methods": [
        {"name": "dfl_certified", "curvature": "hessian_cg", "damping": 0.0, "newton_steps": 2,
         "tol": 0.1, "epsilon": 0.5},
        {"name": "dfl_certified", "label": "exact_newton", "certify": False,
         "curvature": "hessian_cg", "damping": 0.0, "newton_steps": 4, "tol": 1e-10},
        {"name": "fed_finetune", "rounds": 3},
        {"name": "fed_pga", "epochs": 1, "post_rounds": 1},
    ],
}  # fmt: skip


@pytest.fixture(scope="module")
def results():
    return run_federated(SPEC)


def rows_of_client_2(n: int) -> int:
    """How many samples the IID split of seed 0 gives client 2."""
    return len(iid_partition(n, 5, 0)[2])


def _row(res, label):
    return next(r for r in res["rows"] if r["method"] == label)


def test_rows_metrics_and_costs(results):
    labels = [r["method"] for r in results["rows"]]
    assert labels == [
        "original", "retrain", "oracle_noise", "dfl_certified", "exact_newton",
        "fed_finetune", "fed_pga",
    ]  # fmt: skip
    assert all(r["forget_client"] == 2 for r in results["rows"])
    o, r = _row(results, "original")["metrics"], _row(results, "retrain")["metrics"]
    # training costs: 15 rounds, one local epoch; the ring of 5 sends 10 models a round,
    # the retrained ring of 4 sends 8, and it trains on the 4 remaining clients' data only
    from unlearn.data import load_dataset

    n = len(load_dataset({"name": "digits"})[0])
    assert o["model_transfers"] == 15 * 10 and r["model_transfers"] == 15 * 8
    assert o["grad_evals"] == 15 * n and r["grad_evals"] == 15 * (n - rows_of_client_2(n))
    for label in ("dfl_certified", "exact_newton", "fed_finetune", "fed_pga"):
        m = _row(results, label)["metrics"]
        assert m["grad_evals_vs_oracle"] > 0 and m["transfers_vs_oracle"] > 0
        if label != "exact_newton":  # CG to 1e-10 on 15 rounds' worth of training: dearer
            assert m["grad_evals_vs_oracle"] < 1 and m["transfers_vs_oracle"] < 1
        assert 0 <= m["mia_auc"] <= 100 and 0 <= m["test_acc"] <= 100
    c = _row(results, "dfl_certified")["metrics"]
    assert c["epsilon"] == 0.5 and c["delta"] == 1e-5
    assert c["measured_residual"] <= c["residual_bound"]
    assert math.isclose(
        c["sigma"], c["sensitivity"] / 0.5 * math.sqrt(2 * math.log(1.25 / 1e-5)), rel_tol=1e-9
    )
    assert c["sensitivity"] == pytest.approx(c["residual_bound"] / 0.01)
    # transfers: the 5 nodes' models gathered, 2 x 3 per pass on the tree of 4, one broadcast
    rec = _row(results, "dfl_certified")["record"]["extra"]
    assert rec["model_transfers"] == 4 + rec["distributed_passes"] * 6 + 3
    assert "epsilon" not in _row(results, "exact_newton")["metrics"]
    # the deleted client's influence after 15 rounds on a ring of 5: spread evenly up to
    # the spectral bound
    assert c["influence_share"] == 15 / 5
    assert 0 <= c["influence_max_deviation"] <= c["influence_mixing_bound"]


def test_the_run_is_deterministic(results):
    again = run_federated(SPEC)
    for a, b in zip(again["rows"], results["rows"], strict=True):
        timed = ("seconds", "time_vs_oracle", "peak_mem_mb", "baseline_mem_mb")
        assert set(a["metrics"]) == set(b["metrics"])
        for k in set(a["metrics"]) - set(timed):
            assert a["metrics"].get(k) == b["metrics"].get(k), (a["method"], k)


def _fed(seed=0, clients=4):
    x = torch.randn(120, 6, generator=torch.Generator().manual_seed(seed))
    w = torch.randn(6, 3, generator=torch.Generator().manual_seed(seed + 1))
    y = (x @ w).argmax(1)
    owner = np.empty(120, dtype=np.int64)
    for c, idx in enumerate(iid_partition(120, clients, seed)):
        owner[idx] = c
    data = FederatedData(x, y, owner)
    task = FederatedTask(
        lambda: nn.Sequential(nn.Flatten(), nn.Linear(6, 3)),
        {"rounds": 40, "lr": 0.5, "weight_decay": 0.05, "batch_size": 10},
    )
    return task, data


def test_certified_newton_reaches_the_retained_optimum_on_a_sample_request():
    """Sample deletion keeps every client; exact Newton steps drive the retained objective's
    gradient to ~0 (measured in float64), and the certificate's noise then is tiny."""
    task, data = _fed()
    model = task.train(data, range(4), seed=0)
    req = SampleRequest(indices=list(range(0, 120, 10)))
    split = split_request(data, req)
    ctx = UnlearnContext(task=task, split=split, request=req, original=model, seed=0)
    out, rec = get_method(
        "dfl_certified",
        {"certify": False, "curvature": "hessian_cg", "damping": 0.0, "newton_steps": 5,
         "tol": 1e-12},
    ).run(model, ctx)  # fmt: skip
    assert out.clients == (0, 1, 2, 3) and len(out.node_parameters) == 4
    net = task.model_factory().double()
    set_parameters(net, out.parameters)
    zero = torch.zeros_like(flatten_parameters(net))
    res = gradient_residual_bound(net, (split.retain.x.double(), split.retain.y), zero, 0.05)
    assert res.measured < 1e-6
    cert, rec2 = get_method(
        "dfl_certified", {"curvature": "hessian_cg", "damping": 0.0, "newton_steps": 5,
                          "tol": 1e-12, "epsilon": 0.5}
    ).run(model, ctx)  # fmt: skip
    assert rec2.extra["sigma"] < 1e-4
    # the original is untouched
    assert model.grad_evals == 40 * 120


def test_client_deletion_rebuilds_the_graph_for_the_rest():
    task, data = _fed(clients=5)
    model = task.train(data, range(5), seed=0)
    req = GroupRequest(groups=(3,), by="client")
    ctx = UnlearnContext(task=task, split=split_request(data, req), request=req,
                         original=model, seed=0)  # fmt: skip
    out, _ = get_method("fed_finetune", {"rounds": 2}).run(model, ctx)
    assert out.clients == (0, 1, 2, 4) and out.mixing.shape == (4, 4)
    assert out.model_transfers == 2 * 8  # a ring of 4: 8 directed edges a round
    assert out.grad_evals == 2 * (120 - len(data.of(3)[1]))
    pga, rec = get_method("fed_pga", {"epochs": 1, "post_rounds": 0}).run(model, ctx)
    assert pga.clients == (0, 1, 2, 4) and rec.extra["radius"] > 0
    assert pga.grad_evals == len(data.of(3)[1])


def test_bad_requests_and_recipes_are_refused():
    task, data = _fed()
    model = task.train(data, range(4), seed=0)
    req = SampleRequest(indices=[0, 1])
    ctx = UnlearnContext(task=task, split=split_request(data, req), request=req,
                         original=model, seed=0)  # fmt: skip
    with pytest.raises(UnsupportedRequestError, match="does not support samples"):
        get_method("fed_pga").run(model, ctx)
    adam = FederatedTask(task.model_factory, {"optimizer": "adamw", "weight_decay": 0.01})
    ctx2 = UnlearnContext(task=adam, split=ctx.split, request=req, original=model, seed=0)
    with pytest.raises(UnlearnError, match="coupled weight decay"):
        get_method("dfl_certified").run(model, ctx2)
    with pytest.raises(UnlearnError, match="epsilon must be < 1"):
        get_method("dfl_certified", {"epsilon": 1.5})
    two = GroupRequest(groups=(0, 1, 2), by="client")
    ctx3 = UnlearnContext(task=task, split=split_request(data, two), request=two,
                          original=model, seed=0)  # fmt: skip
    with pytest.raises(UnlearnError, match="fewer than 2 clients"):
        get_method("fed_finetune").run(model, ctx3)
    with pytest.raises(UnlearnError, match="protocol"):
        FedRecipe(protocol="gossip")
    with pytest.raises(UnlearnError, match="topology"):
        FedRecipe(topology="star")


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"surprise": 1}, "unknown key"),
        ({"forget": {"client": 9}}, "client must be 'random' or an id"),
        ({"federation": {"clients": 2}}, "clients must be an integer >= 3"),
        ({"federation": {"clients": 5, "partition": "zipf"}}, "partition must be"),
        ({"recipe": {"protocol": "gossip"}}, "recipe: federated recipe: protocol"),
        ({"model": {"name": "cnn"}}, "model must be"),
        ({"features": {"random_fourier": 0}}, "random_fourier must be a positive integer"),
        ({"methods": [{"name": "dfl_certified", "label": "retrain"}]}, "reserved"),
        ({"methods": [{"name": "dfl_certified", "epsilon": 2.0}]}, "epsilon must be < 1"),
        ({"methods": [{"name": "amun"}]}, "a client that leaves runs nothing"),
    ],
)
def test_scenario_errors_name_the_field(change, match):
    fam = family_for({**SPEC, **change})
    with pytest.raises((ScenarioError, UnlearnError), match=match):
        sc = fam.parse({**SPEC, **change}, "fed-tiny", None)
        fam.setup(sc, lambda m: None)


def test_random_fourier_features_are_per_sample_and_unit_norm():
    x = torch.randn(10, 1, 7, generator=torch.Generator().manual_seed(0))
    z = random_fourier(x, 5, seed=3)
    assert z.shape == (10, 6) and torch.allclose(z.norm(dim=1), torch.ones(10), atol=1e-6)
    # one sample's features do not depend on the others
    assert torch.allclose(random_fourier(x[:3], 5, seed=3), z[:3])
    assert not torch.allclose(random_fourier(x, 5, seed=4), z)
    # the constant column, before scaling, is 1: it is the row's inverse norm afterwards
    raw = torch.cat(
        [
            torch.cos(x.reshape(10, -1).double() @ torch.zeros(7, 5).double()),
            torch.ones(10, 1).double(),
        ],
        1,
    )
    assert raw.shape == (10, 6)


def test_tree_pass_transfers():
    assert tree_pass_transfers(15) == 28 and tree_pass_transfers(2) == 2


@pytest.mark.skipif(
    not all(__import__("importlib").util.find_spec(m) for m in ("flwr", "ray")),
    reason="flwr[simulation] not installed",
)
def test_flower_engine_trains_the_same_federation():
    """The task's two engines give the same D-SGD federation (same clients, same seed)."""
    task, data = _fed(clients=3)
    task.recipe = FedRecipe(rounds=2, lr=0.5, weight_decay=0.05, batch_size=10)
    local = task.train(data, range(3), seed=0)
    flower = FederatedTask(task.model_factory, task.recipe, engine="flower")
    remote = flower.train(data, range(3), seed=0)
    for a, b in zip(local.parameters, remote.parameters, strict=True):
        assert np.abs(a - b).max() <= 1e-6
    assert (local.grad_evals, local.model_transfers) == (remote.grad_evals, remote.model_transfers)


BACKDOOR = {
    "name": "fed-backdoor-tiny",
    "kind": "federated",
    "data": {"name": "digits"},
    "model": {"name": "mlp", "hidden": [32]},
    "federation": {"clients": 4, "partition": "iid"},
    "recipe": {"protocol": "fedavg", "rounds": 15, "lr": 0.1, "momentum": 0.9,
               "weight_decay": 0.0},
    "forget": {"backdoor": {"client": 1, "fraction": 0.6, "target": 0,
                            "features": [0, 1, 8, 9], "value": 1.0}},
    "seeds": [0],
    "methods": [
        {"name": "ferrari", "lr": 0.1, "epochs": 3, "optimizer": "sgd", "momentum": 0.0,
         "batch_size": 16, "n_draws": 4},
        {"name": "gradient_ascent", "epochs": 1, "lr": 1e-3, "optimizer": "adam"},
        {"name": "fed_finetune", "rounds": 2},
    ],
}  # fmt: skip


def test_backdoor_scenario_plants_learns_and_scores_the_trigger():
    res = run_federated(BACKDOOR)
    m = {r["method"]: r["metrics"] for r in res["rows"]}
    assert list(m) == ["original", "retrain", "oracle_noise", "ferrari", "gradient_ascent",
                       "fed_finetune"]  # fmt: skip
    for row in m.values():
        assert {"attack_success_rate", "feature_sensitivity", "test_acc", "mia_auc"} <= set(row)
    # the backdoor works on the original and not on the federation retrained without it
    assert m["original"]["attack_success_rate"] > m["retrain"]["attack_success_rate"] + 20
    # the poisoned samples: all carry the target label, the original fits them
    assert m["original"]["forget_acc"] > m["retrain"]["forget_acc"]
    # the client-side methods download the global model and upload theirs: 2 transfers
    assert m["ferrari"]["model_transfers"] == 2 and m["gradient_ascent"]["model_transfers"] == 2
    assert m["ferrari"]["feature_sensitivity"] < m["original"]["feature_sensitivity"]
    # the oracle trains on every client, without the poisoned samples
    n = len(__import__("unlearn.data", fromlist=["x"]).load_dataset({"name": "digits"})[0])
    assert m["original"]["grad_evals"] == 15 * n
    assert m["retrain"]["grad_evals"] < m["original"]["grad_evals"]


def test_feature_scenario_retrains_without_the_feature():
    spec = {
        **BACKDOOR,
        "name": "fed-feature-tiny",
        "data": {"name": "breast_cancer"},
        "forget": {"feature": [22], "client": 0},
        "methods": [
            {"name": "ferrari", "lr": 0.1, "epochs": 3, "optimizer": "sgd", "momentum": 0.0,
             "batch_size": 16, "n_draws": 4},
            {"name": "fed_finetune", "rounds": 2},
        ],
    }  # fmt: skip
    res = run_federated(spec)
    m = {r["method"]: r["metrics"] for r in res["rows"]}
    assert m["retrain"]["feature_sensitivity"] == 0.0  # the oracle's input never has it
    assert m["oracle_noise"]["feature_sensitivity"] == 0.0
    assert m["original"]["feature_sensitivity"] > 0.05
    assert m["ferrari"]["feature_sensitivity"] < m["original"]["feature_sensitivity"]
    assert "attack_success_rate" not in m["ferrari"] and "mia_auc" not in m["ferrari"]


@pytest.mark.parametrize(
    ("forget", "match"),
    [
        ({"backdoor": {"client": 0}}, "backdoor needs exactly"),
        (
            {
                "backdoor": {
                    "client": 0,
                    "fraction": 1.5,
                    "target": 0,
                    "features": [0],
                    "value": 1.0,
                }
            },
            "fraction must lie in",
        ),  # fmt: skip
        (
            {
                "backdoor": {
                    "client": 0,
                    "fraction": 0.5,
                    "target": 0,
                    "features": [0, 0],
                    "value": 1.0,
                }
            },
            "distinct feature indices",
        ),  # fmt: skip
        ({"feature": [1], "client": "random"}, "client must be an id"),
        ({"feature": [99], "client": 0}, "beyond the 64 inputs"),
        (
            {
                "backdoor": {
                    "client": 0,
                    "fraction": 0.5,
                    "target": 12,
                    "features": [0],
                    "value": 1.0,
                }
            },
            "not one of the 10 classes",
        ),  # fmt: skip
    ],
)
def test_bad_feature_and_backdoor_requests_are_named(forget, match):
    spec = {**BACKDOOR, "forget": forget}
    fam = family_for(spec)
    with pytest.raises(ScenarioError, match=match):
        fam.setup(fam.parse(spec, "x", None), lambda m: None)


def test_a_method_that_cannot_serve_the_request_is_refused_before_training():
    spec = {**BACKDOOR, "methods": [{"name": "dfl_certified"}]}
    fam = family_for(spec)
    sc = fam.parse(spec, "x", None)
    fam.setup(sc, lambda m: None)  # dfl_certified serves the poisoned samples (a sample request)
    spec = {**BACKDOOR, "forget": {"feature": [3], "client": 0},
            "methods": [{"name": "gradient_ascent"}]}  # fmt: skip
    fam = family_for(spec)
    with pytest.raises(ScenarioError, match="does not serve feature requests"):
        fam.setup(fam.parse(spec, "x", None), lambda m: None)


def _flower_processes() -> list[int]:
    import psutil

    out = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if "flower-super" in cmd or "flwr-serverapp" in cmd or "flwr-clientapp" in cmd:
            out.append(p.pid)
    return out


@pytest.mark.skipif(
    not all(__import__("importlib").util.find_spec(m) for m in ("flwr", "ray")),
    reason="flwr[simulation] not installed",
)
def test_deployment_runs_superlink_and_supernodes_and_matches_the_simulator():
    """Flower's deployment runtime (a SuperLink and one SuperNode per client, separate
    processes started and stopped by the toolkit) trains the same D-SGD federation as the
    in-process engine, from a given start, on a subset of the clients."""
    from unlearn.bench.federated import federation_of
    from unlearn.federation.deploy import run_deployment

    before = set(_flower_processes())
    job = {
        "data": {"name": "digits"},
        "model": {"name": "linear"},
        "federation": {"clients": 3},
        "recipe": {"protocol": "dsgd", "rounds": 2, "lr": 0.1, "weight_decay": 0.01},
    }
    job = {**job, "partition_seed": 0}
    task, data = federation_of(job)
    start = task.train(data, [0, 2], seed=1)  # the deployment continues from these nodes
    deployed = FederatedTask(task.model_factory, task.recipe, engine="deployment")
    deployed.job = job
    remote = deployed.train(data, [0, 2], seed=1, start=start)
    local = task.train(data, [0, 2], seed=1, start=start)
    for a, b in zip(local.parameters, remote.parameters, strict=True):
        assert np.abs(a - b).max() <= 1e-6
    for na, nb in zip(local.node_parameters, remote.node_parameters, strict=True):
        assert all(np.abs(a - b).max() <= 1e-6 for a, b in zip(na, nb, strict=True))
    assert (local.grad_evals, local.model_transfers) == (remote.grad_evals, remote.model_transfers)
    assert set(_flower_processes()) <= before  # every process it started is gone
    # data the nodes cannot rebuild is refused before anything starts
    poisoned = FederatedData(data.x.clone(), data.y.clone(), data.client, data.classes)
    poisoned.x[int(np.flatnonzero(data.client == 0)[0])] += 1.0
    with pytest.raises(UnlearnError, match="differs from what its node rebuilds"):
        deployed.train(poisoned, [0, 1], seed=1)
    with pytest.raises(UnlearnError, match="unknown key"):
        run_deployment({**job, "surprise": 1})


def test_biased_feature_scenario_plants_a_shortcut_the_oracle_never_sees():
    spec = {
        **BACKDOOR,
        "name": "fed-bias-tiny",
        "forget": {"bias": {"client": 0, "feature": 10, "scale": 3.0}},
        "methods": [
            {"name": "ferrari", "lr": 0.03, "epochs": 3, "optimizer": "sgd", "momentum": 0.0,
             "batch_size": 16, "n_draws": 4},
        ],
    }  # fmt: skip
    res = run_federated(spec)
    m = {r["method"]: r["metrics"] for r in res["rows"]}
    assert m["retrain"]["feature_sensitivity"] == 0.0
    # the masked oracle ignores the misleading code: its two test accuracies are equal
    assert m["retrain"]["misleading_test_acc"] == m["retrain"]["test_acc"]
    assert m["original"]["feature_sensitivity"] > m["ferrari"]["feature_sensitivity"]
    with pytest.raises(ScenarioError, match="bias needs exactly"):
        family_for(spec).parse({**spec, "forget": {"bias": {"client": 0}}}, "x", None)
