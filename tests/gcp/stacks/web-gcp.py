"""web-gcp: a cattle group of ``command`` members on the gcp provider, for end-to-end tests.

Name and size come from the environment so each test runs its own stack against the fake:
``WEB_GCP_STACK`` (default ``webgcp``) and ``WEB_GCP_SIZE`` (default 3); ``WEB_GCP_IMAGE`` pins
the image (default ``family/infra-etcd``; empty: the image built from the group's LinuxKit
document, uploaded to ``INFRA_GCP_IMAGE_BUCKET``); ``WEB_GCP_PORT`` is a flag of the service's
command, so part of that image. ``WEB_GCP_GROUP`` names the group (default ``web``),
``WEB_GCP_LABELS`` gives it labels (``team=blue,tier=front``) and ``WEB_GCP_PROTECT=1`` protects it.
Health checks are off: the fake's instances run nothing.
"""

import os

from reconciler import Group, Stack

stack = Stack(
    name=os.environ.get("WEB_GCP_STACK", "webgcp"),
    provider="gcp",
    provider_config={
        "project": os.environ.get("INFRA_GCP_PROJECT", "my-project"),
        "zones": ["us-central1-a", "us-central1-b"],
        "image_bucket": os.environ.get("INFRA_GCP_IMAGE_BUCKET", "my-project-infra-images"),
    },
    groups=(
        Group(
            name=os.environ.get("WEB_GCP_GROUP", "web"),
            labels=dict(kv.split("=", 1) for kv in os.environ.get("WEB_GCP_LABELS", "").split(",") if kv),
            protect=os.environ.get("WEB_GCP_PROTECT") == "1",
            size=int(os.environ.get("WEB_GCP_SIZE", "3")),
            role="command",
            image=os.environ.get("WEB_GCP_IMAGE", "family/infra-etcd") or None,
            machine_type="e2-small",
            config={
                "command": ["python3", "-m", "http.server", os.environ.get("WEB_GCP_PORT", "8080"), "--bind", "{address}"],
                "health": "none",
                "files": {"index.html": "<h1>hello from gce</h1>\n"},
            },
        ),
    ),
)
