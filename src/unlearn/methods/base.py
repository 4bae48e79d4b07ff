"""The method contract, one for every model family: a registered class, a frozen config,
the capabilities it requires of a task, one entry point.

A method receives a copy of the trained model and an :class:`UnlearnContext`
(the task, the forget/retain split, the original model, the request, the
seed, the oracle's recipe and, where a benchmark supplies them, a probe and
alternative targets) and changes the copy. :meth:`Method.run` wraps that with
validation, seeding, timing and memory measurement and returns the unlearned
model with its :class:`RunRecord`. A method never asks which family it runs
on: it lists what it ``requires`` of a task (see :mod:`unlearn.tasks.base`)
and is refused, with a message naming what is missing, by a task that lacks it.
"""

from __future__ import annotations

import copy
import ctypes
import dataclasses
import gc
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import psutil
import torch
from torch import nn

from ..data.core import Split
from ..errors import UnlearnError, UnsupportedRequestError
from ..requests import ForgetRequest
from ..tasks.base import Task, available_tasks
from ..training import epochs_to_steps, index_stream, make_optimizer
from ..validate import check_fields

__all__ = [
    "Method",
    "MethodConfig",
    "RunRecord",
    "UnlearnContext",
    "register",
    "register_alias",
    "get_method",
    "available_methods",
    "method_aliases",
    "PeakMemory",
    "forever",
]


@dataclass(frozen=True)
class MethodConfig:
    """Base of every method's hyperparameters; every field is type-checked on creation
    (subclasses that define ``__post_init__`` call ``super().__post_init__()`` first)."""

    def __post_init__(self) -> None:
        check_fields(self, type(self).__name__)


@dataclass
class RunRecord:
    """What one unlearning run cost and did.

    ``peak_mem_mb`` is the growth of the process's resident memory above
    ``baseline_mem_mb`` (its resident memory when the run started); on CUDA the
    allocator's peak growth above what was allocated at the start is ``peak_cuda_mb``.
    ``seconds`` includes copying the model to the task's device (a method works on a
    copy) and excludes the time of an early-stop probe. ``train_state_mb`` is the memory of the
    gradients and optimizer state of the trained parameters (None for a method
    that trains nothing).
    """

    method: str
    seconds: float
    peak_mem_mb: float
    steps: int
    touched: str = "all parameters"
    config: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    baseline_mem_mb: float | None = None
    train_state_mb: float | None = None
    peak_cuda_mb: float | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def cost(self) -> dict:
        """The cost fields as metrics (those that apply)."""
        out = {
            "seconds": self.seconds,
            "peak_mem_mb": self.peak_mem_mb,
            "baseline_mem_mb": self.baseline_mem_mb,
            "steps": float(self.steps),
        }
        if self.train_state_mb is not None:
            out["train_state_mb"] = self.train_state_mb
        if self.peak_cuda_mb is not None:
            out["peak_cuda_mb"] = self.peak_cuda_mb
        return out


@dataclass
class UnlearnContext:
    """Everything a method may use besides the model it changes.

    ``split`` divides the task's training data (an ``ArrayData``, a ``PairData``...)
    into forget and retain sets. ``recipe`` and ``model_factory`` serve retraining.
    ``probe(model)`` returns a forget-set score in percent for an early stop
    (``target_forget_acc``); its time is not counted as the method's. A benchmark
    must build it from items that are not scored. ``alternatives`` holds alternative
    targets aligned with the forget set (e.g. ``{"replace": PairData}`` for LUNE).
    ``proxies`` holds auxiliary models a method may compute with in place of the
    target (e.g. ``{"proxy": base_model}`` for R2F's gradient decoder); never changed.
    """

    task: Task
    split: Split
    request: ForgetRequest
    original: Any
    seed: int
    recipe: Any = None
    model_factory: Callable[[int], Any] | None = None
    probe: Callable[[Any], float] | None = None
    alternatives: dict[str, Any] = field(default_factory=dict)
    proxies: dict[str, Any] = field(default_factory=dict)

    @property
    def forget(self) -> Any:
        return self.split.forget

    @property
    def retain(self) -> Any:
        return self.split.retain

    def generator(self, offset: int = 0) -> torch.Generator:
        return torch.Generator().manual_seed(int(self.seed) * 1_000_003 + offset)

    def alternative(self, kind: str, **info) -> Any:
        """The forget set with alternative targets of ``kind``: given in ``alternatives``,
        else built by the task (seeded by this context)."""
        if kind in self.alternatives:
            alt = self.alternatives[kind]
            if len(alt) != len(self.forget):
                raise UnlearnError(
                    f"alternative targets {kind!r} hold {len(alt)} items for "
                    f"{len(self.forget)} forget items"
                )
            return alt
        if f"alternatives:{kind}" not in self.task.provides:
            raise UnsupportedRequestError(
                f"no {kind!r} alternative targets: give them in the context, or use a task "
                f"that builds them ({self.task.family} builds: "
                + ", ".join(p.split(":", 1)[1] for p in sorted(self.task.provides) if ":" in p)
                + ")"
            )
        return self.task.alternative_targets(self.forget, kind, self.generator(3), **info)


def _release_freed_memory() -> None:
    """Return freed heap pages to the OS so the baseline is what is really in use."""
    gc.collect()
    try:  # glibc only; elsewhere the baseline simply includes freed pages
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakMemory:
    """Memory of the block it wraps: the resident baseline at the start (MB), the peak
    growth above it (sampled every 5 ms) and, on CUDA, the allocator's peak growth above
    what was allocated when the block started."""

    def __init__(self, device: torch.device | str = "cpu", interval: float = 0.005):
        self.device = torch.device(device)
        self.interval = interval
        self.baseline_mb = 0.0
        self._max_rss = 0.0
        self.cuda_mb: float | None = None
        self._stop = threading.Event()
        self._proc = psutil.Process()

    @property
    def peak_mb(self) -> float:
        """Peak growth of resident memory above the baseline."""
        return max(0.0, self._max_rss - self.baseline_mb)

    def _sample(self) -> None:
        rss = self._proc.memory_info().rss / 2**20
        if rss > self._max_rss:
            self._max_rss = rss

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> PeakMemory:
        _release_freed_memory()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self._cuda_start = torch.cuda.memory_allocated(self.device)
        self.baseline_mb = self._proc.memory_info().rss / 2**20
        self._max_rss = self.baseline_mb
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        if self.device.type == "cuda":  # growth above what was allocated at the start
            peak = torch.cuda.max_memory_allocated(self.device) - self._cuda_start
            self.cuda_mb = max(0, peak) / 2**20


def forever(data, batch_size: int, gen: torch.Generator, labels=None) -> Iterator:
    """Endless shuffled ``(x, y)`` mini-batches of classifier data (``labels`` replaces y)."""
    y = data.y if labels is None else labels
    for idx in index_stream(len(data), batch_size, gen):
        yield data.x[idx], y[idx]


_REGISTRY: dict[str, type[Method]] = {}
_ALIASES: dict[str, str] = {}


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: make a method available by its ``name``."""
    if not getattr(cls, "name", None):
        raise TypeError(f"{cls.__name__} has no name")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise TypeError(f"method name {cls.name!r} is registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def register_alias(old: str, new: str) -> None:
    """Keep an old method name working (with a deprecation warning) for one release."""
    _ALIASES[old] = new


def _canonical(name: str) -> str:
    from . import _load_all

    _load_all()
    if name in _ALIASES:
        warnings.warn(
            f"method name {name!r} is deprecated; use {_ALIASES[name]!r}",
            DeprecationWarning,
            stacklevel=3,
        )
        return _ALIASES[name]
    return name


def get_method(
    name: str,
    config: dict | MethodConfig | None = None,
    *,
    family: str | None = None,
    **overrides,
) -> Method:
    """Instantiate the registered method ``name`` with its config (defaults, then the
    ``family``'s presets if given, then ``config`` and ``overrides``)."""
    if not isinstance(name, str):
        raise UnlearnError(f"a method name must be a string, got {name!r}")
    canonical = _canonical(name)
    if canonical not in _REGISTRY:
        known = sorted(_REGISTRY) + sorted(_ALIASES)
        raise UnlearnError(f"unknown method {name!r} (available: {', '.join(known)})")
    return _REGISTRY[canonical](config, family=family, **overrides)


def available_methods() -> dict[str, type[Method]]:
    from . import _load_all

    _load_all()
    return dict(sorted(_REGISTRY.items()))


def method_aliases() -> dict[str, str]:
    from . import _load_all

    _load_all()
    return dict(sorted(_ALIASES.items()))


class Method:
    """Base class of unlearning methods.

    ``requires`` lists the task capabilities the method needs; ``presets`` maps a
    task family to the defaults that replace the config's there (e.g. the LM
    papers' learning rates), applied unless the caller set the option.
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    request_kinds: ClassVar[tuple[str, ...]] = ("samples", "class", "group")
    requires: ClassVar[tuple[str, ...]] = ("classes",)
    presets: ClassVar[dict[str, dict]] = {}
    Config: ClassVar[type[MethodConfig]] = MethodConfig

    def __init__(
        self,
        config: dict | MethodConfig | None = None,
        *,
        family: str | None = None,
        **overrides: Any,
    ):
        if config is not None and not isinstance(config, dict | MethodConfig):
            raise UnlearnError(
                f"config of method {self.name} must be a mapping, got {type(config).__name__}"
            )
        self.family = family
        if isinstance(config, MethodConfig):
            if not isinstance(config, self.Config):
                raise UnlearnError(
                    f"{self.name} takes a {self.Config.__name__}, got {type(config).__name__}"
                )
            self._user: dict | None = None
            self.config = dataclasses.replace(config, **overrides) if overrides else config
            return
        self._user = {**(config or {}), **overrides}
        known = {f.name for f in dataclasses.fields(self.Config)}
        unknown = sorted(set(self._user) - known)
        if unknown:
            raise UnlearnError(
                f"unknown option(s) {unknown} for method {self.name} (known: {sorted(known)})"
            )
        self.config = self._build(family)

    def _build(self, family: str | None) -> MethodConfig:
        preset = dict(self.presets.get(family or "", {}))
        user = self._user or {}
        if "epochs" in user:  # a budget the caller gave in epochs is not overridden by steps
            preset.pop("steps", None)
        opts = {**preset, **user}
        self._config_family = family
        try:
            return self.Config(**opts)
        except UnlearnError as exc:
            raise UnlearnError(f"method {self.name}: {exc}") from None
        except (TypeError, ValueError) as exc:
            raise UnlearnError(f"bad option for method {self.name}: {exc}") from None

    @classmethod
    def families(cls) -> tuple[str, ...]:
        """The registered task families that provide what this method requires."""
        return tuple(t.family for t in available_tasks().values() if not t.missing(cls.requires))

    def requirements(self) -> tuple[str, ...]:
        """What this method, with its config, needs of a task."""
        return tuple(self.requires)

    # -- contract -------------------------------------------------------------
    def bind(self, task: Task) -> None:
        """Apply the task family's presets to a method built without a family (rebuilt for
        each family it runs on; a method built for one family keeps its config)."""
        if self.family is None and self._user is not None:
            if getattr(self, "_config_family", None) != task.family:
                self.config = self._build(task.family)

    def check(self, request: ForgetRequest, task: Task) -> None:
        if not isinstance(task, Task):
            raise UnlearnError(f"{self.name} needs a task, got {type(task).__name__}")
        task.require(self.requirements(), f"method {self.name}")
        if request.kind not in self.request_kinds:
            raise UnsupportedRequestError(
                f"method {self.name} does not support {request.kind} requests "
                f"(it supports: {', '.join(self.request_kinds)})"
            )

    def prepare(self, ctx: UnlearnContext) -> None:
        """Validate method-specific inputs before anything is copied or trained."""

    def unlearn(self, model: Any, ctx: UnlearnContext) -> int | tuple[Any, int]:
        """Change ``model`` in place (or return a new one with the step count)."""
        raise NotImplementedError

    def touched(self) -> str:
        return "all parameters"

    def run(self, model: Any, ctx: UnlearnContext) -> tuple[Any, RunRecord]:
        """Unlearn a copy of ``model``; the model passed in is never modified."""
        if not isinstance(ctx, UnlearnContext):
            raise UnlearnError(f"{self.name} needs an UnlearnContext, got {type(ctx).__name__}")
        self.bind(ctx.task)
        self.check(ctx.request, ctx.task)
        if len(ctx.split.forget_idx) == 0 and ctx.request.kind != "feature":
            raise UnlearnError("the forget set is empty")
        self.prepare(ctx)
        self._extra: dict = {}
        self._train_state_mb: float | None = None
        self._probe_seconds = 0.0
        with torch.random.fork_rng(devices=[]), PeakMemory(ctx.task.device) as mem:
            torch.manual_seed(int(ctx.seed))
            t0 = time.perf_counter()
            work = ctx.task.to_device(copy.deepcopy(model))
            out = self.unlearn(work, ctx)
            seconds = time.perf_counter() - t0 - self._probe_seconds
        if isinstance(out, tuple):
            work, steps = out
        else:
            steps = out
        work = ctx.task.finish(work)
        self._check_finite(work)
        return work, self._record(seconds, mem, steps)

    def _check_finite(self, model: Any) -> None:
        """A run that left NaN or infinite weights ends in an error, not a NaN model."""
        if isinstance(model, nn.Module):
            for name, p in model.named_parameters():
                if not bool(torch.isfinite(p.detach()).all()):
                    raise UnlearnError(
                        f"method {self.name} left non-finite weights in {name!r}: lower the "
                        "learning rate or the step size"
                    )

    def _record(self, seconds: float, mem: PeakMemory, steps: int) -> RunRecord:
        """The run record of this method's run (its config and ``self._extra`` included)."""
        return RunRecord(
            method=self.name,
            seconds=seconds,
            peak_mem_mb=mem.peak_mb,
            steps=int(steps),
            touched=self.touched(),
            config=dataclasses.asdict(self.config),
            extra=self._extra,
            baseline_mem_mb=mem.baseline_mb,
            train_state_mb=self._train_state_mb,
            peak_cuda_mb=mem.cuda_mb,
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
    def steps_for(data, batch_size: int, epochs: float) -> int:
        return epochs_to_steps(len(data), batch_size, epochs)

    @classmethod
    def describe(cls) -> str:
        return cls.summary
