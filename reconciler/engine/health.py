"""The threads that run roles' health checks that do I/O, shared by every engine of the process.

Called by :meth:`reconciler.engine.Engine.health`. A daemon's stacks share these threads, created
on first use, so a pass starts no thread of its own and threads do not grow with stacks.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from reconciler.core.model import Health, Instance
from reconciler.kit.role import AnyContext, AnyRole

HEALTH_THREADS = 32
_pool_lock = threading.Lock()
_pool_instance: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    global _pool_instance
    with _pool_lock:
        if _pool_instance is None:
            _pool_instance = ThreadPoolExecutor(max_workers=HEALTH_THREADS, thread_name_prefix="infra-health")
        return _pool_instance


def parallel_health(checks: list[tuple[AnyRole, AnyContext, Instance]]) -> dict[str, Health]:
    """Run each ``role.health(ctx, inst)`` on the shared health threads; verdicts by instance id.

    Up to ``HEALTH_THREADS`` tasks each take the next check until none is left (one task per
    check cost a thread hand-off per instance, which dominated a no-op plan). If checks raise,
    the exception of the first failing check in ``checks`` order is raised, as
    ``ThreadPoolExecutor.map`` would.
    """
    results: list[Health | None] = [None] * len(checks)
    errors: dict[int, BaseException] = {}
    todo = iter(range(len(checks)))
    take = threading.Lock()

    def work() -> None:
        while True:
            with take:
                i = next(todo, None)
            if i is None:
                return
            role, ctx, inst = checks[i]
            try:
                results[i] = role.health(ctx, inst)
            except BaseException as exc:  # re-raised in the caller's thread below
                errors[i] = exc

    pool = _pool()
    for future in [pool.submit(work) for _ in range(min(HEALTH_THREADS, len(checks)))]:
        future.result()
    if errors:
        raise errors[min(errors)]
    verdicts: dict[str, Health] = {}
    for (_, _, inst), verdict in zip(checks, results, strict=True):
        assert verdict is not None
        verdicts[inst.id] = verdict
    return verdicts
