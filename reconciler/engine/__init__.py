"""The engine: one reconcile pass, and what it needs to run it.

:mod:`~reconciler.engine.engine` (the pass: observe, check, plan, apply), its group bindings
(:mod:`~reconciler.engine.binding`), the status views (:mod:`~reconciler.engine.views`), the shared
health-check threads (:mod:`~reconciler.engine.health`), the executor that carries out a plan
(:mod:`~reconciler.engine.executor`), the image pipeline (:mod:`~reconciler.engine.pipeline`,
:mod:`~reconciler.engine.imagebuild`), the stack-file loader (:mod:`~reconciler.engine.loader`),
and the one owner of local side effects: the state directory and its lock
(:mod:`~reconciler.engine.state`, :mod:`~reconciler.engine.lock`).

Layer: imports the kit and the core; imported by the views, the conformance suite, the daemon
and the CLI. Never imported by a provider or a plugin.
"""

from reconciler.engine.engine import Engine, PassResult, PlannedPass

__all__ = ["Engine", "PassResult", "PlannedPass"]
