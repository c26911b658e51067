"""Start moto's server with one change to its speed, none to its behaviour.

moto's ``TransactWriteItems`` backs up a table before each item of a transaction (for the
rollback), deep-copying the whole table up to a hundred times per call; with the thousands
of items these tests write, that made one transaction take seconds. Here each table is
copied at most once per transaction: the same backup, taken once. Run as
``python tests/aws/moto_server.py -H 127.0.0.1 -p PORT`` (the arguments of moto.server).
"""

from __future__ import annotations

import copy
import threading
import types
from typing import Any

from moto.dynamodb import models
from moto.server import main

_transact = models.DynamoDBBackend.transact_write_items
_lock = threading.Lock()  # the module-level ``copy`` is swapped while a transaction runs


def _transact_copying_each_table_once(self: Any, transact_items: list[dict[str, Any]]) -> None:
    backups: dict[int, Any] = {}

    def deepcopy(obj: Any, memo: Any = None) -> Any:
        if isinstance(obj, models.Table):
            if id(obj) not in backups:
                backups[id(obj)] = copy.deepcopy(obj)
            return backups[id(obj)]
        return copy.deepcopy(obj, memo)

    with _lock:
        models.copy = types.SimpleNamespace(deepcopy=deepcopy)  # type: ignore[assignment]
        try:
            _transact(self, transact_items)
        finally:
            models.copy = copy


models.DynamoDBBackend.transact_write_items = _transact_copying_each_table_once  # type: ignore[method-assign]

if __name__ == "__main__":
    main()
