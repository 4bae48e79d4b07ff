"""The ledger's handler for identity generators trained by a ``kind: generator`` scenario
(``unlearn train`` writes such a checkpoint).

The scenario names the procedural identities, the generator, its recipe (what a retrain
runs) and the recognisers: the judging one (seed ``recogniser.seed``) and the methods'
identity loss (the next seed), both trained on every image and cached by content hash.
The training set is the scenario's images in their order, so sample ids are image
positions; a request names identities (``group`` with ``by: identity``), the unit GUIDE
and SUGAR forget, and takes every view of them. Sample and class selectors are refused:
a generator forgets whole identities.

What a certificate reports for a generator (the judge's unit-norm embeddings against
each identity's mean embedding over its real images, ``eval.views`` seeded views):

- ``test_acc``: the share (%) of samples of up to ``eval.retained`` identities still
  retained, at their latents, that the judge names as their own identity among all of
  the scenario's identities; ``retained_id_sim`` their mean cosine similarity;
- ``forget_acc`` / ``forget_id_sim``: the same on the request's identities at the
  model's latents (what the generator draws for them);
- ``forget_above_floor``: ``forget_id_sim`` minus the floor's mean plus one standard
  deviation (the retained identities' samples against the forgotten ones' images): at
  most 0, they are drawn no more like themselves than unrelated identities are;
- ``forget_inverted_acc``: the judge's rate on samples at the latent found by inverting
  their real images (``eval.invert_steps``): what someone holding a photograph gets
  back; ``removed_inverted_acc`` the same over every identity removed so far.

A retrained generator never saw the removed identities; its latents for them are the
initial ones, so only the inverted figures say anything about it.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from ..errors import LedgerError, UnlearnError

__all__ = ["GeneratorHandler", "GenSetup", "train_generator_checkpoint"]


class GenSetup:
    """A generator scenario made concrete: identities, task (the judge) and identity loss."""

    def __init__(self, path: str | Path):
        from ..bench.generator import cached_recogniser, parse_generator
        from ..bench.scenario import read_scenario_file
        from ..data.identities import make_identities
        from ..tasks.generator import GeneratorTask

        raw, path = read_scenario_file(path)
        self.scenario = s = parse_generator(raw, str(path))
        self.data = make_identities(**asdict(s.data))
        judge = cached_recogniser(self.data, s, s.recogniser.seed)
        self.id_loss = cached_recogniser(self.data, s, s.recogniser.seed + 1)
        self.task = GeneratorTask(judge, shift=s.data.shift, device=s.device)
        self.cent = self.task.centroids(self.data)
        gen = torch.Generator().manual_seed(12345)
        self.views = self.task.views(s.eval.views, gen)
        h = hashlib.sha256()
        for t in (self.data.data.x, self.data.data.y, self.data.view):
            h.update(np.ascontiguousarray(t.numpy()).tobytes())
        self.data_sha256 = h.hexdigest()

    def fresh(self, seed: int):
        from ..tasks.generator import IdentityGenerator

        s = self.scenario
        return IdentityGenerator(
            self.data.identities, size=s.data.size, **asdict(s.model), seed=seed
        )

    def fit(self, keep_identities: np.ndarray, seed: int):
        """The scenario's generator trained on the identities ``keep_identities`` (cached
        as the benchmark caches it, under the same key)."""
        from ..bench.generator import cached_generator

        start = time.perf_counter()
        with torch.random.fork_rng(devices=[]):
            model, trained = cached_generator(
                self.task, self.scenario, self.data, np.asarray(keep_identities), seed
            )
        return model, {"seconds": time.perf_counter() - start, "trained_seconds": trained}

    def identities_of(self, ids) -> list[int]:
        return sorted({int(i) for i in self.data.data.y[torch.as_tensor(ids)].tolist()})

    def recognised(self, model, latents: torch.Tensor, identities: list[int]):
        """(rate %, mean similarity, mean embedding per identity) of the model's samples
        at ``latents`` (one per identity), in the fixed views."""
        k, nv = len(latents), len(self.views)
        w = latents.repeat_interleave(nv, 0)
        v = self.views.repeat(k, 1)
        e = self.task.embed(self.task.generate(model, w, v)).view(k, nv, -1)
        own = self.cent[torch.as_tensor(identities)]
        named = (e @ self.cent.T).argmax(-1)
        hit = named == torch.as_tensor(identities)[:, None]
        sim = (e * own[:, None, :]).sum(-1)
        return float(hit.float().mean()) * 100, float(sim.mean()), e.mean(1)

    def inverted(self, model, identities: list[int]) -> torch.Tensor:
        x, y = self.data.data.x, self.data.data.y
        steps = self.scenario.eval.invert_steps
        return torch.stack(
            [self.task.invert(model, x[y == i], steps=steps, seed=i) for i in identities]
        )


def save_generator(model, path: str | Path) -> None:
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(path), metadata={"config": json.dumps(model.config)})


def load_generator(setup: GenSetup, path: str | Path):
    """The generator saved at ``path``; refuses a file of another generator."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    model = setup.fresh(0)
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise LedgerError(f"{path} is not a generator checkpoint: {exc}") from None
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in tensors.items()}
    if got != want:
        diff = sorted(set(want.items()) ^ set(got.items()))[:2]
        raise LedgerError(
            f"{path} is not a checkpoint of this scenario's generator (differs in {diff})"
        )
    model.load_state_dict(tensors)
    return model.to(setup.task.device).eval()


def train_generator_checkpoint(path: str | Path, seed: int, out: str | Path) -> float:
    """``unlearn train`` for a generator scenario: the generator of every identity, trained
    with ``seed``, written to ``out``; returns the judge's rate (%) on retained identities."""
    setup = GenSetup(path)
    model, _ = setup.fit(np.arange(setup.data.identities), seed)
    save_generator(model, out)
    return GeneratorHandler.utility(setup, model, set())[0]


class GeneratorHandler:
    """An identity generator trained by a generator scenario."""

    family = "generator"
    #: what ``method: auto`` runs, per selector kind
    auto_methods = {"group": "guide"}

    def __init__(self, registration: dict):
        from .handlers import check_data_digest, registered_scenario

        path = registered_scenario(registration)
        self.setup = GenSetup(path)
        self.data_sha256 = check_data_digest(registration, self.setup.data_sha256, path)
        self.train = self.setup.data
        self.task = self.setup.task

    def load(self, path: str | Path):
        return load_generator(self.setup, path)

    def save(self, model, path: str | Path) -> None:
        save_generator(model, path)

    # -- requests ----------------------------------------------------------------------
    def check_selector(self, selector: dict) -> None:
        if "group" not in selector:
            raise LedgerError(
                f"a generator forgets whole identities: name them as group identity:ID, "
                f"not {next(iter(selector))}"
            )
        g = selector["group"]
        if g["by"] != "identity":
            raise LedgerError(
                f"selector group by {g['by']!r}: a generator's images are grouped by identity only"
            )
        k = self.train.identities
        bad = [i for i in g["ids"] if isinstance(i, bool) or not isinstance(i, int)]
        bad = bad or [i for i in g["ids"] if not 0 <= i < k]
        if bad:
            raise LedgerError(f"identity {bad[0]!r} is not one of the generator's {k} (0..{k - 1})")

    def resolve(self, selector: dict, removed: set[int]) -> list[int]:
        self.check_selector(selector)
        y = self.train.data.y.numpy()
        wanted = sorted(set(selector["group"]["ids"]))
        gone = (
            sorted(set(self.setup.identities_of(sorted(removed))) & set(wanted)) if removed else []
        )
        if gone:
            raise LedgerError(f"identity {gone[0]} was already removed by an earlier request")
        return np.flatnonzero(np.isin(y, wanted)).tolist()

    def unlearn(
        self, model, selector: dict, ids: list[int], removed: set[int], method, config, seed: int
    ):
        """Forget the request's identities in ``model`` with a generator method (GUIDE,
        SUGAR), the identity loss the scenario's second recogniser."""
        from ..data.core import split_request
        from ..methods.base import UnlearnContext, get_method
        from ..requests import GroupRequest

        keep = np.array(sorted(set(range(len(self.train))) - removed), dtype=np.int64)
        data = self.train.subset(keep)
        request = GroupRequest(groups=tuple(sorted(set(selector["group"]["ids"]))), by="identity")
        split = split_request(data, request)
        if sorted(keep[split.forget_idx].tolist()) != sorted(ids):
            raise LedgerError(f"selector {selector}: resolved to different images on reload")
        try:
            m = get_method(method, config, family="generator")
        except UnlearnError as exc:
            raise LedgerError(f"method {method!r}: {exc}") from None
        ctx = UnlearnContext(
            task=self.task, split=split, request=request, original=model, seed=seed,
            recipe=self.setup.scenario.recipe, proxies={"id_loss": self.setup.id_loss},
        )  # fmt: skip
        return m.run(model, ctx)

    def retrain(self, removed: set[int], seed: int):
        gone = set(self.setup.identities_of(sorted(removed))) if removed else set()
        keep = np.array(sorted(set(range(self.train.identities)) - gone), dtype=np.int64)
        return self.setup.fit(keep, seed)

    # -- verification --------------------------------------------------------------------
    @staticmethod
    def utility(setup: GenSetup, model, gone: set[int]):
        """(rate %, similarity, mean embeddings) of up to ``eval.retained``
        retained identities, the first in a seeded order."""
        order = np.random.default_rng(0).permutation(setup.data.identities)
        kept = [int(i) for i in order if int(i) not in gone][: setup.scenario.eval.retained]
        return setup.recognised(model, model.latents[torch.as_tensor(kept)], kept)

    def metrics(self, model, ids: list[int], removed: set[int]) -> dict:
        s = self.setup
        gone = set(s.identities_of(sorted(removed))) if removed else set()
        who = s.identities_of(ids) if ids else []
        rate, sim, emb = self.utility(s, model, gone)
        out: dict = {"test_acc": rate, "retained_id_sim": sim}
        # each identity inverted once (seeded by its id), for both figures
        every = sorted(gone | set(who))
        inverted = dict(zip(every, s.inverted(model, every), strict=True)) if every else {}

        def inverted_acc(idents: list[int]) -> float:
            return s.recognised(model, torch.stack([inverted[i] for i in idents]), idents)[0]

        if gone:
            out["removed_inverted_acc"] = inverted_acc(sorted(gone))
            out["removed_total"] = len(removed)
            out["removed_identities"] = len(gone)
        if who:
            f_rate, f_sim, _ = s.recognised(model, model.latents[torch.as_tensor(who)], who)
            out["forget_acc"], out["forget_id_sim"] = f_rate, f_sim
            cross = (torch.nn.functional.normalize(emb, dim=1) @ s.cent[who].T).flatten()
            floor = float(cross.mean()) + float(cross.std())
            out["forget_above_floor"] = f_sim - floor
            out["forget_inverted_acc"] = inverted_acc(who)
        return out
