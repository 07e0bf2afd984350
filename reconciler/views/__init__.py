"""Views: pictures of a stack that both the CLI and the daemon's page show.

:mod:`~reconciler.views.graph` draws groups, members by health, links and a plan's changes with
Graphviz. Layer: imports the engine (its status values), the kit and the core; imported by the
daemon and the CLI.
"""
