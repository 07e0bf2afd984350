"""The core: infra's pure model, no I/O.

What a stack declares (:mod:`~reconciler.core.stack`), the values the engine and plugins pass
around (:mod:`~reconciler.core.model`: members, instances, problems), the error hierarchy
(:mod:`~reconciler.core.errors`), field paths and their ``FILE:LINE`` rendering
(:mod:`~reconciler.core.fieldpath`), an image's identity (:mod:`~reconciler.core.image`, from the
LinuxKit document of :mod:`~reconciler.core.linuxkit`), the plan (:mod:`~reconciler.core.plan`) and
the planner, a pure function of (desired, observed, health) (:mod:`~reconciler.core.planner`).

Layer: the innermost. Imports nothing of infra outside this package; everything else may import
it. Inside, the planner sits over the plan, the plan over the image identity, and the image over
the model (import-linter's contracts in ``pyproject.toml``).
"""
