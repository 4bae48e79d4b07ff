"""Federated training on Flower's deployment runtime: a SuperLink and one SuperNode per
client as separate processes on this machine, started and stopped by the toolkit.

The simulation engine (:mod:`.flower`) hands live client objects to Flower; a deployment
cannot, since its nodes are other processes (or machines). Here every node rebuilds its own
client from the run's ``job`` (a JSON mapping: the data set, feature map, model,
federation and recipe, as in a ``kind: federated`` scenario, plus the seed) and its
``partition-id``, by the same code the in-process engine uses
(:meth:`unlearn.tasks.federated.FederatedTask.client`), and the ServerApp runs the same
FedAvg or D-SGD loop over Flower's Message API (:func:`.flower.fedavg_main`,
:func:`.flower.dsgd_main`). So for the same job the result equals the in-process
federation's (tested). The ServerApp writes the parameters (``numpy.savez``, no pickles)
and the costs (JSON) to ``out``; :func:`run_deployment` reads them back.

The Flower App is the directory :data:`APP_DIR` (``pyproject.toml`` naming
``unlearn_flower_app.apps:server_app`` and ``:client_app``). By hand, with Flower 1.42::

    flower-superlink --insecure --port 18000
    flower-supernode --insecure --superlink 127.0.0.1:18000 --port 19100 \\
        --node-config "partition-id=0 num-partitions=2"
    flower-supernode --insecure --superlink 127.0.0.1:18000 --port 19101 \\
        --node-config "partition-id=1 num-partitions=2"
    # $FLWR_HOME/config.toml:  [superlink.local]  address = "127.0.0.1:18000"  insecure = true
    # job.toml:  job = '<the job as JSON>'  and  out = '<a folder for the result>'
    flwr run <APP_DIR> local --run-config job.toml --stream

:func:`run_deployment` does exactly that with free ports, a temporary ``FLWR_HOME`` and
the SuperLink's runtime dependency installation off (the nodes use this environment).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ..errors import UnlearnError
from .engine import FedResult

__all__ = ["APP_DIR", "deployment_client_app", "deployment_server_app", "run_deployment"]

APP_DIR = Path(__file__).with_name("flower_app")
_RESULT = "result.npz"
_COSTS = "result.json"


def _federation(job: dict):
    """``(task, data)`` of a job mapping (see :func:`unlearn.bench.federated.federation_of`)."""
    from ..bench.federated import federation_of

    return federation_of(job)


_BUILT: dict[str, tuple] = {}  # per node process: the job it serves


def _built(text: str) -> tuple:
    """``(job, task, data)`` of a run config's job text, built once per node process."""
    if text not in _BUILT:
        _BUILT.clear()
        job = json.loads(text)
        _BUILT[text] = (job, *_federation(job))
    return _BUILT[text]


def deployment_client_app():
    """The ClientApp: the node's client is ``task.client(data, partition-id, seed)``."""
    from .flower import client_app_with

    def get_client(i: int, context):
        job, task, data = _built(str(context.run_config["job"]))
        ids = job.get("clients") or data.clients()
        return task.client(data, int(ids[i]), int(job.get("seed", 0)))

    return client_app_with(get_client)


def deployment_server_app():
    """The ServerApp: FedAvg or D-SGD over the nodes, the result written to ``out``."""
    from flwr.serverapp import ServerApp

    from .flower import dsgd_main, fedavg_main

    app = ServerApp()

    @app.main()
    def main(grid, context):
        job = json.loads(str(context.run_config["job"]))
        out = Path(str(context.run_config["out"]))
        task, data = _federation(job)
        r, seed = task.recipe, int(job.get("seed", 0))
        k = len(job.get("clients") or data.clients())
        nodes = _start(job, k) or [task.initial(seed)]
        if r.protocol == "fedavg":
            from .engine import _average

            start = nodes[0] if len(nodes) == 1 else _average(nodes)
            run = fedavg_main(k, start, r.rounds, r.fraction, seed, {}, None, None)
        else:
            q = task.mixing(k)
            nodes = nodes if len(nodes) == k else [list(nodes[0]) for _ in range(k)]
            run = dsgd_main(k, nodes, q, r.rounds, {}, None, None)
        res = run(grid)
        arrays = {f"global_{i}": a for i, a in enumerate(res.parameters)}
        for n, node in enumerate(res.node_parameters or []):
            arrays.update({f"node{n}_{i}": a for i, a in enumerate(node)})
        tmp = out / (_RESULT + ".tmp.npz")
        np.savez(tmp, **arrays)
        tmp.replace(out / _RESULT)
        costs = {
            "rounds": res.rounds,
            "model_transfers": res.model_transfers,
            "grad_evals": res.grad_evals,
            "consensus_distance": res.consensus_distance,
            "n_global": len(res.parameters),
            "n_nodes": len(res.node_parameters or []),
        }
        (out / (_COSTS + ".tmp")).write_text(json.dumps(costs))
        (out / (_COSTS + ".tmp")).replace(out / _COSTS)

    return app


def _start(job: dict, k: int) -> list | None:
    """The starting parameters a job names (``start``: an ``.npz`` of one list per node, or
    one shared list), or None for the seeded initial model."""
    path = job.get("start")
    if not path:
        return None
    with np.load(path, allow_pickle=False) as z:
        n_nodes, n_arrays = (int(v) for v in z["shape"])
        nodes = [[z[f"n{n}_{i}"] for i in range(n_arrays)] for n in range(n_nodes)]
    if n_nodes not in (1, k):
        raise UnlearnError(f"start: {n_nodes} node lists for {k} nodes")
    return nodes


# ---------------------------------------------------------------------------- running


def _free_ports(n: int) -> list[int]:
    socks, ports = [], []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


def _wait_port(port: int, proc: subprocess.Popen, log: Path, deadline: float) -> None:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise UnlearnError(
                f"a Flower process exited ({proc.returncode}) before it listened on {port}: "
                + log.read_text(errors="replace")[-2000:]
            )
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise UnlearnError(f"no Flower process listened on port {port} in time")


def _stop(procs: list[subprocess.Popen]) -> None:
    """Stop every started process and everything it started (SuperExec, the ServerApp and
    ClientApp processes, some in sessions of their own): SIGTERM, then SIGKILL after 10 s."""
    import psutil

    family: list[psutil.Process] = []
    for p in procs:
        try:
            root = psutil.Process(p.pid)
            family += [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            pass
    for proc in family:
        try:
            proc.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(family, timeout=10)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)
    for p in procs:  # reap the direct children
        if p.poll() is None:
            p.wait(timeout=5)


def _toml_str(text: str) -> str:
    return "'''" + text.replace("'''", "") + "'''"


def run_deployment(job: dict, *, timeout: float = 1800.0, verbose: bool = False) -> FedResult:
    """Train the federation of ``job`` on Flower's deployment runtime and return its result.

    Starts a SuperLink and one SuperNode per client (separate processes, each in its own
    process group, on free localhost ports, under a temporary ``FLWR_HOME``), submits
    :data:`APP_DIR` with ``flwr run`` and the job as run config, waits for the ServerApp's
    result (at most ``timeout`` seconds) and stops every process, also on error.
    """
    from .flower import _require_flower

    _require_flower()
    task, data = _federation(job)  # a bad job fails here, before anything starts
    k = len(job.get("clients") or data.clients())
    bindir = Path(sys.executable).parent
    exe = {n: str(bindir / n) for n in ("flower-superlink", "flower-supernode", "flwr")}
    missing = [n for n, p in exe.items() if not Path(p).is_file()]
    if missing:
        raise UnlearnError(f"Flower's commands {missing} are not installed beside {sys.executable}")
    procs: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory(prefix="unlearn-flwr-") as tmp:
        home, out = Path(tmp) / "home", Path(tmp) / "out"
        home.mkdir()
        out.mkdir()
        link, *node_ports = _free_ports(1 + k)
        (home / "config.toml").write_text(
            f'[superlink.local]\naddress = "127.0.0.1:{link}"\ninsecure = true\n'
        )
        (Path(tmp) / "job.toml").write_text(
            f"job = {_toml_str(json.dumps(job, sort_keys=True))}\nout = {_toml_str(str(out))}\n"
        )
        env = {**os.environ, "FLWR_HOME": str(home), "PYTHONPATH": _pythonpath()}
        env["PATH"] = f"{bindir}{os.pathsep}{env.get('PATH', '')}"

        def start(args: list[str], name: str) -> subprocess.Popen:
            log = Path(tmp) / f"{name}.log"
            with log.open("wb") as fh:
                p = subprocess.Popen(
                    args, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=tmp,
                    start_new_session=True,
                )  # fmt: skip
            procs.append(p)
            return p

        deadline = time.monotonic() + timeout
        try:
            sl = start(
                [exe["flower-superlink"], "--insecure", "--port", str(link),
                 "--disable-runtime-dependency-installation"],
                "superlink",
            )  # fmt: skip
            _wait_port(link, sl, Path(tmp) / "superlink.log", deadline)
            for i, port in enumerate(node_ports):
                start(
                    [exe["flower-supernode"], "--insecure", "--superlink", f"127.0.0.1:{link}",
                     "--port", str(port), "--node-config", f"partition-id={i} num-partitions={k}"],
                    f"supernode{i}",
                )  # fmt: skip
            run = subprocess.run(
                [exe["flwr"], "run", str(APP_DIR), "local", "--run-config",
                 str(Path(tmp) / "job.toml"), "--stream"],
                env=env, cwd=tmp, capture_output=True, text=True,
                timeout=max(1.0, deadline - time.monotonic()),
            )  # fmt: skip
            if verbose:
                print(run.stdout, run.stderr, sep="\n")
            while not (out / _COSTS).is_file() and time.monotonic() < deadline:
                if run.returncode != 0:
                    break
                time.sleep(0.2)
            if not (out / _COSTS).is_file():
                logs = "\n".join(
                    f"--- {p.name}\n{p.read_text(errors='replace')[-1500:]}"
                    for p in sorted(Path(tmp).glob("*.log"))
                )
                raise UnlearnError(
                    f"the Flower deployment wrote no result (flwr run exit {run.returncode}): "
                    f"{run.stdout[-1500:]}{run.stderr[-1500:]}\n{logs}"
                )
            costs = json.loads((out / _COSTS).read_text())
            with np.load(out / _RESULT, allow_pickle=False) as z:
                params = [z[f"global_{i}"] for i in range(costs["n_global"])]
                nodes = [
                    [z[f"node{n}_{i}"] for i in range(costs["n_global"])]
                    for n in range(costs["n_nodes"])
                ] or None
        except subprocess.TimeoutExpired as exc:
            raise UnlearnError(f"the Flower deployment did not finish in {timeout} s") from exc
        finally:
            _stop(procs)
    return FedResult(
        parameters=params,
        node_parameters=nodes,
        rounds=costs["rounds"],
        model_transfers=costs["model_transfers"],
        grad_evals=costs["grad_evals"],
        consensus_distance=costs["consensus_distance"],
    )


def _pythonpath() -> str:
    from .flower import _pythonpath as path

    return path()
