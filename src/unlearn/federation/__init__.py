"""Federated and decentralized learning groundwork: data splits, graphs, and an in-process engine.

Partitions (:mod:`.partition`):

- :func:`iid_partition` -- shuffle ``range(n)`` into ``clients`` near-equal disjoint parts.
- :func:`dirichlet_partition` -- label-skewed split, per-class client shares ~ Dir(alpha).

Topologies (:mod:`.topology`):

- :func:`ring` -- the cycle on ``n`` nodes.
- :func:`torus` -- a ``rows x cols`` periodic grid.
- :func:`erdos_renyi` -- a connected G(n, p) random graph (seeded, redrawn until connected).
- :func:`complete` -- every pair of nodes linked.
- :func:`topology` -- build one of the above by name (``TOPOLOGIES``).
- :func:`metropolis` -- the Metropolis-Hastings mixing matrix of a graph.
- :func:`spectral_gap` -- ``1 - |lambda_2|`` of a symmetric mixing matrix.
- :func:`edges` -- the number of undirected edges of a graph.

Engine (:mod:`.engine`, Flower ``NumPyClient`` semantics):

- :class:`Client` -- base class: ``fit`` / ``evaluate`` on lists of numpy arrays.
- :class:`TorchClient` -- a client that trains a PyTorch classifier on local ``(x, y)``.
- :func:`get_parameters` -- a model's float state as numpy arrays, in ``state_dict`` order.
- :func:`set_parameters` -- load such arrays back into a model.
- :func:`round_seed` -- the per-client, per-round seed a :class:`TorchClient` trains with.
- :func:`fedavg` -- federated averaging with seeded client sampling.
- :func:`dsgd` -- decentralized SGD: gossip with a mixing matrix, then local training.
- :func:`consensus_distance` -- mean squared distance of node parameters to their average.
- :class:`FedResult` -- parameters, per-node parameters, costs and per-round history of a run.

Certified decentralized unlearning (:mod:`.certified`, a reconstruction of Wu et al.):

- :func:`influence_weights` -- each node's share of one client's D-SGD steps (unrolled).
- :func:`mixing_bound` -- bound on how far those shares are from ``rounds / N`` (``|lambda_2|``).
- :func:`fisher_diagonal` / :func:`fisher_vector_product` -- empirical Fisher of the CE loss.
- :func:`conjugate_gradient` -- CG on a matrix-vector product, with its true residual.
- :func:`newton_correction` -- the Newton-style unlearning step (diag, CG or exact curvature).
- :func:`gradient_residual_bound` -- data-dependent residual bound for linear softmax models.
- :func:`gaussian_sigma` -- the classic Gaussian mechanism's noise scale.
- :func:`dfl_certified_unlearn` -- consensus, correction, calibrated noise, broadcast.

Flower engine (:mod:`.flower`; needs the ``federated`` extra, imported only when called):

- :func:`flower_fedavg` -- :func:`fedavg` with the same clients run in Flower's simulation.
- :func:`flower_dsgd` -- :func:`dsgd` with gossip relayed by a Flower ServerApp.
"""

from __future__ import annotations

from .certified import (
    DFLCertifiedResult,
    conjugate_gradient,
    dfl_certified_unlearn,
    fisher_diagonal,
    fisher_vector_product,
    gaussian_sigma,
    gradient_residual_bound,
    influence_weights,
    mixing_bound,
    newton_correction,
)
from .engine import (
    Client,
    FedResult,
    TorchClient,
    consensus_distance,
    dsgd,
    fedavg,
    get_parameters,
    round_seed,
    set_parameters,
)
from .flower import flower_dsgd, flower_fedavg
from .partition import dirichlet_partition, iid_partition
from .topology import (
    TOPOLOGIES,
    complete,
    edges,
    erdos_renyi,
    metropolis,
    ring,
    spectral_gap,
    topology,
    torus,
)

__all__ = [
    "TOPOLOGIES",
    "Client",
    "DFLCertifiedResult",
    "FedResult",
    "TorchClient",
    "complete",
    "conjugate_gradient",
    "consensus_distance",
    "dfl_certified_unlearn",
    "dirichlet_partition",
    "dsgd",
    "edges",
    "erdos_renyi",
    "fedavg",
    "fisher_diagonal",
    "fisher_vector_product",
    "flower_dsgd",
    "flower_fedavg",
    "gaussian_sigma",
    "get_parameters",
    "gradient_residual_bound",
    "iid_partition",
    "influence_weights",
    "metropolis",
    "mixing_bound",
    "newton_correction",
    "ring",
    "round_seed",
    "set_parameters",
    "spectral_gap",
    "topology",
    "torus",
]
