"""One executor for independent trainings: the local process pool (default) or Ray.

A benchmark's seeds, the reference models of its attacks, and the held-out runs
of ``unlearn tune`` are independent trainings. They run through :class:`Executor`,
which maps a module-level function over a list of picklable items and returns the
results in item order, whatever the engine and the number of workers:

- ``local`` (the default): ``workers`` spawned processes of this machine
  (``concurrent.futures``); with one worker, or one item, in this process. Without
  ``workers``: ``UNLEARN_WORKERS`` if set, else one per core;
- ``ray``: ``workers`` Ray tasks of one CPU each, on the Ray instance this
  process is connected to (a local one is started when there is none; set
  ``RAY_ADDRESS`` to use a cluster). Ray is an optional dependency
  (``pip install 'unlearn-toolkit[ray]'``).

Every training process, this one included while it runs an item, is limited to
``threads`` BLAS / OpenMP threads (default 1): on small models one thread per
process and one process per core is the fastest use of a machine, and the thread
count is part of what a result depends on (a model trained with 2 threads differs
in its last bits from one trained with 1, and training is chaotic enough that the
difference grows). Results therefore depend on ``threads`` but not on the engine
or on ``workers``: the same items with the same thread count give the same numbers.

Inside a worker, :func:`current` is the in-process executor, so a job that itself
maps work (a seed training its attack's models) does not start a pool per worker.
A job that fails fails the map at once (the queued jobs are cancelled); an
:class:`~unlearn.errors.UnlearnError` raised in a worker reaches the caller as one.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass
from typing import Any

import torch

from .errors import UnlearnError

__all__ = [
    "ENGINES",
    "Execution",
    "Executor",
    "current",
    "using",
    "limit_threads",
    "cpu_count",
    "in_worker",
]

ENGINES = ("local", "ray")
MAX_WORKERS = 512
MAX_THREADS = 256


def cpu_count() -> int:
    """The cores this process may use (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return max(1, os.cpu_count() or 1)


def default_workers() -> int:
    """Worker processes when none are asked for: ``UNLEARN_WORKERS`` if set, else one per
    core."""
    text = os.environ.get("UNLEARN_WORKERS")
    if not text:
        return cpu_count()
    try:
        value = int(text)
    except ValueError:
        raise UnlearnError(f"UNLEARN_WORKERS must be a positive integer, got {text!r}") from None
    if not 1 <= value <= MAX_WORKERS:
        raise UnlearnError(f"UNLEARN_WORKERS must be in [1, {MAX_WORKERS}], got {value}")
    return value


@dataclass(frozen=True)
class Execution:
    """Where independent trainings run: ``engine``, ``workers`` processes (None: one per
    core, at most one per item) and ``threads`` BLAS threads in each."""

    engine: str = "local"
    workers: int | None = None
    threads: int = 1

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise UnlearnError(f"engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        for name, value, top in (
            ("workers", self.workers, MAX_WORKERS),
            ("threads", self.threads, MAX_THREADS),
        ):
            if value is None and name == "workers":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= top:
                raise UnlearnError(f"{name} must be an integer in [1, {top}], got {value!r}")

    def check(self) -> Execution:
        """Fail early (before any training) when the engine cannot run here."""
        if self.engine == "ray":
            _ray_remote()
        return self

    def workers_for(self, n_items: int) -> int:
        return max(1, min(self.workers or default_workers(), n_items))

    def to_dict(self) -> dict:
        return asdict(self)


@contextlib.contextmanager
def limit_threads(threads: int) -> Iterator[None]:
    """Limit torch's intra-op threads and every BLAS / OpenMP pool to ``threads``; restore
    the previous limits on exit."""
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with threadpool_limits(limits=threads):
            yield
    finally:
        torch.set_num_threads(before)


_IN_WORKER = "UNLEARN_EXECUTOR_WORKER"


def in_worker() -> bool:
    """True in a process the executor started (its jobs run their own work in-process)."""
    return bool(os.environ.get(_IN_WORKER))


def _run_item(fn: Callable[[Any], Any], threads: int, item: Any) -> Any:
    """One item in a worker process (or Ray task): thread limit set, nested work in-process."""
    os.environ[_IN_WORKER] = "1"
    global _CURRENT
    _CURRENT = Execution("local", 1, threads)
    with limit_threads(threads):
        return fn(item)


def _ray_remote():
    try:
        import ray
    except ImportError:
        raise UnlearnError(
            "engine 'ray' needs Ray: pip install 'unlearn-toolkit[ray]' (or pip install ray)"
        ) from None
    return ray


class Executor:
    """Map a module-level function over picklable items under an :class:`Execution`."""

    def __init__(self, execution: Execution | None = None):
        self.execution = execution or current()

    def map(
        self,
        fn: Callable[[Any], Any],
        items: Sequence[Any],
        on_done: Callable[[int, Any], None] | None = None,
    ) -> list:
        """``[fn(item) for item in items]``, run by the engine; ``on_done(i, result)`` is
        called as each item finishes (in completion order)."""
        items = list(items)
        ex = self.execution
        workers = ex.workers_for(len(items))
        if ex.engine == "ray":
            return self._ray(fn, items, workers, on_done)
        if workers <= 1:
            out = []
            with limit_threads(ex.threads):
                for i, item in enumerate(items):
                    out.append(fn(item))
                    if on_done:
                        on_done(i, out[-1])
            return out
        results: list = [None] * len(items)
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"))
        try:
            futures = {pool.submit(_run_item, fn, ex.threads, it): i for i, it in enumerate(items)}
            for fut in as_completed(futures):
                i = futures[fut]
                try:
                    results[i] = fut.result()
                except BrokenProcessPool as exc:
                    raise UnlearnError(
                        f"a worker process died (killed, or out of memory?) on job {i}: {exc}"
                    ) from None
                if on_done:
                    on_done(i, results[i])
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)  # a failure does not wait for the rest
            raise
        pool.shutdown(wait=True)
        return results

    def _ray(self, fn, items, workers, on_done) -> list:
        ray = _ray_remote()
        if not ray.is_initialized():
            address = os.environ.get("RAY_ADDRESS") or None
            ray.init(
                address=address or "local",  # never attach to a cluster nobody asked for
                num_cpus=None if address else workers,
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
            )
        threads = self.execution.threads
        # threads are limited inside the task (limit_threads), as in a pool worker
        task = ray.remote(num_cpus=1, max_retries=0)(_run_item)
        results: list = [None] * len(items)
        index: dict = {}
        queue = list(enumerate(items))
        pending: list = []
        try:
            while queue or pending:
                while queue and len(pending) < workers:  # at most `workers` tasks at a time
                    i, it = queue.pop(0)
                    ref = task.remote(fn, threads, it)
                    index[ref] = i
                    pending.append(ref)
                done, pending = ray.wait(pending, num_returns=1)
                for ref in done:
                    i = index[ref]
                    try:
                        results[i] = ray.get(ref)
                    except ray.exceptions.RayTaskError as exc:
                        cause = exc.as_instanceof_cause()
                        if isinstance(cause, UnlearnError):
                            msg = str(cause.args[0]) if cause.args else str(cause)
                            raise UnlearnError(msg) from None
                        raise
                    if on_done:
                        on_done(i, results[i])
        except BaseException:
            for ref in pending:
                ray.cancel(ref, force=True)
            raise
        return results


_CURRENT: Execution | None = None


def current() -> Execution:
    """The execution set by :func:`using` (in a worker: in-process), else the default:
    the local pool, one process per core, one thread each."""
    if _CURRENT is not None:
        return _CURRENT
    if os.environ.get(_IN_WORKER):
        return Execution("local", 1, torch.get_num_threads())
    return Execution()


@contextlib.contextmanager
def using(execution: Execution) -> Iterator[Execution]:
    """Make ``execution`` the :func:`current` one, and limit this process's threads to its
    ``threads``, for the block."""
    global _CURRENT
    before = _CURRENT
    _CURRENT = execution
    try:
        with limit_threads(execution.threads):
            yield execution
    finally:
        _CURRENT = before
