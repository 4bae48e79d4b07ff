"""The executor: results in item order and independent of the engine and the workers;
``unlearn bench`` gives the same numbers in-process, on the local pool and on Ray."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from unlearn.attacks.reference import _train_one
from unlearn.cli import main
from unlearn.errors import UnlearnError
from unlearn.executor import Execution, Executor, current, using
from unlearn.tasks import TrainRecipe

from .test_cli import TINY

RECIPE = TrainRecipe(epochs=2, batch_size=64, lr=0.01, optimizer="adam", schedule="constant")
SPEC = {"name": "mlp", "hidden": [16], "input_shape": [64], "num_classes": 10}


def _jobs(digits_small, n=3):
    train, _ = digits_small
    return [(train.x, train.y, train.classes, SPEC, RECIPE.to_dict(), s) for s in range(n)]


def _same(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b)
    for sa, sb in zip(a, b, strict=True):
        assert sa.keys() == sb.keys()
        for k in sa:
            assert torch.equal(sa[k], sb[k]), k


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"engine": "dask"}, "engine must be one of local, ray"),
        ({"workers": 0}, "workers must be an integer"),
        ({"threads": 0}, "threads must be an integer"),
        ({"threads": 1.5}, "threads must be an integer"),
        ({"workers": True}, "workers must be an integer"),
    ],
)
def test_bad_execution_is_refused(kw, match):
    with pytest.raises(UnlearnError, match=match):
        Execution(**kw)


def test_local_pool_matches_in_process_in_item_order(digits_small):
    jobs = _jobs(digits_small)
    serial = Executor(Execution("local", 1, 1)).map(_train_one, jobs)
    seen: list[int] = []
    pooled = Executor(Execution("local", 2, 1)).map(
        _train_one, jobs, on_done=lambda i, r: seen.append(i)
    )
    _same(serial, pooled)
    assert sorted(seen) == [0, 1, 2]
    # different seeds give different models: the comparison above can fail
    assert not torch.equal(serial[0][next(iter(serial[0]))], serial[1][next(iter(serial[1]))])


def test_using_sets_the_current_execution_and_threads():
    before = torch.get_num_threads()
    with using(Execution("local", 3, 1)) as ex:
        assert current() == ex and torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def _bench(tmp_path, name, extra):
    scenario = tmp_path / "s.yaml"
    scenario.write_text(yaml.safe_dump(TINY))
    out = tmp_path / name
    assert main(["bench", str(scenario), "--out", str(out), "--quiet", *extra]) == 0
    return json.loads((out / "results.json").read_text())


_COSTS = {"seconds", "peak_mem_mb", "baseline_mem_mb", "time_vs_oracle", "train_state_mb"}


def _numbers(doc: dict) -> list:
    return [
        (r["method"], r["seed"], {k: v for k, v in r["metrics"].items() if k not in _COSTS})
        for r in doc["rows"]
    ]


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    import sys

    # the test's own job functions travel by value (Ray workers do not import tests/)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


def test_bench_same_numbers_in_process_local_pool_and_ray(tmp_path, ray_local):
    serial = _bench(tmp_path, "serial", ["--workers", "1"])
    pooled = _bench(tmp_path, "pooled", ["--workers", "2"])
    on_ray = _bench(tmp_path, "ray", ["--engine", "ray", "--workers", "2"])
    assert serial["execution"] == {"engine": "local", "workers": 1, "threads": 1}
    assert pooled["execution"] == {"engine": "local", "workers": 2, "threads": 1}
    assert on_ray["execution"] == {"engine": "ray", "workers": 2, "threads": 1}
    assert _numbers(serial) == _numbers(pooled) == _numbers(on_ray)
    assert {r["seed"] for r in serial["rows"]} == {0, 1}
    report = (tmp_path / "ray" / "report.md").read_text()
    assert "engine `ray`, 2 worker processes, 1 BLAS thread per process" in report


def test_bench_threads_flag_is_recorded_and_checked(tmp_path, capsys):
    doc = _bench(tmp_path, "t2", ["--workers", "1", "--threads", "2"])
    assert doc["execution"]["threads"] == 2
    scenario = tmp_path / "s.yaml"
    assert main(["bench", str(scenario), "--out", str(tmp_path / "x"), "--threads", "0"]) == 2
    assert "--threads must be a positive integer" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def _threads_seen(_item) -> tuple[int, int]:
    from threadpoolctl import threadpool_info

    from unlearn.executor import current

    blas = [p["num_threads"] for p in threadpool_info()]
    return torch.get_num_threads(), max(blas) if blas else 0, current().workers


def _fails(item):
    if item == 1:
        raise UnlearnError(f"job {item} refused")
    return item


def test_workers_run_with_the_thread_limit_and_in_process_nested_work():
    out = Executor(Execution("local", 2, 2)).map(_threads_seen, [0, 1])
    for torch_threads, blas_threads, nested_workers in out:
        assert torch_threads == 2 and blas_threads <= 2 and nested_workers == 1


def test_a_worker_error_reaches_the_caller_as_unlearn_error():
    with pytest.raises(UnlearnError, match="job 1 refused"):
        Executor(Execution("local", 2, 1)).map(_fails, [0, 1, 2, 3])


def test_ray_runs_the_jobs_in_ray_workers(ray_local):
    import os

    pids = Executor(Execution("ray", 2, 1)).map(_pid, [0, 1, 2])
    assert os.getpid() not in pids
    with pytest.raises(UnlearnError, match="job 1 refused"):
        Executor(Execution("ray", 2, 1)).map(_fails, [0, 1, 2])


def _pid(_item) -> int:
    import os

    return os.getpid()


def test_llm_seeds_in_worker_processes_give_the_same_rows_and_info(tmp_path):
    """A language-model scenario's seeds run in parallel workers; the numbers and the
    per-seed info (forgotten people, probe questions) come back as in one process."""
    from .test_llm_bench import TINY as LM_TINY

    raw = {**LM_TINY, "seeds": [0, 1], "methods": LM_TINY["methods"][:1]}
    scenario = tmp_path / "lm.yaml"
    scenario.write_text(yaml.safe_dump(raw))
    docs = {}
    for workers in ("1", "2"):
        out = tmp_path / f"lm{workers}"
        args = ["bench", str(scenario), "--out", str(out), "--quiet", "--workers", workers]
        assert main(args) == 0
        docs[workers] = json.loads((out / "results.json").read_text())
    assert docs["2"]["execution"]["workers"] == 2
    assert _numbers(docs["1"]) == _numbers(docs["2"])
    assert docs["1"]["info"] == docs["2"]["info"]
    assert {"forget_people_seed0", "forget_people_seed1"} <= set(docs["2"]["info"])
