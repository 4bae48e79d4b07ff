"""The Flower engine: :func:`~.engine.fedavg` and :func:`~.engine.dsgd` run inside Flower.

:func:`flower_fedavg` and :func:`flower_dsgd` take the same clients and arguments as the
in-process loops of :mod:`.engine` and return the same :class:`~.engine.FedResult`, but
every ``fit`` runs in a virtual client of Flower's Simulation Runtime
(``flwr.simulation.run_simulation``: a ``ServerApp`` thread in this process, one Ray actor
per CPU running the ``ClientApp``) and every model crosses Flower's Message API as an
``ArrayRecord``. Written against ``flwr[simulation]==1.42.0`` (the ``federated`` extra:
``pip install 'unlearn-toolkit[federated]'``); Flower and Ray are imported only when a
function here runs, so the toolkit imports without them, and calling one without them
raises an :class:`~unlearn.errors.UnlearnError` that names the extra.

How the runs map onto Flower
----------------------------

- **Nodes.** The simulation has one SuperNode per client. The ServerApp first asks every
  node for its ``partition-id`` (a ``query`` message, no model) and from then on addresses
  ``clients[i]`` at the node whose partition id is ``i``. The ``ClientApp`` reaches the
  client objects through one ``ray.put`` of the list (each actor fetches it once and keeps
  it while the run lasts), not through a copy in every message. The clients therefore have
  to be picklable (cloudpickle: lambdas and local functions are fine) and must not rely on
  state they change in ``fit``: they run on copies in the actors, and the caller's objects
  are left untouched. :class:`~.engine.TorchClient` keeps no state between rounds.
- **FedAvg.** The selection and the aggregation are not Flower's: the ServerApp runs the
  in-process loop itself (the same code), sampling ``ceil(fraction * n)`` clients from
  ``numpy.random.default_rng(seed)`` each round, sending each a ``train.fedavg`` message
  (the global model and ``{**config, "round": r}``) with ``grid.send_and_receive`` and
  averaging the replies weighted by their example counts in float64, in client order. For
  the same seed the result equals :func:`~.engine.fedavg`'s (bit for bit in the tests; the
  arrays are serialised losslessly with ``numpy.save``).
- **D-SGD.** Flower has no peer-to-peer transport (flwrlabs/flower issues 3149 and 4273), so the
  ServerApp relays gossip. Each round node ``i`` gets one ``train.dsgd`` message holding
  the current model of every neighbour ``j`` (``Q[i, j] > 0``, ``j != i``) and the weights
  ``Q[i, j]`` of its row; the node mixes them with its own model, which it keeps in its
  Flower ``Context.state`` between rounds (it receives it once, with the first message),
  in float64 and in the in-process order, trains from the mixture, stores the result and
  returns it, so the server can relay it in the next round. The mixing thus happens on the
  node, as in real gossip, and never on the server. ``model_transfers`` counts one model
  per relayed neighbour model, which is one per off-diagonal nonzero of ``Q`` per round,
  exactly the in-process count. The relay's own overhead is not in it: each node also
  uploads its model once per round (``n`` uploads, where peer-to-peer needs none), and the
  ``n`` initial models go out once in round 1 (set-up, not counted by the in-process engine
  either).
- **Costs and history** are computed by the same code as in :mod:`.engine`; the history
  entries have the same keys and values.
- **Metrics** cross Flower's wire as a ``MetricRecord`` (int and float values) and a
  ``ConfigRecord`` (str, bytes and bool values); other value types are refused. numpy
  scalars in ``config`` and in the metrics become Python scalars.

Resources: every virtual client asks Ray for one CPU and no GPU (``client_gpus`` raises the
latter); Ray is started with ``num_cpus`` CPUs (default: as many as clients may train at
once, at most the CPUs this process may use), so that many actors train in parallel. Ray's
session lives in a fresh temporary directory that is deleted afterwards, and its workers get
this process's import path (``PYTHONPATH``), so they can unpickle the clients. Its processes
are stopped when the call returns; actors exit a few seconds later, when they notice. When
Ray is already initialised in this process, that session is used instead, and Flower shuts
it down when the simulation ends (``RayBackend.terminate`` calls ``ray.shutdown()``, which
is also why two runs cannot share one Ray start, unless ``ray_address`` or ``RAY_ADDRESS``
names a running cluster: then ``ray.shutdown()`` only disconnects). ``run_simulation`` is
deprecated in Flower 1.42 (it logs so on every call) in favour of ``flwr run``, but it is
the only way to run apps built in this process around live Python objects.

Deployment (not implemented here)
---------------------------------

A deployment (SuperLink and SuperNodes as separate processes or machines) cannot receive
client objects from this process: it would take a Flower App directory whose
``pyproject.toml`` names a module-level ``ServerApp`` and ``ClientApp``
(``[tool.flwr.app.components]``); the ``ClientApp`` rebuilds ``clients[i]`` from its
node's ``partition-id`` (and its own data), the ServerApp reads ``rounds``, ``fraction``
and ``seed`` from the run config and writes the result to disk instead of returning it.
The message protocol here (partition query, ``train.fedavg`` / ``train.dsgd``) carries over
unchanged. In Flower 1.42 the SuperLink serves the Fleet, Control and Runtime APIs over
HTTP on one port (``--host`` / ``--port``, default 8000), per the 1.42 ``--help`` texts
(not tried here)::

    flower-superlink --insecure
    flower-supernode --insecure --superlink 127.0.0.1:8000 --port 9094 \\
        --node-config "partition-id=0 num-partitions=2"
    flower-supernode --insecure --superlink 127.0.0.1:8000 --port 9095 \\
        --node-config "partition-id=1 num-partitions=2"
    # in $FLWR_HOME/config.toml (default ~/.flwr): [superlink.local-deployment]
    #   address = "127.0.0.1:8000"  and  insecure = true
    flwr run path/to/app local-deployment --stream
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence

import numpy as np

from ..errors import UnlearnError
from ._checks import check_float, check_int
from .engine import (
    Client,
    EvaluateFn,
    FedResult,
    Parameters,
    _check_like,
    _dsgd_args,
    _dsgd_loop,
    _fedavg_args,
    _fedavg_loop,
    _fit,
    _neighbours,
    _sample_size,
    _weighted_mean,
)

__all__ = ["FLOWER_VERSION", "flower_dsgd", "flower_fedavg"]

FLOWER_VERSION = "1.42.0"
"""The Flower release this engine is written and tested against."""

EXTRA = "unlearn-toolkit[federated]"
_PARTITION_KEY = "partition-id"
_MODEL_KEY = "unlearn-model"  # a D-SGD node's own model, in its Context.state
_NODE_WAIT_S = 120.0


# ---------------------------------------------------------------------------- imports


def _require_flower() -> None:
    """Import Flower's simulation stack, or say which extra to install."""
    try:
        import flwr  # noqa: F401
        import flwr.app  # noqa: F401
        import flwr.clientapp  # noqa: F401
        import flwr.serverapp  # noqa: F401
        import flwr.simulation  # noqa: F401
        import ray  # noqa: F401
    except ImportError as exc:
        raise UnlearnError(
            f"the Flower engine needs Flower with its simulation extra, which is missing "
            f"({exc}); install it with: pip install '{EXTRA}' "
            f"(flwr[simulation]=={FLOWER_VERSION})"
        ) from exc


# ---------------------------------------------------------------------------- records


def _scalar(value):
    return value.item() if isinstance(value, np.generic) else value


def _config_record(config: dict, what: str):
    from flwr.app import ConfigRecord

    out = {}
    for key, value in config.items():
        value = _scalar(value)
        try:
            ConfigRecord({key: value})
        except (TypeError, ValueError) as exc:
            raise UnlearnError(
                f"{what}[{key!r}]: Flower's ConfigRecord takes str keys and int, float, str, "
                f"bytes or bool values (or lists of one of them), got {type(value).__name__}"
            ) from exc
        out[key] = value
    return ConfigRecord(out)


def _array_record(parameters: Sequence[np.ndarray]):
    from flwr.app import ArrayRecord

    return ArrayRecord.from_numpy_ndarrays([np.asarray(p) for p in parameters])


def _ndarrays(record) -> Parameters:
    # from_numpy_ndarrays names the arrays "0", "1", ...; read them back in that order
    return [record[str(i)].numpy() for i in range(len(record))]


def _fit_reply(message, params: Parameters, n: int, metrics: dict, who: str):
    """A node's reply to a train message: its new model, example count and metrics."""
    from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict

    numbers, others = {}, {}
    for key, value in metrics.items():
        value = _scalar(value)
        if not isinstance(key, str):
            raise UnlearnError(f"{who}.fit metrics keys must be strings, got {key!r}")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            numbers[key] = value
        elif isinstance(value, (str, bytes, bool)):
            others[key] = value
        else:
            raise UnlearnError(
                f"{who}.fit metrics[{key!r}] is a {type(value).__name__}; only scalars "
                "(int, float, str, bytes, bool) cross Flower's wire"
            )
    content = RecordDict(
        {
            "arrays": _array_record(params),
            "fit": MetricRecord({"num-examples": n}),
            "metrics": MetricRecord(numbers),
            "metrics-other": ConfigRecord(others),
        }
    )
    return Message(content, reply_to=message)


def _read_fit(reply, reference: Parameters, who: str):
    """The server's side of :func:`_fit_reply`: ``(parameters, n_examples, metrics)``."""
    content = reply.content
    params = _check_like(_ndarrays(content["arrays"]), reference, f"{who}.fit")
    n = check_int(f"{who}.fit n_examples", content["fit"]["num-examples"], low=0)
    metrics = {**dict(content["metrics"]), **dict(content["metrics-other"])}
    return params, n, metrics


# ---------------------------------------------------------------------------- ClientApp


_CLIENTS: dict[str, list] = {}  # per actor process: the clients of the run it serves


def _clients_from(ref) -> list:
    key = ref.hex()
    if key not in _CLIENTS:
        import ray

        _CLIENTS.clear()  # an actor serves one run; drop any earlier run's clients
        _CLIENTS[key] = ray.get(ref)
    return _CLIENTS[key]


def _partition(context) -> int:
    return int(context.node_config[_PARTITION_KEY])


def _answer_partition(message, context):
    from flwr.app import ConfigRecord, Message, RecordDict

    content = RecordDict({"node": ConfigRecord({_PARTITION_KEY: _partition(context)})})
    return Message(content, reply_to=message)


def _train_fedavg(get_client, message, context):
    i = _partition(context)
    who = f"clients[{i}]"
    content = message.content
    params, n, metrics = _fit(
        get_client(i, context), _ndarrays(content["arrays"]), dict(content["config"]), who
    )
    return _fit_reply(message, params, n, metrics, who)


def _train_dsgd(get_client, message, context):
    i = _partition(context)
    who = f"clients[{i}]"
    content = message.content
    if "own" in content:
        own = _ndarrays(content["own"])
    elif _MODEL_KEY in context.state:
        own = _ndarrays(context.state[_MODEL_KEY])
    else:
        raise UnlearnError(f"node of {who} has no model of its own to mix with")
    mixing = content["mixing"]
    pairs = [
        (own if j == i else _ndarrays(content[f"model-{j}"]), float(w))
        for j, w in zip(mixing["nodes"], mixing["weights"], strict=True)
    ]
    mixed = _weighted_mean(pairs, own)
    params, n, metrics = _fit(get_client(i, context), mixed, dict(content["config"]), who)
    context.state[_MODEL_KEY] = _array_record(params)
    return _fit_reply(message, params, n, metrics, who)


def _client_app(ref):
    """A ClientApp that runs ``clients[partition-id]`` (fetched from Ray's object store)."""
    return client_app_with(lambda i, context: _clients_from(ref)[i])


def client_app_with(get_client):
    """A ClientApp whose node runs ``get_client(partition_id, context)`` (a :class:`Client`)
    for the partition query and the FedAvg and D-SGD train messages of this module."""
    from flwr.clientapp import ClientApp

    app = ClientApp()

    @app.query("partition")
    def partition(message, context):
        return _answer_partition(message, context)

    @app.train("fedavg")
    def train_fedavg(message, context):
        return _train_fedavg(get_client, message, context)

    @app.train("dsgd")
    def train_dsgd(message, context):
        return _train_dsgd(get_client, message, context)

    return app


# ---------------------------------------------------------------------------- ServerApp


def _short_reason(reason: str) -> str:
    """The client's own error message out of Flower's wrapped reason."""
    marker = "occurred. Message: "
    if marker in reason:
        reason = reason.rsplit(marker, 1)[1]
    return reason.strip().rstrip(">'").strip()


def _exchange(grid, messages: dict, timeout: float | None, what: str) -> dict:
    """Send ``{client index: message}`` and return ``{client index: reply}``, raising on a
    missing or failed reply."""
    replies = grid.send_and_receive(list(messages.values()), timeout=timeout)
    by_node = {reply.metadata.src_node_id: reply for reply in replies}
    out = {}
    for i, message in messages.items():
        reply = by_node.get(message.metadata.dst_node_id)
        if reply is None:
            raise UnlearnError(f"{what}: no reply from clients[{i}] within {timeout} s")
        if reply.has_error():
            err = UnlearnError(
                f"{what}: clients[{i}] failed on its Flower node: "
                f"{_short_reason(reply.error.reason)}"
            )
            err.add_note(f"Flower's reason: {reply.error.reason}")
            raise err
        out[i] = reply
    return out


def _node_ids(grid, k: int, timeout: float | None) -> dict[int, int]:
    """``{client index: node id}``, from each node's ``partition-id``."""
    from flwr.app import Message, RecordDict

    deadline = time.monotonic() + _NODE_WAIT_S
    while len(nodes := list(grid.get_node_ids())) < k:
        if time.monotonic() > deadline:
            raise UnlearnError(f"only {len(nodes)} of {k} Flower nodes came up")
        time.sleep(0.05)
    queries = {
        pos: Message(RecordDict(), dst_node_id=node, message_type="query.partition")
        for pos, node in enumerate(nodes)
    }
    replies = _exchange(grid, queries, timeout, "partition query")
    node_of = {}
    for pos, reply in replies.items():
        node_of[int(reply.content["node"][_PARTITION_KEY])] = queries[pos].metadata.dst_node_id
    if sorted(node_of) != list(range(k)):
        raise UnlearnError(
            f"Flower nodes report partition ids {sorted(node_of)}, expected 0..{k - 1}"
        )
    return node_of


# ---------------------------------------------------------------------------- running


def _cpus_available() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _pythonpath() -> str:
    """This process's import path, absolute, for Ray's workers (they import the clients'
    modules, and this package, to unpickle the ClientApp)."""
    entries = [os.path.abspath(p) for p in sys.path if p]
    entries += [os.path.abspath(p) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return os.pathsep.join(dict.fromkeys(entries))


def _temp_root() -> str:
    # Ray's socket paths must stay short (AF_UNIX limit ~107 bytes)
    root = tempfile.gettempdir()
    return "/tmp" if len(root) > 40 and os.path.isdir("/tmp") else root


@contextlib.contextmanager
def _environ(name: str, value: str):
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


@contextlib.contextmanager
def _ray(num_cpus: int, num_gpus: int | None, address: str | None, verbose: bool):
    """A Ray session for one simulation: a fresh local one (in its own temporary directory,
    removed afterwards), a connection to ``address`` (or ``$RAY_ADDRESS``), or the
    session this process already has."""
    import ray

    if ray.is_initialized():
        if address is not None:
            raise UnlearnError(
                f"Ray is already initialised in this process; cannot also connect to {address}"
            )
        yield ray  # the caller's session (Flower shuts it down when the simulation ends)
        return
    if address is None and os.environ.get("RAY_ADDRESS", "local") not in ("", "local"):
        address = os.environ["RAY_ADDRESS"]  # ray.init would connect there anyway
    opts = {"log_to_driver": verbose, "logging_level": logging.INFO if verbose else logging.WARNING}
    tmp = None
    try:
        if address is None:
            tmp = tempfile.mkdtemp(prefix="unlearn-ray-", dir=_temp_root())
            opts.update(
                num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False, _temp_dir=tmp
            )
            # The raylet, and the workers it starts, inherit this environment; a runtime_env
            # would do the same but costs each actor seconds of start-up (a new worker).
            with _environ("PYTHONPATH", _pythonpath()):
                ray.init(**opts)
        else:
            ray.init(
                address=address, runtime_env={"env_vars": {"PYTHONPATH": _pythonpath()}}, **opts
            )
        yield ray
    finally:
        try:
            if ray.is_initialized():
                ray.shutdown()  # Flower normally has already
        finally:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def _quiet_flower(verbose: bool):
    logger = logging.getLogger("flwr")
    level = logger.level
    if not verbose:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def _simulate(clients: list, main, *, num_cpus, client_gpus, ray_address, verbose) -> FedResult:
    """Run ``main(grid)`` as the ServerApp of a simulation with one node per client and
    return what it returned."""
    from flwr.serverapp import ServerApp
    from flwr.simulation import run_simulation

    server = ServerApp()
    box: dict[str, FedResult] = {}

    @server.main()
    def _main(grid, context):
        box["result"] = main(grid)

    num_gpus = None if client_gpus > 0 else 0
    backend = {"client_resources": {"num_cpus": 1, "num_gpus": float(client_gpus)}}
    with _quiet_flower(verbose), _ray(num_cpus, num_gpus, ray_address, verbose) as ray:
        ref = ray.put(clients)
        run_simulation(
            server_app=server,
            client_app=_client_app(ref),
            num_supernodes=len(clients),
            backend_name="ray",
            backend_config=backend,
            verbose_logging=verbose,
        )
    if "result" not in box:
        raise UnlearnError("Flower's simulation ended before the ServerApp finished")
    return box["result"]


def _resources(num_cpus, client_gpus, busy: int) -> tuple[int, float]:
    if num_cpus is None:
        num_cpus = min(busy, _cpus_available())
    num_cpus = check_int("num_cpus", num_cpus, low=1)
    client_gpus = check_float("client_gpus", client_gpus, low=0.0)
    return num_cpus, client_gpus


def _check_timeout(round_timeout) -> float | None:
    if round_timeout is None:
        return None
    return check_float("round_timeout", round_timeout, low=0.0, low_open=True)


def flower_fedavg(
    clients: Sequence[Client],
    initial_parameters: Parameters,
    rounds: int,
    fraction: float = 1.0,
    seed: int = 0,
    *,
    config: dict | None = None,
    evaluate_fn: EvaluateFn | None = None,
    num_cpus: int | None = None,
    client_gpus: float = 0.0,
    ray_address: str | None = None,
    round_timeout: float | None = None,
    verbose: bool = False,
) -> FedResult:
    """:func:`~.engine.fedavg` with every client fitting in a Flower virtual client.

    Same arguments, semantics and result as the in-process loop (see the module
    docstring); ``evaluate_fn`` runs in this process on the new global model. Extra options:
    ``num_cpus``, the CPUs Ray gets (one per virtual client training at once; default
    ``min(clients per round, CPUs available)``); ``client_gpus``, the GPU share each
    virtual client asks for (default 0: CPU only); ``ray_address``, a running Ray cluster
    to use instead of starting one; ``round_timeout``, seconds to wait for a round's
    replies (default: no limit); ``verbose``, Flower's and Ray's logs at INFO/DEBUG and the
    actors' output forwarded here.
    """
    _require_flower()
    clients, params, rounds, fraction, seed, base = _fedavg_args(
        clients, initial_parameters, rounds, fraction, seed, config
    )
    k = len(clients)
    num_cpus, client_gpus = _resources(num_cpus, client_gpus, _sample_size(k, fraction))
    timeout = _check_timeout(round_timeout)
    _config_record({**base, "round": 1}, "config")  # refuse bad values before Ray starts
    if rounds == 0:
        return _fedavg_loop(k, params, 0, fraction, seed, base, evaluate_fn, None)
    main = fedavg_main(k, params, rounds, fraction, seed, base, evaluate_fn, timeout)
    return _simulate(
        clients,
        main,
        num_cpus=num_cpus,
        client_gpus=client_gpus,
        ray_address=ray_address,
        verbose=verbose,
    )


def flower_dsgd(
    clients: Sequence[Client],
    initial_parameters,
    mixing,
    rounds: int,
    seed: int = 0,
    *,
    config: dict | None = None,
    evaluate_fn: EvaluateFn | None = None,
    num_cpus: int | None = None,
    client_gpus: float = 0.0,
    ray_address: str | None = None,
    round_timeout: float | None = None,
    verbose: bool = False,
) -> FedResult:
    """:func:`~.engine.dsgd` with gossip relayed by a Flower ServerApp.

    Same arguments, semantics and result as the in-process loop, ``model_transfers``
    included (one per relayed neighbour model; the relay's uploads are not counted, see the
    module docstring). Every node trains every round, so ``num_cpus`` defaults to
    ``min(len(clients), CPUs available)``; the other options are those of
    :func:`flower_fedavg`.
    """
    _require_flower()
    clients, nodes, q, rounds, base = _dsgd_args(
        clients, initial_parameters, mixing, rounds, seed, config
    )
    k = len(clients)
    num_cpus, client_gpus = _resources(num_cpus, client_gpus, k)
    timeout = _check_timeout(round_timeout)
    _config_record({**base, "round": 1}, "config")
    if rounds == 0:
        return _dsgd_loop(nodes, q, 0, base, evaluate_fn, None)
    main = dsgd_main(k, nodes, q, rounds, base, evaluate_fn, timeout)
    return _simulate(
        clients,
        main,
        num_cpus=num_cpus,
        client_gpus=client_gpus,
        ray_address=ray_address,
        verbose=verbose,
    )


# ---------------------------------------------------------------------------- server mains


def fedavg_main(k, params, rounds, fraction, seed, base, evaluate_fn, timeout):
    """The ServerApp body of FedAvg over ``k`` nodes: ``main(grid) -> FedResult`` (the
    in-process loop, each round's fits sent as ``train.fedavg`` messages)."""
    from flwr.app import Message, RecordDict

    def main(grid) -> FedResult:
        node_of = _node_ids(grid, k, timeout)

        def fit_round(chosen, params, cfg):
            messages = {
                i: Message(
                    RecordDict(
                        {"arrays": _array_record(params), "config": _config_record(cfg, "config")}
                    ),
                    dst_node_id=node_of[i],
                    message_type="train.fedavg",
                    group_id=str(cfg["round"]),
                )
                for i in chosen
            }
            replies = _exchange(grid, messages, timeout, f"round {cfg['round']}")
            return [_read_fit(replies[i], params, f"clients[{i}]") for i in chosen]

        return _fedavg_loop(k, params, rounds, fraction, seed, base, evaluate_fn, fit_round)

    return main


def dsgd_main(k, nodes, q, rounds, base, evaluate_fn, timeout):
    """The ServerApp body of D-SGD over ``k`` nodes: ``main(grid) -> FedResult`` (gossip
    relayed as ``train.dsgd`` messages; the mixing happens on the nodes)."""
    from flwr.app import ConfigRecord, Message, RecordDict

    neighbours = _neighbours(q)

    def main(grid) -> FedResult:
        node_of = _node_ids(grid, k, timeout)
        seeded: set[int] = set()  # nodes that hold their own model

        def step(nodes, cfg):
            messages = {}
            for i in range(k):
                content = RecordDict(
                    {
                        "config": _config_record(cfg, "config"),
                        "mixing": ConfigRecord(
                            {
                                "nodes": list(neighbours[i]),
                                "weights": [float(q[i, j]) for j in neighbours[i]],
                            }
                        ),
                    }
                )
                for j in neighbours[i]:
                    if j != i:
                        content[f"model-{j}"] = _array_record(nodes[j])
                if i not in seeded:
                    content["own"] = _array_record(nodes[i])
                messages[i] = Message(
                    content,
                    dst_node_id=node_of[i],
                    message_type="train.dsgd",
                    group_id=str(cfg["round"]),
                )
            replies = _exchange(grid, messages, timeout, f"round {cfg['round']}")
            seeded.update(range(k))
            return [_read_fit(replies[i], nodes[i], f"clients[{i}]") for i in range(k)]

        return _dsgd_loop(nodes, q, rounds, base, evaluate_fn, step)

    return main
