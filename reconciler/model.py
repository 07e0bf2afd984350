"""Public path of the model types (``Instance``, ``MemberSpec``, ``ConfigFile``, ...) for third-party
providers and roles. The types live in :mod:`reconciler.core.model`; infra's own code imports them
from there. Kept so that ``from reconciler.model import Instance`` goes on working.
"""

from reconciler.core.model import (
    LABEL_GROUP as LABEL_GROUP,
)
from reconciler.core.model import (
    LABEL_MEMBER as LABEL_MEMBER,
)
from reconciler.core.model import (
    LABEL_SPEC as LABEL_SPEC,
)
from reconciler.core.model import (
    LABEL_STACK as LABEL_STACK,
)
from reconciler.core.model import (
    OWNERSHIP_LABELS as OWNERSHIP_LABELS,
)
from reconciler.core.model import (
    SPEC_HASH_LEN as SPEC_HASH_LEN,
)
from reconciler.core.model import (
    ConfigFile as ConfigFile,
)
from reconciler.core.model import (
    Health as Health,
)
from reconciler.core.model import (
    Instance as Instance,
)
from reconciler.core.model import (
    InstanceStatus as InstanceStatus,
)
from reconciler.core.model import (
    MemberSpec as MemberSpec,
)
from reconciler.core.model import (
    Problem as Problem,
)
from reconciler.core.model import (
    ProviderSettings as ProviderSettings,
)
from reconciler.core.model import (
    Service as Service,
)
from reconciler.core.model import (
    UpdatePolicy as UpdatePolicy,
)
from reconciler.core.model import (
    group_selector as group_selector,
)
from reconciler.core.model import (
    instance_name as instance_name,
)
from reconciler.core.model import (
    stack_selector as stack_selector,
)

__all__ = [
    "LABEL_GROUP",
    "LABEL_MEMBER",
    "LABEL_SPEC",
    "LABEL_STACK",
    "OWNERSHIP_LABELS",
    "SPEC_HASH_LEN",
    "ConfigFile",
    "Health",
    "Instance",
    "InstanceStatus",
    "MemberSpec",
    "Problem",
    "ProviderSettings",
    "Service",
    "UpdatePolicy",
    "group_selector",
    "instance_name",
    "stack_selector",
]
