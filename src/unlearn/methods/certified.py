"""Certified Newton removal (Guo et al. 2020) as a registered method over the convex task.

The model is a fitted :class:`unlearn.certified.CertifiedLogReg`; the method
removes the forget rows with one Newton step (or, with ``one_by_one``, one
step per row) and records the certificate: the accumulated residual bound and
the epsilon it certifies at the model's delta. If the bound would exceed the
model's budget, the model retrains on the retained rows instead
(``retrained`` in the record).
"""

from __future__ import annotations

from dataclasses import dataclass

from .base import Method, MethodConfig, register


@dataclass(frozen=True)
class CertifiedNewtonConfig(MethodConfig):
    one_by_one: bool = False  # one Newton step per removed row (bounds add up)
    refresh: bool = False  # recompute the Hessian cache afterwards (timed apart)


@register
class CertifiedNewton(Method):
    name = "certified_newton"
    summary = "Certified removal: one Newton step with an (epsilon, delta) certificate."
    request_kinds = ("samples", "class", "group")
    requires = ("convex",)
    Config = CertifiedNewtonConfig

    def unlearn(self, model, ctx):
        report = model.remove(
            ctx.split.forget_idx, one_by_one=self.config.one_by_one, refresh=self.config.refresh
        )
        self._extra.update(report.to_dict())
        return model, report.newton_steps

    def touched(self) -> str:
        return "all weights (Newton step)"
