"""web-gcp: a cattle group of ``command`` members on the gcp provider, for end-to-end tests.

Name and size come from the environment so each test runs its own stack against the fake:
``WEB_GCP_STACK`` (default ``webgcp``) and ``WEB_GCP_SIZE`` (default 3). Health checks are off:
the fake's instances run nothing.
"""

import os

from reconciler import Group, Stack

stack = Stack(
    name=os.environ.get("WEB_GCP_STACK", "webgcp"),
    provider="gcp",
    provider_config={
        "project": os.environ.get("INFRA_GCP_PROJECT", "my-project"),
        "zones": ["us-central1-a", "us-central1-b"],
    },
    groups=(
        Group(
            name="web",
            size=int(os.environ.get("WEB_GCP_SIZE", "3")),
            role="command",
            image="family/infra-etcd",
            machine_type="e2-small",
            config={
                "command": ["python3", "-m", "http.server", "8080", "--bind", "{address}"],
                "health": "none",
                "files": {"index.html": "<h1>hello from gce</h1>\n"},
            },
        ),
    ),
)
