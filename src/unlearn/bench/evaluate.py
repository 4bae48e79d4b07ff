"""Score one classifier against the forget/retain/test data and, if given, the oracle."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..data.core import ArrayData, Split
from ..metrics import accuracy, avg_gap, js_divergence, loss_threshold_auc, mia_efficacy
from ..requests import ClassRequest, ForgetRequest
from ..tasks.classifier import ClassifierTask


class Evaluator:
    """Caches the data views a request needs and scores models on them.

    For class requests, test accuracy is measured on the remaining classes'
    test samples (``test_acc``) and separately on the forgotten classes'
    (``test_forget_acc``); the loss attack then compares forget samples with
    unseen samples of the same classes.
    """

    def __init__(
        self,
        task: ClassifierTask,
        split: Split,
        test: ArrayData,
        request: ForgetRequest,
        seed: int = 0,
    ):
        self.task, self.split, self.seed = task, split, seed
        self.forget, self.retain = split.forget, split.retain
        self.test_all = test
        if isinstance(request, ClassRequest):
            gone = np.isin(test.targets(), request.classes)
            self.test = test.subset(np.flatnonzero(~gone), "test-remaining")
            self.test_forget = test.subset(np.flatnonzero(gone), "test-forgotten")
        else:
            self.test, self.test_forget = test, None

    def predictions(self, model: nn.Module) -> dict[str, torch.Tensor]:
        out = {
            "forget": self.task.logits(model, self.forget),
            "retain": self.task.logits(model, self.retain),
            "test": self.task.logits(model, self.test),
        }
        if self.test_forget is not None and len(self.test_forget):
            out["test_forget"] = self.task.logits(model, self.test_forget)
        return out

    def score(
        self,
        model: nn.Module,
        oracle_preds: dict[str, torch.Tensor] | None = None,
        oracle_metrics: dict[str, float] | None = None,
    ) -> tuple[dict, dict]:
        """Return (metrics, predictions) for ``model``."""
        logits = self.predictions(model)
        probs = {k: torch.softmax(v, 1).numpy() for k, v in logits.items()}
        y = {
            "forget": self.forget.targets(),
            "retain": self.retain.targets(),
            "test": self.test.targets(),
        }
        m: dict[str, float] = {
            "forget_acc": accuracy(probs["forget"], y["forget"]),
            "retain_acc": accuracy(probs["retain"], y["retain"]),
            "test_acc": accuracy(probs["test"], y["test"]),
        }
        m["unlearn_acc"] = 100.0 - m["forget_acc"]
        m["mia_efficacy"] = mia_efficacy(
            probs["retain"],
            y["retain"],
            probs["test"],
            y["test"],
            probs["forget"],
            y["forget"],
            seed=self.seed,
        )
        f_loss = torch.nn.functional.cross_entropy(
            logits["forget"], self.forget.y, reduction="none"
        )
        if "test_forget" in logits:
            ref, ref_y = logits["test_forget"], self.test_forget.y
            m["test_forget_acc"] = accuracy(probs["test_forget"], self.test_forget.targets())
        else:
            ref, ref_y = logits["test"], self.test.y
        ref_loss = torch.nn.functional.cross_entropy(ref, ref_y, reduction="none")
        m["loss_auc"] = loss_threshold_auc(f_loss.numpy(), ref_loss.numpy())
        if oracle_preds is not None:
            m["js_to_oracle"] = js_divergence(
                probs["forget"], torch.softmax(oracle_preds["forget"], 1).numpy()
            )
        if oracle_metrics is not None:
            m["avg_gap"] = avg_gap(m, oracle_metrics)
        return m, logits
