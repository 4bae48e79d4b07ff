"""Unlearning in a federation: certified decentralized removal and its baselines.

Every method here takes the federation's :class:`~unlearn.tasks.federated.FedModel` and
returns the unlearned one, held by the clients that remain (a whole-client deletion
removes that client's node; the others form the same kind of graph again, see
:mod:`unlearn.tasks.federated`). Each counts its own cost as the engine counts training:
``grad_evals`` (per-example gradient evaluations) and ``model_transfers`` (full parameter
vectors sent over a link), in the run record's ``extra``.

- ``dfl_certified``: Newton-style correction of the consensus with Fisher curvature,
  Gaussian noise calibrated to a bound on the remaining gradient, broadcast to every
  node (a reconstruction of Wu et al.; :mod:`unlearn.federation.certified`).
- ``fed_finetune``: the remaining clients keep training (D-SGD or FedAvg) for a few rounds.
- ``fed_pga``: projected gradient ascent by the requesting client (Halimi et al. 2022,
  arXiv 2207.05521), then a few rounds of training by the others.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
from torch.nn import functional as F

from ..errors import UnlearnError, UnsupportedRequestError
from .base import Method, MethodConfig, UnlearnContext, register

__all__ = ["DFLCertified", "FedFinetune", "FedPGA", "tree_pass_transfers"]


def tree_pass_transfers(n_nodes: int) -> int:
    """Model-sized transfers of one distributed pass over the nodes' data along a spanning
    tree: the current vector sent down every edge, the partial sums sent back up."""
    return 2 * (n_nodes - 1)


def _remaining(ctx: UnlearnContext) -> tuple[int, ...]:
    """The clients that still hold data after the request, ascending."""
    return tuple(ctx.retain.clients())


def _start_for(model, keep: tuple[int, ...]):
    """``model`` restricted to the nodes of ``keep`` (their own parameters, in order)."""
    if model.node_parameters is None or model.clients == keep:
        return model
    where = {c: i for i, c in enumerate(model.clients)}
    return model.replace(
        clients=keep, node_parameters=[model.node_parameters[where[c]] for c in keep]
    )


def _same_dtype(params: list[np.ndarray], like: list[np.ndarray]) -> list[np.ndarray]:
    return [np.asarray(p).astype(q.dtype) for p, q in zip(params, like, strict=True)]


class _FedMethod(Method):
    request_kinds = ("group", "samples", "class")
    requires = ("federated",)

    def check(self, request, task) -> None:
        super().check(request, task)
        if request.kind == "group" and getattr(request, "by", None) != "client":
            raise UnsupportedRequestError(
                f"method {self.name}: a group request in a federation groups by client, got "
                f"{request.by!r}"
            )

    def prepare(self, ctx: UnlearnContext) -> None:
        ctx.task.check_model(ctx.original)
        if len(_remaining(ctx)) < 2:
            raise UnlearnError(f"method {self.name}: fewer than 2 clients would remain")


# ---------------------------------------------------------------------------- certified


@dataclass(frozen=True)
class DFLCertifiedConfig(MethodConfig):
    """``epsilon``, ``delta``: the certificate (the classic Gaussian mechanism needs
    ``epsilon < 1``). ``newton_steps`` corrections from the consensus, the first with the
    ``gradient`` form (``retained``: a Newton step from any point; ``deleted``: the paper's
    form, exact only at a minimiser of the full objective), the rest ``retained``; each
    solves with ``curvature`` (``diag`` or ``cg`` on the empirical Fisher, ``exact`` Hessian
    for small models) plus ``damping``; the bound and the noise follow the last step.
    ``certify: false`` leaves the noise out (the uncertified correction, for comparison)."""

    epsilon: float = 0.5
    delta: float = 1e-5
    curvature: str = "cg"
    damping: float = 0.01
    newton_steps: int = 1
    gradient: str = "retained"
    max_iters: int = 100
    tol: float = 1e-6
    batch_size: int = 1024
    certify: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        from ..federation.certified import CURVATURES, GRADIENTS

        if self.curvature not in CURVATURES:
            raise UnlearnError(f"curvature must be one of {', '.join(CURVATURES)}")
        if self.gradient not in GRADIENTS:
            raise UnlearnError(f"gradient must be one of {', '.join(GRADIENTS)}")
        if self.newton_steps < 1 or self.max_iters < 1 or self.batch_size < 1:
            raise UnlearnError("newton_steps, max_iters and batch_size must be >= 1")
        if self.damping < 0 or not self.tol > 0:
            raise UnlearnError("damping must be >= 0 and tol > 0")
        if self.certify:
            from ..federation.certified import gaussian_sigma

            gaussian_sigma(0.0, self.epsilon, self.delta)  # checks epsilon < 1, delta in (0, 1)


@register
class DFLCertified(_FedMethod):
    """Certified unlearning in decentralized FL (Wu et al.; reconstructed, no public code).

    The consensus of the nodes is gathered at a coordinator (the lowest-numbered remaining
    client), corrected by ``newton_steps`` Newton steps on the retained objective (each
    gradient, curvature and Fisher-vector product is one distributed pass over the remaining
    clients' data along a spanning tree), given Gaussian noise calibrated to the convex
    residual bound (a linear model trained with L2 weight decay, the recipe's), and
    broadcast. The weight decay of the certificate is the federation recipe's (SGD's coupled
    L2, the objective ``CE + (wd/2) ||x||^2``)."""

    name = "dfl_certified"
    summary = "Newton correction with Fisher curvature + calibrated Gaussian noise (DFL)"
    Config = DFLCertifiedConfig

    def prepare(self, ctx: UnlearnContext) -> None:
        super().prepare(ctx)
        r = ctx.task.recipe
        if self.config.certify:
            if not r.weight_decay > 0:
                raise UnlearnError(
                    "dfl_certified: the certificate needs the federation trained with "
                    "weight_decay > 0 (strong convexity)"
                )
            if r.optimizer != "sgd":
                raise UnlearnError(
                    "dfl_certified: the certificate assumes SGD's coupled weight decay "
                    f"(objective CE + (wd/2)||x||^2); the recipe trains with {r.optimizer}"
                )

    def touched(self) -> str:
        return "every node's parameters (one broadcast model)"

    def unlearn(self, model, ctx: UnlearnContext):
        from ..federation.certified import (
            dfl_certified_unlearn,
            flatten_parameters,
            load_flat_parameters,
            newton_correction,
        )
        from ..federation.engine import _average, get_parameters, set_parameters

        cfg, task = self.config, ctx.task
        wd = float(task.recipe.weight_decay)
        keep = _remaining(ctx)
        m = len(keep)
        nodes = model.node_parameters or [model.parameters]
        consensus = _average(nodes)
        gather = len(nodes) - 1 if len(nodes) > 1 else 0
        retained = (ctx.retain.x.double(), ctx.retain.y)
        deleted = (ctx.forget.x.double(), ctx.forget.y)

        def factory():
            return task.model_factory().double().to(task.device)

        net = factory()
        set_parameters(net, consensus)
        evals, passes, cg_iters = 0, 0, []
        curv_passes = 1 if cfg.curvature == "diag" else 0  # the diagonal's own pass
        for k in range(cfg.newton_steps - (1 if cfg.certify else 0)):
            corr = newton_correction(
                net,
                retained,
                deleted,
                cfg.damping,
                cfg.curvature,
                weight_decay=wd,
                gradient=cfg.gradient if k == 0 else "retained",
                max_iters=cfg.max_iters,
                tol=cfg.tol,
                batch_size=cfg.batch_size,
            )
            evals += corr.grad_evals
            passes += 1 + curv_passes
            if corr.cg is not None:
                passes += corr.cg.iterations + 1
                cg_iters.append(corr.cg.iterations)
            elif cfg.curvature == "exact":
                passes += corr.step.numel()  # one Hessian-vector pass per parameter
            load_flat_parameters(net, flatten_parameters(net) + corr.step)
        extra: dict = {}
        if cfg.certify:
            res = dfl_certified_unlearn(
                get_parameters(net),
                task.mixing(m),
                factory,
                retained,
                deleted,
                cfg.epsilon,
                cfg.delta,
                cfg.damping,
                cfg.curvature,
                seed=int(ctx.seed),
                weight_decay=wd,
                gradient=cfg.gradient if cfg.newton_steps == 1 else "retained",
                max_iters=cfg.max_iters,
                tol=cfg.tol,
                batch_size=cfg.batch_size,
                device=str(task.device),
            )
            evals += res.grad_evals
            passes += 1 + curv_passes + 3  # the step, then the bound's passes
            if res.cg_iterations is not None:
                passes += res.cg_iterations + 1
                cg_iters.append(res.cg_iterations)
            elif cfg.curvature == "exact":
                passes += sum(p.numel() for p in net.parameters() if p.requires_grad)
            params = res.parameters
            extra.update(
                epsilon=res.epsilon,
                delta=res.delta,
                sigma=res.sigma,
                sensitivity=res.sensitivity,
                residual_bound=res.residual_bound,
                measured_residual=res.measured_residual,
                noise_norm=res.noise_norm,
            )
        else:
            params = get_parameters(net)
        # how far the deleted data spread: the unrolled D-SGD weight of the requester's
        # steps on every node, through the original mixing matrix
        gone = sorted(set(ctx.forget.clients())) if len(ctx.forget) else []
        if model.mixing is not None and model.rounds and len(gone) == 1:
            from ..federation.certified import influence_weights, mixing_bound

            u = list(model.clients).index(gone[0])
            w = influence_weights(model.mixing, model.rounds, u)
            share = model.rounds / len(model.clients)
            extra.update(
                influence_share=share,
                influence_max_deviation=float(np.abs(w - share).max()),
                influence_mixing_bound=mixing_bound(model.mixing, model.rounds),
            )
        broadcast = m - 1
        transfers = gather + passes * tree_pass_transfers(m) + broadcast
        params = _same_dtype(params, model.parameters)
        extra.update(
            grad_evals=int(evals),
            model_transfers=int(transfers),
            distributed_passes=int(passes),
            cg_iterations=cg_iters,
        )
        self._extra = extra
        out = model.replace(
            parameters=params,
            clients=keep,
            node_parameters=[[a.copy() for a in params] for _ in keep],
            mixing=task.mixing(m) if model.mixing is not None else None,
            grad_evals=int(evals),
            model_transfers=int(transfers),
            rounds=0,
            info=dict(extra),  # the certificate and its cost travel with the model
        )
        return out, cfg.newton_steps


# ---------------------------------------------------------------------------- baselines


@dataclass(frozen=True)
class FedFinetuneConfig(MethodConfig):
    """``rounds`` more rounds of the federation's own training by the remaining clients."""

    rounds: int = 10

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.rounds < 1:
            raise UnlearnError("rounds must be >= 1")


@register
class FedFinetune(_FedMethod):
    """The remaining clients continue training from where they are (their own node
    parameters under D-SGD, the global model under FedAvg) for ``rounds`` rounds; for a
    feature request every client trains on its data with those features set to 0."""

    name = "fed_finetune"
    summary = "the remaining clients keep training for a few rounds"
    request_kinds = ("group", "samples", "class", "feature")
    Config = FedFinetuneConfig

    def unlearn(self, model, ctx: UnlearnContext):
        task = ctx.task
        keep = _remaining(ctx)
        recipe = replace(task.recipe, rounds=self.config.rounds)
        data = ctx.retain
        if ctx.request.kind == "feature":
            from ..metrics.feature import check_features
            from ..tasks.federated import FederatedData

            cols = check_features(ctx.request.features, data.x[0].numel())
            flat = data.x.reshape(len(data), -1).clone()
            flat[:, cols] = 0.0
            data = FederatedData(flat.view_as(data.x), data.y, data.client, data.classes)
        out = task.train(
            data, keep, int(ctx.seed) + 7, start=_start_for(model, keep), recipe=recipe
        )
        self._extra = {"grad_evals": out.grad_evals, "model_transfers": out.model_transfers}
        return out, self.config.rounds


@dataclass(frozen=True)
class FedPGAConfig(MethodConfig):
    """Projected gradient ascent (Halimi et al. 2022): ``epochs`` passes of SGD ascent on the
    requesting client's data (``lr``, ``batch_size``, gradient norm clipped at ``clip``),
    each step projected onto the L2 ball of radius ``radius`` around the reference model
    ``w_ref = (N w - w_u) / (N - 1)`` (``radius`` 0: one third of the mean distance of
    ``random_models`` freshly initialised models to ``w_ref``, as the paper sets it); then
    ``post_rounds`` rounds of training by the remaining clients."""

    epochs: int = 5
    lr: float = 0.01
    batch_size: int = 32
    clip: float = 5.0
    radius: float = 0.0
    random_models: int = 10
    post_rounds: int = 2

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.epochs < 1 or self.batch_size < 1 or self.random_models < 1:
            raise UnlearnError("epochs, batch_size and random_models must be >= 1")
        if not self.lr > 0 or not self.clip > 0 or self.radius < 0 or self.post_rounds < 0:
            raise UnlearnError("lr and clip must be > 0, radius and post_rounds >= 0")


@register
class FedPGA(_FedMethod):
    """The requesting client undoes its own contribution by projected gradient ascent on its
    data from the global model, then the others train a few rounds (whole-client deletion)."""

    name = "fed_pga"
    summary = "projected gradient ascent at the requesting client, then a few rounds"
    request_kinds = ("group",)
    Config = FedPGAConfig

    def prepare(self, ctx: UnlearnContext) -> None:
        super().prepare(ctx)
        gone = sorted(set(ctx.forget.clients()))
        if len(gone) != 1:
            raise UnlearnError(f"fed_pga erases one client at a time, the request names {gone}")

    def unlearn(self, model, ctx: UnlearnContext):
        from ..federation.certified import flatten_parameters, load_flat_parameters
        from ..federation.engine import _average, get_parameters, set_parameters

        cfg, task = self.config, ctx.task
        u = ctx.forget.clients()[0]
        nodes = model.node_parameters or [model.parameters]
        n = len(model.clients)
        w = _average(nodes)
        if model.node_parameters is not None:
            w_u = model.node_parameters[list(model.clients).index(u)]
        else:
            w_u = w  # FedAvg keeps no client model: the global model stands in
        net = task.model_factory().to(task.device)
        set_parameters(net, w)
        params = [p for p in net.parameters() if p.requires_grad]

        def vec(arrays):
            probe = task.model_factory().to(task.device)
            set_parameters(probe, arrays)
            return flatten_parameters(probe)

        ref = (n * vec(w) - vec(w_u)) / (n - 1)
        radius = cfg.radius
        if radius == 0.0:
            dists = []
            with torch.random.fork_rng(devices=[]):
                for i in range(cfg.random_models):
                    torch.manual_seed(int(ctx.seed) * 7919 + i)
                    flat = flatten_parameters(task.model_factory().to(task.device))
                    dists.append(float(torch.linalg.vector_norm(flat - ref)))
            radius = float(np.mean(dists)) / 3.0
        x, y = ctx.forget.x.to(task.device), ctx.forget.y.to(task.device)
        opt = torch.optim.SGD(params, lr=cfg.lr)
        gen = ctx.generator(11)
        evals = steps = 0
        net.train()
        for _ in range(cfg.epochs):
            order = torch.randperm(len(y), generator=gen)
            for s in range(0, len(y), cfg.batch_size):
                idx = order[s : s + cfg.batch_size]
                opt.zero_grad(set_to_none=True)
                (-F.cross_entropy(net(x[idx]), y[idx])).backward()
                torch.nn.utils.clip_grad_norm_(params, cfg.clip)
                opt.step()
                gap = flatten_parameters(net) - ref  # project onto the ball around w_ref
                norm = float(torch.linalg.vector_norm(gap))
                if norm > radius:
                    load_flat_parameters(net, ref + gap * (radius / norm))
                evals += len(idx)
                steps += 1
        transfers = 2 if model.node_parameters is None else 2 * (n - 1)  # w_ref to u, result out
        keep = _remaining(ctx)
        out_params = _same_dtype(get_parameters(net), model.parameters)
        out = model.replace(
            parameters=out_params,
            clients=keep,
            node_parameters=None
            if model.node_parameters is None
            else [[a.copy() for a in out_params] for _ in keep],
            mixing=task.mixing(len(keep)) if model.mixing is not None else None,
            grad_evals=evals,
            model_transfers=transfers,
        )
        if cfg.post_rounds:
            recipe = replace(task.recipe, rounds=cfg.post_rounds)
            out = task.train(ctx.retain, keep, int(ctx.seed) + 11, start=out, recipe=recipe)
            out = out.replace(
                grad_evals=out.grad_evals + evals, model_transfers=out.model_transfers + transfers
            )
        self._extra = {
            "grad_evals": int(out.grad_evals),
            "model_transfers": int(out.model_transfers),
            "radius": radius,
        }
        return out, steps + cfg.post_rounds
