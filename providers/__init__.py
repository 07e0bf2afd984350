"""Provider plugins: where instances run (memory, local, aws, gcp), one package each.

Each implements :class:`reconciler.kit.provider.Provider` and is registered under the
``infra.providers`` entry-point group. Providers never import each other or any role.
"""
