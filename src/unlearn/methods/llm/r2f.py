"""R2F, Recover-to-Forget: unlearning along full-model gradients decoded from LoRA gradients.

Liu, Chen, Huang, Ni and Imani, "Recover-to-Forget: Gradient Reconstruction from
LoRA for Efficient LLM Unlearning" (arXiv; ``../shared/papers/NOTES.md`` section 4).
The target model is reached only through LoRA gradients: R2F computes gradients
with respect to LoRA adapters on each forget prompt (and its paraphrases), decodes
them into full weight-gradient directions with a decoder fitted on a *proxy* model
(where full gradients are cheap), and steps the target's weights along the decoded
gradients: ascent on the forget NLL, optionally minus ``alpha`` times the retain NLL.

**The sketch.** An adapted linear layer computes ``W x + s B A x`` with ``s =
lora_alpha / r``. With ``B = 0`` the chain rule gives ``dL/dA = 0`` and ``dL/dB = s G
A^T``, where ``G`` (``d_out x d_in``) is the full gradient of ``W``: each row ``g_i``
of ``G`` is seen only through its ``r`` numbers ``b_i = s A g_i``. R2F keeps ``A``
fixed (a seeded random matrix, the same on proxy and target) and ``B = 0`` at every
step, so each step's LoRA gradient is such a sketch of the target's current ``G``.
A LoRA gradient still back-propagates through every layer; what it never forms is a
``d_out x d_in`` weight gradient (the run record counts those, and LoRA gradients).

**The decoders.** No code of the paper is public, so the decoder here is *our
reconstruction* (the paper's decoder architecture is not given in enough detail):

- ``pinv``, the baseline: ``G_hat = (1/s) dL/dB (A^T)^+ = G A^T (A A^T)^-1 A``, the
  projection of each row of ``G`` onto the ``r``-dimensional row space of ``A``. For an
  isotropic ``G`` its expected cosine with ``G`` is ``sqrt(r / d_in)`` (about 0.12 at
  ``r`` 8 and width 576): ``<G, G P> = ||G P||^2`` and ``E ||G P||^2 = (r / d_in) E
  ||G||^2``. A random sketch alone recovers little of the gradient.
- ``ridge`` (default), a Wiener / ridge map learned from the proxy: per adapted layer
  the matrix ``D`` (``d_in x r``) minimising ``sum_i ||g_i - D b_i||^2 + lam ||D||^2``
  over the rows of the proxy's full gradients on ``fit_batches`` batches, in closed
  form ``D = C_gb (C_bb + lam I)^-1`` from the accumulated moments ``C_gb = sum g_i
  b_i^T`` and ``C_bb = sum b_i b_i^T`` (``lam = ridge * trace(C_bb) / r``). It is the
  best linear estimate of a gradient row from its sketch under the proxy's gradient
  statistics, ``D = s S A^T (s^2 A S A^T + lam I)^-1`` with ``S = sum g_i g_i^T``:
  where the gradients' rows concentrate in a few directions (they lie in the span of
  the layer's input activations, which are far from isotropic), it recovers much
  more than the projection, exactly so for gradients in a subspace of dimension at
  most ``r`` and ``lam`` -> 0. It is only as good as the proxy's statistics are the
  target's: from an unrelated proxy it can fall below the pseudo-inverse. ``shrink``
  (``rho`` in [0, 1]) hedges: it fits with ``(1 - rho) S / tr(S) + rho I / d_in``, the
  proxy's statistics blended with isotropic ones (``rho`` 1: the pseudo-inverse, up
  to ``lam``).

``sketch: proxy_pca`` is the alternative of choosing ``A`` itself from the proxy:
the top-``r`` eigenvectors of ``S``, so that both decoders become (about) the
projection onto the proxy's dominant gradient subspace, the best rank-``r`` linear
sketch under the proxy's statistics. It holds one ``d_in x d_in`` matrix per
adapted layer while fitting.

**The proxy.** ``ctx.proxies["proxy"]``: a model with the target's vocabulary and the
shapes of its adapted layers, e.g. the base model of a fine-tuned target, or a
layer-truncated copy of it. Target decoder layer ``j`` takes the decoder fitted on
proxy layer ``min(j, L_p - 1)`` (``layer_map: clamp``: the truncated copy's layers
are the target's first ones; deeper target layers use the proxy's last) or
``floor(j L_p / L_t)`` (``layer_map: proportional``: depth-proportional). The decoder
is fitted on prompts disjoint from the forget set: the retain pairs, or the
context's ``alternatives["fit_pairs"]``; a fit prompt that asks a forget question is
refused. ``proxy: self_copy`` fits on a copy of the target itself: **for tests
only** (its full gradients are the target's, so the run is no longer LoRA-only).

**The update.** For ``steps`` steps: a forget batch (each pair with the paraphrase
pairs given, aligned with the forget set, in ``alternatives["paraphrases"]``: one
pair or a list of pairs per forget pair; without them, the questions as they are)
and, with ``alpha`` > 0, a retain batch; the LoRA gradient of ``-NLL(forget) + alpha
NLL(retain)`` on the target; each adapted layer's gradient decoded; the decoded
gradients clipped to a global norm ``grad_clip`` and applied by the optimiser (plain
SGD by default: ``W <- W + lr * G_hat`` for the ascent direction ``G_hat``, whose
norm is then at most ``lr * grad_clip``). The target's weights change only through
decoded gradients; the adapters are removed at the end (``B`` stays 0), so only the
adapted layers' weights change.

**The report** (``RunRecord.extra``): ``full_grad_evals``, the full weight-gradient
evaluations the method made on the target (0: counted, not assumed: a target
backward pass in which any weight but the LoRA ``B`` matrices requires a gradient
counts); ``lora_grad_evals``; ``proxy_full_grad_evals``; with ``diagnose`` (default),
the cosine between decoded and true target gradients per adapted layer, their median
over layers and the global cosine, for the ridge and the pseudo-inverse decoders,
on the first ``diagnose_steps`` steps; the true gradients for it are computed in a
separate pass, counted as ``diagnostic_full_grad_evals`` and never used in the update.
Wall times of fitting, updates and diagnostics are in ``seconds``.
"""

from __future__ import annotations

import copy
import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ...errors import UnlearnError
from ...tasks.causal_lm import LORA_TARGETS
from ...training import OPTIMIZERS, make_optimizer, optimizer_slots
from ..base import Method, MethodConfig, UnlearnContext, register

__all__ = [
    "R2F",
    "R2FConfig",
    "cosine",
    "lora_sketch",
    "map_layer",
    "pinv_decoder",
    "ridge_decoder",
]

DECODERS = ("ridge", "pinv")


@dataclass(frozen=True)
class R2FConfig(MethodConfig):
    """Options of R2F.

    - the update: ``steps`` steps on forget batches of ``batch_size`` (with their
      ``paraphrases`` from the context when given and ``paraphrases`` is true) and, with
      ``alpha`` > 0, retain batches weighted ``alpha``; the decoded gradients clipped to
      norm ``grad_clip`` and applied by ``optimizer`` (``lr``, ``momentum``,
      ``weight_decay``); with SGD the step's norm is at most ``lr * grad_clip``;
    - the sketch: rank-``lora_rank`` adapters (scale ``lora_alpha / lora_rank``) on
      ``lora_targets`` (every linear layer of a decoder block when empty), ``A`` drawn
      at random from the seed (``sketch: random``) or the proxy's top gradient directions
      (``sketch: proxy_pca``);
    - the decoder: ``ridge`` (regularised by ``ridge`` times the mean sketch energy,
      shrunk toward isotropy by ``shrink``) or ``pinv``, fitted on ``fit_batches`` proxy
      batches of ``fit_batch_size`` (0: ``batch_size``) retain or ``fit_pairs`` prompts;
      ``proxy``: ``context`` (``ctx.proxies["proxy"]``) or ``self_copy`` (tests only);
      ``layer_map``: ``clamp`` or ``proportional`` (for a proxy with fewer layers);
    - ``diagnose``: measure decoded-vs-true cosines on the first ``diagnose_steps`` steps;
    - ``target_forget_acc``: stop once the context's probe reports at most that many
      percent, checked every ``check_every`` steps (as the shared loop's early stop).
    """

    steps: int = 20
    lr: float = 0.1
    batch_size: int = 8
    optimizer: str = "sgd"
    momentum: float = 0.0
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    alpha: float = 0.0
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_targets: tuple[str, ...] = ()
    decoder: str = "ridge"
    sketch: str = "random"
    ridge: float = 1e-3
    shrink: float = 0.0
    fit_batches: int = 16
    fit_batch_size: int = 0
    proxy: str = "context"
    layer_map: str = "clamp"
    paraphrases: bool = True
    diagnose: bool = True
    diagnose_steps: int = 1
    target_forget_acc: float | None = None
    check_every: int = 5

    def __post_init__(self) -> None:
        super().__post_init__()
        bad = []
        if self.steps < 1 or self.batch_size < 1:
            bad.append("steps and batch_size must be >= 1")
        if not self.lr > 0:
            bad.append(f"lr must be > 0, got {self.lr}")
        if self.optimizer not in OPTIMIZERS:
            bad.append(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.weight_decay < 0 or self.grad_clip < 0 or not 0 <= self.momentum < 1:
            bad.append("weight_decay and grad_clip must be >= 0, momentum in [0, 1)")
        if self.alpha < 0:
            bad.append(f"alpha must be >= 0, got {self.alpha}")
        if self.lora_rank < 1 or not self.lora_alpha > 0:
            bad.append("lora_rank must be >= 1 and lora_alpha > 0 (the sketch is the LoRA B grad)")
        if self.decoder not in DECODERS:
            bad.append(f"decoder must be 'ridge' or 'pinv', got {self.decoder!r}")
        if self.sketch not in ("random", "proxy_pca"):
            bad.append(f"sketch must be 'random' or 'proxy_pca', got {self.sketch!r}")
        if not self.ridge > 0:
            bad.append(f"ridge must be > 0, got {self.ridge}")
        if not 0 <= self.shrink <= 1:
            bad.append(f"shrink must be in [0, 1], got {self.shrink}")
        if self.fit_batches < 1 or self.fit_batch_size < 0:
            bad.append("fit_batches must be >= 1 and fit_batch_size >= 0")
        if self.proxy not in ("context", "self_copy"):
            bad.append(f"proxy must be 'context' or 'self_copy' (tests only), got {self.proxy!r}")
        if self.layer_map not in ("clamp", "proportional"):
            bad.append(f"layer_map must be 'clamp' or 'proportional', got {self.layer_map!r}")
        if self.diagnose_steps < 0:
            bad.append(f"diagnose_steps must be >= 0, got {self.diagnose_steps}")
        if self.check_every < 1:
            bad.append(f"check_every must be >= 1, got {self.check_every}")
        t = self.target_forget_acc
        if t is not None and not 0 <= t <= 100:
            bad.append(f"target_forget_acc is a percentage in [0, 100], got {t}")
        if bad:
            raise UnlearnError("; ".join(bad))


# ---------------------------------------------------------------------- the decoder maths
def lora_sketch(grad: torch.Tensor, a: torch.Tensor, scale: float) -> torch.Tensor:
    """``dL/dB`` of a zero-``B`` LoRA adapter ``(a, B)`` on a layer of full gradient ``grad``:
    ``scale * grad @ a.T`` (``d_out x r``)."""
    return scale * grad @ a.T


def pinv_decoder(a: torch.Tensor, scale: float) -> torch.Tensor:
    """The ``r x d_in`` matrix ``R`` with ``sketch @ R = (1/scale) sketch (A^T)^+``: each
    row of the gradient projected onto the row space of ``a``."""
    a64 = a.double()
    return (torch.linalg.solve(a64 @ a64.T, a64) / scale).to(a.dtype)


def ridge_decoder(c_gb: torch.Tensor, c_bb: torch.Tensor, ridge: float) -> torch.Tensor:
    """The ``r x d_in`` matrix ``R = D^T``, ``D = C_gb (C_bb + lam I)^-1`` with ``lam =
    ridge * trace(C_bb) / r``: the ridge map from a gradient row's sketch ``b_i`` to the
    row ``g_i``, from the moments ``C_gb = sum g_i b_i^T`` and ``C_bb = sum b_i b_i^T``."""
    r = c_bb.shape[0]
    c_bb64 = c_bb.double()
    tr = float(torch.trace(c_bb64))
    if not tr > 0 or not math.isfinite(tr):
        raise UnlearnError("the proxy's gradients vanish on a layer: no decoder can be fitted")
    reg = c_bb64 + (ridge * tr / r) * torch.eye(r, dtype=torch.float64, device=c_bb.device)
    return torch.linalg.solve(reg, c_gb.double().T)


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """The cosine between two tensors taken as vectors (0 if either is zero)."""
    a64, b64 = a.double().flatten(), b.double().flatten()
    den = float(a64.norm() * b64.norm())
    return float(a64 @ b64) / den if den > 0 else 0.0


def map_layer(j: int, n_target: int, n_proxy: int, how: str) -> int:
    """The proxy layer whose decoder target layer ``j`` uses (``clamp`` or ``proportional``)."""
    if how == "clamp":
        return min(j, n_proxy - 1)
    return min(n_proxy - 1, (j * n_proxy) // n_target)


# ---------------------------------------------------------------------- adapted layers
@dataclass
class _Site:
    """One adapted linear layer: where it is, its proxy counterpart, sketch and decoders."""

    layer: int
    rel: str  # path inside the decoder layer, e.g. "self_attn.q_proj"
    proxy_layer: int
    weight: torch.Tensor | None = None  # the target's base weight (d_out x d_in)
    proxy_weight: torch.Tensor | None = None
    lora_a: torch.Tensor | None = None
    lora_b: torch.Tensor | None = None
    scale: float = 1.0
    a: torch.Tensor | None = None  # the fixed sketch (r x d_in)
    c_gb: torch.Tensor | None = None
    c_bb: torch.Tensor | None = None
    energy: float = 0.0  # sum of ||g_i||^2, the trace of S
    decoders: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"layers.{self.layer}.{self.rel}"


def _linear_sites(task, model: nn.Module, targets) -> list[tuple[int, str, nn.Linear]]:
    out = []
    for i, block in enumerate(task.layers(model)):
        for rel, mod in block.named_modules():
            if rel and rel.rsplit(".", 1)[-1] in targets and isinstance(mod, nn.Linear):
                out.append((i, rel, mod))
    return out


def _pairs_of(item, what: str) -> list[tuple[str, str]]:
    """One paraphrase pair or a list of them, as a list of pairs."""
    if isinstance(item, tuple | list) and len(item) == 2 and all(isinstance(t, str) for t in item):
        return [(item[0], item[1])]
    if isinstance(item, tuple | list) and all(
        isinstance(p, tuple | list) and len(p) == 2 and all(isinstance(t, str) for t in p)
        for p in item
    ):
        return [(p[0], p[1]) for p in item]
    raise UnlearnError(f"{what} must be a (question, answer) pair or a list of them, got {item!r}")


@register
class R2F(Method):
    name = "r2f"
    summary = (
        "Recover-to-Forget: LoRA-gradient sketches of the forget loss decoded into full "
        "gradients by a decoder fitted on a proxy model; ascent along the decoded gradients."
    )
    requires = ("logprob", "lora", "layers")
    request_kinds = ("samples", "group")
    presets = {
        "causal_lm": {"steps": 20, "lr": 0.1, "batch_size": 8, "optimizer": "sgd", "grad_clip": 1.0}
    }
    Config = R2FConfig

    def touched(self) -> str:
        c = self.config
        where = ",".join(c.lora_targets) if c.lora_targets else "every linear layer of a block"
        return f"weights of {where}, along gradients decoded from rank-{c.lora_rank} LoRA sketches"

    # -- inputs --------------------------------------------------------------------------
    def _fit_data(self, ctx: UnlearnContext) -> tuple[Any, str]:
        fit = ctx.alternatives.get("fit_pairs")
        if fit is not None:
            return ctx.task.as_data(fit), "fit_pairs"
        return ctx.retain, "retain"

    def prepare(self, ctx: UnlearnContext) -> None:
        cfg = self.config
        if cfg.target_forget_acc is not None and ctx.probe is None:
            raise UnlearnError("r2f: target_forget_acc needs a probe in the context")
        if cfg.proxy == "context" and ctx.proxies.get("proxy") is None:
            raise UnlearnError(
                "r2f needs a proxy model in the context, ctx.proxies['proxy']: a model with the "
                "target's layer shapes on which full gradients are cheap (e.g. the base model of "
                "a fine-tuned target, or a layer-truncated copy); proxy='self_copy' is for tests"
            )
        if cfg.proxy == "context" and not isinstance(ctx.proxies["proxy"], nn.Module):
            raise UnlearnError(
                f"the r2f proxy must be a torch module, got {type(ctx.proxies['proxy']).__name__}"
            )
        forget_q = {q for q, _ in ctx.forget}
        self._paraphrases: list[list[tuple[str, str]]] | None = None
        para = ctx.alternatives.get("paraphrases") if cfg.paraphrases else None
        if para is not None:
            if len(para) != len(ctx.forget):
                raise UnlearnError(
                    f"paraphrases hold {len(para)} items for {len(ctx.forget)} forget pairs "
                    "(one pair or a list of pairs per forget pair, in the forget set's order)"
                )
            self._paraphrases = [_pairs_of(p, "a paraphrase item") for p in para]
            forget_q |= {q for ps in self._paraphrases for q, _ in ps}
        fit, where = self._fit_data(ctx)
        if ctx.task.size(fit) == 0:
            raise UnlearnError(
                "r2f fits its decoder on prompts outside the forget set: give a non-empty "
                "retain set or alternatives['fit_pairs']"
            )
        shared = sorted({q for q, _ in fit} & forget_q)
        if shared:
            raise UnlearnError(
                f"r2f fits its decoder on prompts disjoint from the forget set, but {len(shared)} "
                f"{where} prompt(s) ask a forget question (e.g. {shared[0]!r}): give "
                "alternatives['fit_pairs'] without them"
            )

    def _proxy(self, model: nn.Module, ctx: UnlearnContext) -> nn.Module:
        src = model if self.config.proxy == "self_copy" else ctx.proxies["proxy"]
        proxy = ctx.task.to_device(copy.deepcopy(src)).eval()  # the caller's proxy stays as is
        for p in proxy.parameters():
            p.requires_grad_(False)
        return proxy

    def _sites(self, model: nn.Module, proxy: nn.Module, ctx: UnlearnContext) -> list[_Site]:
        """The adapted layers of the target, each with its proxy counterpart (shapes checked)."""
        cfg, task = self.config, ctx.task
        targets = cfg.lora_targets or LORA_TARGETS
        found = _linear_sites(task, model, targets)
        if not found:
            raise UnlearnError(
                f"no linear layer named {', '.join(targets)} in the target's decoder layers"
            )
        n_t, proxy_layers = len(task.layers(model)), task.layers(proxy)
        emb_t, emb_p = model.get_input_embeddings(), proxy.get_input_embeddings()
        if emb_t is not None and emb_p is not None and emb_t.weight.shape != emb_p.weight.shape:
            raise UnlearnError(
                f"the proxy's embedding has shape {tuple(emb_p.weight.shape)}, the target's "
                f"{tuple(emb_t.weight.shape)}: proxy and target need the same vocabulary and width"
            )
        absent = sorted(set(cfg.lora_targets) - {rel.rsplit(".", 1)[-1] for _, rel, _ in found})
        if absent:
            raise UnlearnError(f"no linear layer named {', '.join(absent)} in the decoder layers")
        sites = []
        for i, rel, mod in found:
            j = map_layer(i, n_t, len(proxy_layers), cfg.layer_map)
            try:
                pmod = proxy_layers[j].get_submodule(rel)
            except AttributeError:
                raise UnlearnError(
                    f"the proxy's layer {j} has no {rel!r} (needed for target layer {i})"
                ) from None
            pw = getattr(pmod, "weight", None)
            if not isinstance(pw, torch.Tensor) or pw.shape != mod.weight.shape:
                got = tuple(pw.shape) if isinstance(pw, torch.Tensor) else None
                raise UnlearnError(
                    f"shape mismatch: the proxy's layers.{j}.{rel} weight has shape {got}, the "
                    f"target's layers.{i}.{rel} {tuple(mod.weight.shape)}"
                )
            sites.append(_Site(layer=i, rel=rel, proxy_layer=j, proxy_weight=pw))
        return sites

    # -- fitting the decoders on the proxy ---------------------------------------------
    def _fit(self, proxy: nn.Module, sites: list[_Site], ctx: UnlearnContext) -> dict:
        cfg, task = self.config, ctx.task
        fit, where = self._fit_data(ctx)
        stream = task.stream(fit, cfg.fit_batch_size or cfg.batch_size, ctx.generator(21))
        weights: list[torch.Tensor] = []
        for s in sites:  # one gradient per proxy weight, shared by the sites mapped to it
            if not any(w is s.proxy_weight for w in weights):
                weights.append(s.proxy_weight)
        slot = [next(k for k, w in enumerate(weights) if w is s.proxy_weight) for s in sites]
        for w in weights:
            w.requires_grad_(True)
        pca = cfg.sketch == "proxy_pca"
        s_in: dict[int, torch.Tensor] = {}
        for _ in range(cfg.fit_batches):
            _, batch = next(stream)
            grads = torch.autograd.grad(task.mean_loss(proxy, batch), weights)
            if pca:
                for k, g in enumerate(grads):
                    gg = (g.T @ g).detach()
                    s_in[k] = s_in[k] + gg if k in s_in else gg
            else:
                for s, k in zip(sites, slot, strict=True):
                    g = grads[k].detach().double()
                    b = lora_sketch(g, s.a.double(), s.scale)
                    s.c_gb = g.T @ b if s.c_gb is None else s.c_gb + g.T @ b
                    s.c_bb = b.T @ b if s.c_bb is None else s.c_bb + b.T @ b
                    s.energy += float((g * g).sum())
        for w in weights:
            w.requires_grad_(False)
        for s, k in zip(sites, slot, strict=True):
            if pca:  # A: the top-r eigenvectors of S; the moments follow from S
                big = s_in[k].double()
                _, vecs = torch.linalg.eigh(big)
                s.a = vecs[:, -cfg.lora_rank :].flip(-1).T.contiguous().to(s.weight.dtype)
                a64 = s.a.double()
                s.c_gb = s.scale * big @ a64.T
                s.c_bb = s.scale**2 * a64 @ big @ a64.T
                s.energy = float(torch.trace(big))
            if cfg.shrink > 0:  # S -> (1 - rho) S / tr(S) + rho I / d_in: toward isotropy
                rho, a64, d_in = cfg.shrink, s.a.double(), s.a.shape[1]
                e = max(s.energy, 1e-300)
                s.c_gb = (1 - rho) * s.c_gb / e + rho * s.scale * a64.T / d_in
                s.c_bb = (1 - rho) * s.c_bb / e + rho * s.scale**2 * (a64 @ a64.T) / d_in
            s.decoders = {
                "ridge": ridge_decoder(s.c_gb, s.c_bb, cfg.ridge).to(s.weight.dtype),
                "pinv": pinv_decoder(s.a, s.scale),
            }
            s.c_gb = s.c_bb = None
        return {"fit_on": where, "fit_items": task.size(fit)}

    # -- the run ----------------------------------------------------------------------
    def _decode(self, sites: list[_Site], sketches, which: str) -> list[torch.Tensor]:
        return [sk.detach() @ s.decoders[which] for s, sk in zip(sites, sketches, strict=True)]

    def unlearn(self, model: nn.Module, ctx: UnlearnContext):
        cfg, task = self.config, ctx.task
        t_start = time.perf_counter()
        proxy = self._proxy(model, ctx)
        sites = self._sites(model, proxy, ctx)
        n_layers = len(task.layers(model))
        layer_of = {s.layer: s.proxy_layer for s in sites}
        targets = tuple(cfg.lora_targets or LORA_TARGETS)
        present = sorted({s.rel.rsplit(".", 1)[-1] for s in sites})
        peft_model = task.lora(model, cfg.lora_rank, cfg.lora_alpha, tuple(present))
        blocks = task.layers(peft_model)
        gen = ctx.generator(31)
        for s in sites:
            lora_mod = blocks[s.layer].get_submodule(s.rel)
            adapter = lora_mod.active_adapters[0]
            s.weight = lora_mod.base_layer.weight
            s.lora_a = lora_mod.lora_A[adapter].weight
            s.lora_b = lora_mod.lora_B[adapter].weight
            s.scale = float(lora_mod.scaling[adapter])
            d_in = s.weight.shape[1]
            a = torch.randn(cfg.lora_rank, d_in, generator=gen, dtype=torch.float64)
            s.a = (a / math.sqrt(d_in)).to(device=s.weight.device, dtype=s.weight.dtype)
        for p in peft_model.parameters():
            p.requires_grad_(False)
        t_fit = time.perf_counter()
        fit_info = self._fit(proxy, sites, ctx)
        del proxy
        fit_seconds = time.perf_counter() - t_fit
        with torch.no_grad():
            for s in sites:  # the fixed sketch A, and B = 0 for the whole run
                s.lora_a.copy_(s.a)
                s.lora_b.zero_()
                s.lora_b.requires_grad_(True)
        lora_b = [s.lora_b for s in sites]
        weights = [s.weight for s in sites]
        b_ids = {id(b) for b in lora_b}
        opt = make_optimizer(weights, cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.momentum)

        forget = task.stream(ctx.forget, cfg.batch_size, ctx.generator(0))
        use_retain = cfg.alpha > 0 and task.size(ctx.retain) > 0
        retain = task.stream(ctx.retain, cfg.batch_size, ctx.generator(1)) if use_retain else None
        para = self._paraphrases

        def draw() -> tuple[list, list | None]:
            idx, batch = next(forget)
            if para is not None:  # each forget pair with its paraphrases
                batch = list(batch) + [p for i in idx for p in para[int(i)]]
            return batch, (next(retain)[1] if retain is not None else None)

        def loss_on(fb, rb) -> torch.Tensor:
            loss = -task.mean_loss(peft_model, fb)
            if rb is not None:
                loss = loss + cfg.alpha * task.mean_loss(peft_model, rb)
            return loss

        full_evals = lora_evals = diag_evals = 0
        diag_seconds = 0.0
        cos: dict[str, list[list[float]]] = {k: [] for k in DECODERS}
        glob: dict[str, list[float]] = {k: [] for k in DECODERS}
        peft_model.eval()
        reached: int | None = None
        taken = 0
        t_loop = time.perf_counter()
        for t in range(cfg.steps):
            fb, rb = draw()
            loss = loss_on(fb, rb)
            if not bool(torch.isfinite(loss.detach())):
                raise UnlearnError(
                    f"the loss became {float(loss.detach())} at step {t}: lower the learning rate"
                )
            # counted, not assumed: a full weight gradient is evaluated if anything but the
            # B matrices requires a gradient in this backward pass
            full_evals += int(
                any(p.requires_grad for p in peft_model.parameters() if id(p) not in b_ids)
            )
            sketches = torch.autograd.grad(loss, lora_b)
            lora_evals += 1
            decoded = self._decode(sites, sketches, cfg.decoder)
            if cfg.diagnose and t < cfg.diagnose_steps:
                td = time.perf_counter()
                true = self._true_grads(weights, lambda fb=fb, rb=rb: loss_on(fb, rb))
                diag_evals += 1
                for which in DECODERS:
                    dec = decoded if which == cfg.decoder else self._decode(sites, sketches, which)
                    cos[which].append([cosine(d, g) for d, g in zip(dec, true, strict=True)])
                    glob[which].append(
                        cosine(
                            torch.cat([d.flatten() for d in dec]),
                            torch.cat([g.flatten() for g in true]),
                        )
                    )
                diag_seconds += time.perf_counter() - td
            for w, g in zip(weights, decoded, strict=True):
                w.grad = g.to(w.dtype)
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(weights, cfg.grad_clip)
            opt.step()
            for w in weights:
                w.grad = None
            taken = t + 1
            if cfg.target_forget_acc is not None and taken % cfg.check_every == 0:
                tp = time.perf_counter()  # B = 0: the adapted model is the updated target
                acc = ctx.probe(peft_model)
                self._probe_seconds += time.perf_counter() - tp
                if acc <= cfg.target_forget_acc:
                    reached = taken
                    break
        loop_seconds = time.perf_counter() - t_loop - diag_seconds - self._probe_seconds
        self._train_state_mb = self._state_mb(sites, cfg)
        self._extra.update(
            full_grad_evals=full_evals,
            lora_grad_evals=lora_evals,
            proxy_full_grad_evals=cfg.fit_batches,
            diagnostic_full_grad_evals=diag_evals,
            layer_map={i: layer_of[i] for i in range(n_layers) if i in layer_of},
            adapted_layers=len(sites),
            lora_targets=list(targets),
            prompts_per_forget_item=1 + (sum(map(len, para)) / len(para) if para else 0.0),
            seconds={
                "setup": t_fit - t_start,
                "fit": fit_seconds,
                "update": loop_seconds,
                "diagnostic": diag_seconds,
            },
            **fit_info,
        )
        if cfg.target_forget_acc is not None:
            self._extra.update(probe_seconds=self._probe_seconds, reached_target_at=reached)
        if diag_evals:
            self._extra["cosine"] = self._cosine_report(sites, cos, glob)
        for b in lora_b:
            b.requires_grad_(False)
        return peft_model.unload(), taken

    @staticmethod
    def _true_grads(weights: list[torch.Tensor], loss_fn) -> list[torch.Tensor]:
        """The target's true full gradients of a step's loss, in a pass of their own
        (diagnostic only: never used in the update)."""
        for w in weights:
            w.requires_grad_(True)
        try:
            return [g.detach() for g in torch.autograd.grad(loss_fn(), weights)]
        finally:
            for w in weights:
                w.requires_grad_(False)

    @staticmethod
    def _cosine_report(sites, cos, glob) -> dict:
        out: dict[str, Any] = {}
        for which, per_step in cos.items():
            per_layer = {
                s.name: sum(c[k] for c in per_step) / len(per_step) for k, s in enumerate(sites)
            }
            out[which] = {
                "median": statistics.median(per_layer.values()),
                "global": sum(glob[which]) / len(glob[which]),
                "per_layer": per_layer,
            }
        # what the pseudo-inverse would reach on isotropic gradients, sqrt(r / d_in)
        out["isotropic_pinv"] = statistics.median(
            math.sqrt(s.a.shape[0] / s.a.shape[1]) for s in sites
        )
        return out

    @staticmethod
    def _state_mb(sites: list[_Site], cfg: R2FConfig) -> float:
        n = 0
        for s in sites:
            w = s.weight.numel() * s.weight.element_size()
            n += w * (1 + optimizer_slots(cfg.optimizer, cfg.momentum))  # decoded grad, slots
            n += sum(d.numel() * d.element_size() for d in s.decoders.values())
            n += 2 * s.a.numel() * s.a.element_size() + s.lora_b.numel() * s.lora_b.element_size()
        return n / 2**20
