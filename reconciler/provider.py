"""Public path of the provider protocol (``Provider``, ``ImageStore``, ``SdConfig``, ...) for
third-party providers. It lives in :mod:`reconciler.kit.provider`; kept so that
``from reconciler.provider import Provider`` goes on working.
"""

from reconciler.kit.provider import (
    ImageStore as ImageStore,
)
from reconciler.kit.provider import (
    Progress as Progress,
)
from reconciler.kit.provider import (
    Provider as Provider,
)
from reconciler.kit.provider import (
    ProviderClass as ProviderClass,
)
from reconciler.kit.provider import (
    SdConfig as SdConfig,
)
from reconciler.kit.provider import (
    accepts_documents as accepts_documents,
)
from reconciler.kit.provider import (
    address_for as address_for,
)
from reconciler.kit.provider import (
    image_store as image_store,
)

__all__ = [
    "ImageStore",
    "Progress",
    "Provider",
    "ProviderClass",
    "SdConfig",
    "accepts_documents",
    "address_for",
    "image_store",
]
