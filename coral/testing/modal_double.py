"""The Modal double, under the name the tests import (it lives in coral/modal/double.py because
`coral validate` runs the modal backend on it)."""

from coral.modal.double import (
    DICT_IDLE_TTL,
    MAX_ITEM_BYTES,
    MAX_PARTITION_BYTES,
    MAX_PARTITION_ITEMS,
    DoubleServer,
    DoubleStore,
    ModalDouble,
    connect,
    shared_server,
)

__all__ = [
    "DICT_IDLE_TTL", "MAX_ITEM_BYTES", "MAX_PARTITION_BYTES", "MAX_PARTITION_ITEMS",
    "DoubleServer", "DoubleStore", "ModalDouble", "connect", "shared_server",
]
