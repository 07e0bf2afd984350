"""web-hcloud: two servers on Hetzner Cloud through the Pulumi bridge, from this file alone.

infra runs Pulumi's Hetzner provider plugin (``pulumi-resource-hcloud``) itself, as the Pulumi
engine would, with no Pulumi CLI, no Pulumi state and no program: the ``hcloud`` preset names the
resource (``hcloud:index/server:Server``) and the list function (``getServers``, by label
selector), and the servers carry infra's ownership labels, which are all the state there is.

    pulumi plugin install resource hcloud 1.41.0     # or put pulumi-resource-hcloud on PATH
    export HCLOUD_TOKEN=...                          # a project's API token: read from the environment only
    infra validate stacks/web-hcloud.py
    infra apply stacks/web-hcloud.py --yes
    infra status stacks/web-hcloud.py
    infra destroy stacks/web-hcloud.py --yes

What the members boot, honestly: Hetzner's stock ``debian-12`` image, not a LinuxKit image. The
bridge passes infra's user-data (the JSON LinuxKit's metadata package reads), which Debian's
cloud-init ignores, so the ``command`` service does not run on these servers yet: the stack shows
the bridge creating, observing, healing and deleting labelled servers. Getting a LinuxKit image
there is not automated: Hetzner Cloud has no image import; the known way is a snapshot of a
server whose disk was written (``dd``) with ``linuxkit build --format raw-bios`` from the rescue
system, then ``image=`` that snapshot's id.

What has been run: only against the stand-in of the plugin in ``tests/pulumi`` (a real plugin
process over the real gRPC protocol, using pulumi-hcloud's resource and function names, checked
against the @pulumi/hcloud 1.41.0 schema), never against Hetzner Cloud itself. On this machine:

    export PATH="$PWD/tests/pulumi/bin:$PATH" FAKECLOUD_STATE="$(mktemp -d)/hcloud.json" HCLOUD_TOKEN=good-token
    infra apply stacks/web-hcloud.py --yes
    infra plan stacks/web-hcloud.py --detailed-exitcode
    infra status stacks/web-hcloud.py
    infra destroy stacks/web-hcloud.py --yes
"""

from plugins.command import Command
from reconciler import Stack

stack = Stack(
    name="web-hcloud",
    provider="pulumi",
    provider_config={
        "preset": "hcloud",
        "version": "1.41.0",  # found under $PULUMI_HOME/plugins when not on PATH
        "config": {"token": {"env": "HCLOUD_TOKEN"}},
    },
    groups=[
        Command(
            name="web",
            size=2,
            image="debian-12",
            machine_type="cx22",
            command=["python3", "-m", "http.server", "8080", "--bind", "{address}"],
        ),
    ],
)
