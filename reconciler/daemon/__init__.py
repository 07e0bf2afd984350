"""``infra daemon``: reconcile passes in a loop, for ever, for one or more stacks.

Registered as ``infra daemon`` by :mod:`reconciler.cli`, which imports :data:`daemon_command`
at start-up — so this package's top level imports only ``click`` (``infra --help`` must stay
fast); the engine, prometheus-client and etcd3gw are imported when the daemon starts.

The package, by job: :mod:`~reconciler.daemon.log` (structured events),
:mod:`~reconciler.daemon.worker` (one stack's turns), :mod:`~reconciler.daemon.process` (the
scheduler, signals, HTTP), :mod:`~reconciler.daemon.command` (the click command).

Each stack is a :class:`~reconciler.daemon.worker.StackLoop` whose turns run
:meth:`reconciler.engine.engine.Engine.reconcile` — the very pass ``infra apply`` runs, with no second
code path — level-triggered, controller-runtime style, scheduled by one scheduler onto a few
shared pass threads (:mod:`reconciler.daemon.process`), so threads do not grow with stacks:

* every ``--interval`` seconds, and at once when the stack file changes on disk (its
  ``stat`` is looked at every 0.5 s, its content hashed only when that changes). A version that
  fails to load — or that renames the stack — is logged and the last good version keeps
  being reconciled;
* ``PassResult.requeue_after`` is honoured (0 after a pass that changed something: come back
  at once to confirm); a pass that ends in an error backs off exponentially per stack, 1 s,
  2 s, 4 s … up to ``--backoff-max``, and the next healthy pass resets it. A stack whose quorum
  is lost is such an error: reported on every pass, never "fixed" by deleting anything;
* only while this daemon *leads* the stack (:mod:`reconciler.daemon.leader`: the local file lock held
  for the daemon's life, or an etcd lease with ``--lock etcd://HOST:PORT``). A follower
  retries the lock every ``min(interval, 2 s)``. Losing leadership mid-pass sets the
  executor's stop event: no new change starts.

SIGTERM or SIGINT sets every executor's stop event — changes in flight finish, none starts —
then each worker releases its lock and the process exits 0. If changes are still in flight
after ``--grace`` seconds it exits 1 (a second signal exits 1 at once).

Logs go to stderr, one event per line: readable text, or JSON objects with
``--log-format json`` (``ts``, ``level``, ``event``, ``msg`` and the event's fields). Every
change is logged with its reason, every pass with its duration and result. Metrics and
``/healthz`` are described in :mod:`reconciler.daemon.metrics`.
"""

from reconciler.daemon.command import daemon_command

__all__ = ["daemon_command"]
