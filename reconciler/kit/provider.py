"""The provider protocol: where instances run (InfraKit's instance SPI, typed).

A provider plugin is a class registered under the ``infra.providers`` entry-point group. The CLI
builds one per stack with :meth:`ProviderClass.open` and calls the five methods below; nothing in
``reconciler`` imports a cloud SDK. Every method may raise only :mod:`reconciler.core.errors` types:
each provider maps its SDK's exceptions to them in one module.

Contract, method by method:

``list(selector)``
    Every instance whose labels include all of ``selector``, in any state except fully gone
    (terminated EC2 instances, deleted GCE instances are not returned). One paginated list call
    per selector, never one read per instance. Raises TransientError when the listing could not
    be completed; a partial listing is never returned (the planner would delete what it missed
    seeing as "missing" and create duplicates).

``create(spec)``
    Creates the instance named ``spec.name`` with ``spec.labels`` set atomically at creation and
    ``spec.userdata()`` delivered as LinuxKit metadata. Idempotent on the name: if an instance of
    that name already exists with the stack's labels, returns it instead of creating a second
    one. When create raises, the instance may or may not exist: the next ``list`` decides (the
    deterministic name makes the retry safe). Returns the instance as the provider sees it right
    after creation (status ``pending`` or ``running``).

``delete(instance)``
    Deletes the instance. Deleting an instance that is already gone succeeds. After a failed
    delete the instance is assumed to still exist. Providers refuse (PermanentError) to delete an
    instance that lacks the ownership labels: a second safety net under the planner's own check.

``validate(members)``
    Problems with the desired members found *before* anything changes: unknown machine type,
    missing image or subnet, address or port collisions. Must not change anything.

``address_for(spec)`` (optional)
    The address (IP or DNS name) the instance created from ``spec`` will be reachable at, known
    *before* it is created, so a role can write it into configuration (etcd's static
    ``initial-cluster`` and certificate SANs). Stable for ``spec.name`` until that instance is
    deleted; providers that honour ``MemberSpec.address`` create the instance at it. Returns
    ``None`` when the provider cannot know it in advance. The engine calls it through
    :func:`address_for`, so providers without it still conform.

``discovery(selector, port)``
    A Prometheus scrape-config fragment (``{"file_sd_configs": ...}``, ``{"ec2_sd_configs": ...}``,
    ``{"gce_sd_configs": ...}``) that discovers the instances matching ``selector`` on ``port``
    with Prometheus's own service discovery, or ``None`` when the provider has none. Lets the
    prometheus role watch a group without any address written into its configuration.

Images (optional; :class:`ImageStore`, found through :func:`image_store`). A provider that boots
LinuxKit images built by infra's pipeline (:mod:`reconciler.core.image`) declares the
``image_format`` it boots (``linuxkit build --format``) and the ``image_metadata`` source of its
instances, and implements:

``find_image(image)``
    The stored image labelled (tagged) with ``image.digest``, or None. One lookup call, never a
    listing of every image. Raises TransientError when the lookup could not be made: the caller
    must not take an unanswered lookup for "absent" (it would upload again).

``push_image(image, artefact, progress)``
    Uploads ``artefact`` (the file ``linuxkit build`` wrote) and registers it as the image
    ``image.name`` labelled with ``image.digest``; returns it once bootable. Idempotent by
    digest: an image with the digest is returned as is (no upload), an upload whose register
    step never ran (a crash in between) is registered without uploading again, and an existing
    image is never deleted to make room. After a failure, the image may or may not exist: the
    next ``find_image`` decides. ``progress(done, total)`` reports uploaded bytes.

``delete_image(record)``
    Deletes a stored image (and what backs it: the GCS object, the EBS snapshot). Deleting what
    is already gone succeeds. Refuses (PermanentError) an image without ``infra-image``.

``accepts_documents()`` (optional)
    True when the endpoint boots an image from its LinuxKit document (an infra emulator), so
    that, with no ``linuxkit`` installed, the pipeline may register the YAML itself as the
    image's artefact. Must make no call to a real cloud; absent means False.

The local and memory providers run no images and implement none of these.

Labels in place (optional; :class:`LabelUpdater`, found through :func:`label_updater`):

``update_labels(instance, labels)``
    Sets every label (tag) of ``labels`` on the instance and removes its ``infra-`` labels that
    are not in ``labels`` (a lifted protection), leaving any other label as it is
    (:func:`reconciler.kit.ownership.merged_labels`), without replacing it: GCE ``setLabels``, EC2
    ``CreateTags``/``DeleteTags``. Re-reads the instance first and refuses
    (PermanentError) one that lacks this stack's ownership labels, and a change of an ownership
    label (:func:`reconciler.kit.ownership.require_label_update`). Returns the instance as it is
    now. A provider without it has its members' labels left as they were (the plan warns): a
    label or protection change never replaces a member.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

from reconciler.core.image import ImageRecord, ImageSpec
from reconciler.core.model import Instance, MemberSpec, Problem

#: A Prometheus service-discovery fragment, merged into a scrape config.
SdConfig = dict[str, Any]


@runtime_checkable
class Provider(Protocol):
    """An open connection to one place where instances run. See the module docstring."""

    name: ClassVar[str]

    def list(self, selector: Mapping[str, str]) -> list[Instance]: ...

    def create(self, spec: MemberSpec) -> Instance: ...

    def delete(self, instance: Instance) -> None: ...

    def validate(self, members: Sequence[MemberSpec]) -> builtins.list[Problem]: ...

    def discovery(self, selector: Mapping[str, str], port: int) -> SdConfig | None: ...

    def close(self) -> None: ...


#: ``progress(done, total)``: bytes of an image uploaded so far, out of ``total``.
Progress = Callable[[int, int], None]


@runtime_checkable
class ImageStore(Protocol):
    """The optional image methods of a provider. See the module docstring."""

    image_format: ClassVar[str]
    image_metadata: ClassVar[str]

    def find_image(self, image: ImageSpec) -> ImageRecord | None: ...

    def push_image(self, image: ImageSpec, artefact: Path, progress: Progress) -> ImageRecord: ...

    def delete_image(self, record: ImageRecord) -> None: ...


@runtime_checkable
class LabelUpdater(Protocol):
    """The optional in-place label update of a provider. See the module docstring."""

    def update_labels(self, instance: Instance, labels: Mapping[str, str]) -> Instance: ...


def label_updater(provider: Provider) -> LabelUpdater | None:
    """``provider`` as a :class:`LabelUpdater` when it can change labels in place, else None."""
    return provider if isinstance(provider, LabelUpdater) else None


def image_store(provider: Provider) -> ImageStore | None:
    """``provider`` as an :class:`ImageStore` when it stores images, else None."""
    return provider if isinstance(provider, ImageStore) else None


def accepts_documents(store: ImageStore) -> bool:
    """Whether ``store`` boots images from their LinuxKit YAML (see ``accepts_documents``)."""
    method = getattr(store, "accepts_documents", None)
    return bool(method()) if method is not None else False


class ProviderClass(Protocol):
    """What the ``infra.providers`` entry point must load: a class with ``open``."""

    name: ClassVar[str]

    @classmethod
    def open(cls, config: Mapping[str, Any], *, stack: str, state_dir: Path) -> Provider:
        """Validate ``config`` (the stack's ``provider_config``) and connect.

        Raises ConfigError naming the bad field (``provider_config.zones``) when the settings
        are invalid, and PermanentError when credentials are missing. ``state_dir`` is the
        stack's private directory; ``stack`` its name.
        """
        ...


def address_for(provider: Provider, spec: MemberSpec) -> str | None:
    """The provider's advance address for ``spec``, or None when it offers none."""
    method = getattr(provider, "address_for", None)
    if method is None:
        return None
    result = method(spec)
    return result if isinstance(result, str) else None
