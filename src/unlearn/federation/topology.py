"""Communication graphs for decentralized learning, and their gossip (mixing) matrices.

Graphs are undirected ``networkx.Graph`` objects on the nodes ``0 .. n-1`` without self
loops. :func:`metropolis` turns a graph into the Metropolis-Hastings mixing matrix that
decentralized SGD averages with; :func:`spectral_gap` measures how fast repeated mixing
reaches consensus (larger is faster: 1 for the complete graph, about ``1/n**2`` for a ring).
"""

from __future__ import annotations

import math

import networkx as nx
import numpy as np

from ..errors import UnlearnError
from ._checks import check_float, check_int, check_seed

__all__ = [
    "TOPOLOGIES",
    "complete",
    "edges",
    "erdos_renyi",
    "metropolis",
    "ring",
    "spectral_gap",
    "topology",
    "torus",
]

TOPOLOGIES = ("ring", "torus", "erdos_renyi", "complete")


def _empty(n: int) -> nx.Graph:
    graph = nx.Graph()
    graph.add_nodes_from(range(n))
    return graph


def ring(n: int) -> nx.Graph:
    """The cycle ``0 - 1 - ... - (n-1) - 0`` (one edge for ``n = 2``, none for ``n = 1``)."""
    n = check_int("n", n, low=1)
    graph = _empty(n)
    graph.add_edges_from((i, (i + 1) % n) for i in range(n) if (i + 1) % n != i)
    return graph


def torus(rows: int, cols: int) -> nx.Graph:
    """A ``rows x cols`` grid with wrap-around; node ``r * cols + c`` sits at ``(r, c)``.

    Each node links to its four periodic neighbours; a side of length 2 gives a single edge
    (degree 3), a side of length 1 none.
    """
    rows = check_int("rows", rows, low=1)
    cols = check_int("cols", cols, low=1)
    graph = _empty(rows * cols)
    for r in range(rows):
        for c in range(cols):
            here = r * cols + c
            for there in (((r + 1) % rows) * cols + c, r * cols + (c + 1) % cols):
                if there != here:
                    graph.add_edge(here, there)
    return graph


def complete(n: int) -> nx.Graph:
    """Every pair of the ``n`` nodes linked."""
    n = check_int("n", n, low=1)
    graph = _empty(n)
    graph.add_edges_from((i, j) for i in range(n) for j in range(i + 1, n))
    return graph


def erdos_renyi(n: int, p: float, seed: int = 0, max_tries: int = 100) -> nx.Graph:
    """A connected G(n, p) random graph: each pair linked independently with probability p.

    Attempt ``t`` draws from ``numpy.random.default_rng([seed, t])``; the first connected
    draw is returned, and after ``max_tries`` disconnected ones an error says so.
    """
    n = check_int("n", n, low=1)
    p = check_float("p", p, low=0.0, high=1.0, low_open=True)
    seed = check_seed(seed)
    max_tries = check_int("max_tries", max_tries, low=1)
    upper = np.triu_indices(n, k=1)
    for attempt in range(max_tries):
        rng = np.random.default_rng([seed, attempt])
        keep = rng.random(len(upper[0])) < p
        graph = _empty(n)
        graph.add_edges_from(zip(upper[0][keep].tolist(), upper[1][keep].tolist(), strict=True))
        if nx.is_connected(graph):
            return graph
    threshold = math.log(n) / n if n > 1 else 0.0
    raise UnlearnError(
        f"erdos_renyi: no connected graph with n={n}, p={p} in max_tries={max_tries} draws; "
        f"raise p (connectivity needs p well above ln(n)/n = {threshold:.3g})"
    )


def _square_factors(n: int) -> tuple[int, int]:
    rows = max(d for d in range(1, math.isqrt(n) + 1) if n % d == 0)
    return rows, n // rows


def topology(name: str, n: int, **opts) -> nx.Graph:
    """Build a graph by name: ``ring``, ``torus``, ``erdos_renyi`` or ``complete``.

    Options: ``torus`` takes ``rows`` (default: the most square factorisation of ``n``; a
    prime ``n > 3`` then needs ``rows`` given, e.g. ``rows=1`` for a ring); ``erdos_renyi``
    takes ``p`` (required), ``seed`` and ``max_tries``. Other options are refused.
    """
    if not isinstance(name, str):
        raise UnlearnError(f"topology name must be a string, got {name!r}")
    key = name.strip().lower().replace("-", "_")
    if key not in TOPOLOGIES:
        raise UnlearnError(f"unknown topology {name!r} ({', '.join(TOPOLOGIES)})")
    n = check_int("n", n, low=1)
    allowed = {
        "ring": (),
        "complete": (),
        "torus": ("rows",),
        "erdos_renyi": ("p", "seed", "max_tries"),
    }
    extra = sorted(set(opts) - set(allowed[key]))
    if extra:
        known = ", ".join(allowed[key]) or "none"
        raise UnlearnError(f"topology {key!r} got unknown option(s) {extra} (known: {known})")
    if key == "ring":
        return ring(n)
    if key == "complete":
        return complete(n)
    if key == "erdos_renyi":
        if "p" not in opts:
            raise UnlearnError("topology 'erdos_renyi' needs the edge probability p")
        return erdos_renyi(n, **opts)
    if opts.get("rows") is not None:
        rows = check_int("rows", opts["rows"], low=1)
        if n % rows:
            raise UnlearnError(f"torus: rows={rows} does not divide n={n}")
        return torus(rows, n // rows)
    rows, cols = _square_factors(n)
    if rows == 1 and n > 3:
        raise UnlearnError(f"torus: n={n} is prime, so no rows x cols grid; pass rows (e.g. 1)")
    return torus(rows, cols)


def _check_graph(graph) -> int:
    if not isinstance(graph, nx.Graph):
        raise UnlearnError(f"graph must be a networkx Graph, got {type(graph).__name__}")
    if graph.is_directed():
        raise UnlearnError("graph must be undirected")
    n = graph.number_of_nodes()
    if n == 0:
        raise UnlearnError("graph has no nodes")
    if set(graph.nodes) != set(range(n)):
        raise UnlearnError(f"graph nodes must be 0..{n - 1}")
    return n


def edges(graph: nx.Graph) -> int:
    """Undirected edges between distinct nodes (self loops not counted)."""
    _check_graph(graph)
    return sum(1 for u, v in graph.edges() if u != v)


def metropolis(graph: nx.Graph) -> np.ndarray:
    """The Metropolis-Hastings mixing matrix of an undirected graph (``float64``, n x n).

    ``Q[i, j] = 1 / (1 + max(deg_i, deg_j))`` for each edge, 0 between non-neighbours, and
    ``Q[i, i]`` what is left of row ``i``. The matrix is symmetric, non-negative and doubly
    stochastic, so gossip with it keeps the nodes' average. Self loops are ignored.
    """
    n = _check_graph(graph)
    deg = np.zeros(n, dtype=np.int64)
    pairs = [(u, v) for u, v in graph.edges() if u != v]
    for u, v in pairs:
        deg[u] += 1
        deg[v] += 1
    q = np.zeros((n, n), dtype=np.float64)
    for u, v in pairs:
        q[u, v] = q[v, u] = 1.0 / (1.0 + max(deg[u], deg[v]))
    q[np.diag_indices(n)] = 1.0 - q.sum(axis=1)
    return q


def spectral_gap(q) -> float:
    """``1 - |lambda_2|``: one minus the second largest absolute eigenvalue of symmetric ``q``.

    For a connected graph's mixing matrix this lies in ``(0, 1]``; 0 means the nodes never
    reach consensus (a disconnected graph). A 1 x 1 matrix has gap 1.
    """
    q = np.asarray(q, dtype=np.float64)
    if q.ndim != 2 or q.shape[0] != q.shape[1] or q.shape[0] == 0:
        raise UnlearnError(f"mixing matrix must be square and non-empty, got shape {q.shape}")
    if not np.all(np.isfinite(q)):
        raise UnlearnError("mixing matrix must be finite")
    if not np.allclose(q, q.T, rtol=0.0, atol=1e-10):
        raise UnlearnError("mixing matrix must be symmetric for spectral_gap")
    if q.shape[0] == 1:
        return 1.0
    mags = np.sort(np.abs(np.linalg.eigvalsh(q)))[::-1]
    return float(1.0 - mags[1])
