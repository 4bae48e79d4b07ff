"""The method contract: a registered class, a frozen config, one entry point.

A method receives a copy of the trained model and an :class:`UnlearnContext`
(the task, the forget/retain split, the original model, the request, the
seed and the training recipe) and changes the copy in place. :meth:`Method.run`
wraps that with validation, seeding, timing and memory measurement and
returns the unlearned model with its :class:`RunRecord`.
"""

from __future__ import annotations

import copy
import dataclasses
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import psutil
import torch
from torch import nn

from ..data.core import ArrayData, Split, iterate_batches
from ..errors import UnlearnError, UnsupportedRequestError
from ..requests import ForgetRequest
from ..tasks.classifier import ClassifierTask, TrainRecipe, make_optimizer

__all__ = [
    "Method",
    "MethodConfig",
    "RunRecord",
    "UnlearnContext",
    "register",
    "get_method",
    "available_methods",
    "PeakMemory",
    "forever",
]


@dataclass(frozen=True)
class MethodConfig:
    """Base of every method's hyperparameters."""


@dataclass
class RunRecord:
    """What one unlearning run cost and did."""

    method: str
    seconds: float
    peak_mem_mb: float
    steps: int
    touched: str = "all parameters"
    config: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class UnlearnContext:
    """Everything a method may use besides the model it changes."""

    task: ClassifierTask
    split: Split
    request: ForgetRequest
    original: nn.Module
    seed: int
    recipe: TrainRecipe = field(default_factory=TrainRecipe)
    model_factory: Callable[[int], nn.Module] | None = None

    @property
    def forget(self) -> ArrayData:
        return self.split.forget

    @property
    def retain(self) -> ArrayData:
        return self.split.retain

    def generator(self, offset: int = 0) -> torch.Generator:
        return torch.Generator().manual_seed(int(self.seed) * 1_000_003 + offset)


class PeakMemory:
    """Peak resident memory of this process (MB) while the block runs, sampled every 5 ms.

    On CUDA the peak allocated device memory is reported in ``cuda_mb`` too.
    """

    def __init__(self, device: torch.device | str = "cpu", interval: float = 0.005):
        self.device = torch.device(device)
        self.interval = interval
        self.peak_mb = 0.0
        self.cuda_mb: float | None = None
        self._stop = threading.Event()
        self._proc = psutil.Process()

    def _sample(self) -> None:
        rss = self._proc.memory_info().rss / 2**20
        if rss > self.peak_mb:
            self.peak_mb = rss

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        self._sample()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        if self.device.type == "cuda":
            self.cuda_mb = torch.cuda.max_memory_allocated(self.device) / 2**20


def forever(data: ArrayData, batch_size: int, gen: torch.Generator, labels=None) -> Iterator:
    """Endless shuffled mini-batches of ``data`` (reshuffled each pass)."""
    while True:
        yield from iterate_batches(data, batch_size, gen, labels=labels)


_REGISTRY: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: make a method available by its ``name``."""
    if not getattr(cls, "name", None):
        raise TypeError(f"{cls.__name__} has no name")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise TypeError(f"method name {cls.name!r} is registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def get_method(name: str, config: dict | MethodConfig | None = None, **overrides) -> Method:
    """Instantiate the registered method ``name`` with its config (defaults + overrides)."""
    from . import _load_all

    _load_all()
    if name not in _REGISTRY:
        raise UnlearnError(f"unknown method {name!r} (available: {', '.join(sorted(_REGISTRY))})")
    return _REGISTRY[name](config, **overrides)


def available_methods() -> dict[str, type[Method]]:
    from . import _load_all

    _load_all()
    return dict(sorted(_REGISTRY.items()))


class Method:
    """Base class of unlearning methods."""

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    request_kinds: ClassVar[tuple[str, ...]] = ("samples", "class")
    families: ClassVar[tuple[str, ...]] = ("classifier",)
    Config: ClassVar[type[MethodConfig]] = MethodConfig

    def __init__(self, config: dict | MethodConfig | None = None, **overrides: Any):
        if isinstance(config, MethodConfig):
            if not isinstance(config, self.Config):
                raise UnlearnError(
                    f"{self.name} takes a {self.Config.__name__}, got {type(config).__name__}"
                )
            base = config
        else:
            base = self.Config()
            overrides = {**(config or {}), **overrides}
        known = {f.name for f in dataclasses.fields(self.Config)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise UnlearnError(
                f"unknown option(s) {unknown} for method {self.name} (known: {sorted(known)})"
            )
        try:
            self.config = dataclasses.replace(base, **overrides)
        except (TypeError, ValueError) as exc:
            raise UnlearnError(f"bad option for method {self.name}: {exc}") from None

    # -- contract -------------------------------------------------------------
    def check(self, request: ForgetRequest, task: ClassifierTask) -> None:
        if request.kind not in self.request_kinds:
            raise UnsupportedRequestError(
                f"method {self.name} does not support {request.kind} requests "
                f"(it supports: {', '.join(self.request_kinds)})"
            )
        if task.family not in self.families:
            raise UnsupportedRequestError(
                f"method {self.name} does not support {task.family} models "
                f"(it supports: {', '.join(self.families)})"
            )

    def unlearn(self, model: nn.Module, ctx: UnlearnContext) -> int | tuple[nn.Module, int]:
        """Change ``model`` in place (or return a new one with the step count)."""
        raise NotImplementedError

    def touched(self) -> str:
        return "all parameters"

    def run(self, model: nn.Module, ctx: UnlearnContext) -> tuple[nn.Module, RunRecord]:
        """Unlearn a copy of ``model``; the model passed in is never modified."""
        self.check(ctx.request, ctx.task)
        if len(ctx.split.forget_idx) == 0 and ctx.request.kind != "feature":
            raise UnlearnError("the forget set is empty")
        work = copy.deepcopy(model).to(ctx.task.device)
        self._extra: dict = {}
        with torch.random.fork_rng(devices=[]), PeakMemory(ctx.task.device) as mem:
            torch.manual_seed(int(ctx.seed))
            t0 = time.perf_counter()
            out = self.unlearn(work, ctx)
            seconds = time.perf_counter() - t0
        if isinstance(out, tuple):
            work, steps = out
        else:
            steps = out
        work.eval()
        return work, self._record(seconds, mem, steps)

    def _record(self, seconds: float, mem: PeakMemory, steps: int) -> RunRecord:
        """The run record of this method's run (its config and ``self._extra`` included)."""
        return RunRecord(
            method=self.name,
            seconds=seconds,
            peak_mem_mb=mem.cuda_mb if mem.cuda_mb is not None else mem.peak_mb,
            steps=int(steps),
            touched=self.touched(),
            config=dataclasses.asdict(self.config),
            extra=self._extra,
        )

    # -- helpers shared by methods -----------------------------------------------
    @staticmethod
    def optimizer(model: nn.Module, cfg: Any, params=None) -> torch.optim.Optimizer:
        return make_optimizer(
            params if params is not None else model.parameters(),
            getattr(cfg, "optimizer", "sgd"),
            cfg.lr,
            getattr(cfg, "weight_decay", 0.0),
            getattr(cfg, "momentum", 0.9),
        )

    @staticmethod
    def steps_for(data: ArrayData, batch_size: int, epochs: float) -> int:
        return max(1, int(round(epochs * -(-len(data) // batch_size))))

    @classmethod
    def describe(cls) -> str:
        return cls.summary
