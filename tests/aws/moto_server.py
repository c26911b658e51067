"""Start moto's server with two changes: one to its speed, one to make it keep a promise of
DynamoDB's.

- moto's ``TransactWriteItems`` backs up a table before each item of a transaction (for the
  rollback), deep-copying the whole table up to a hundred times per call; with the thousands
  of items these tests write, that made one transaction take seconds. Here each table is
  copied at most once per transaction: the same backup, taken once.
- DynamoDB checks a write's condition and makes the write as one atomic step. moto's server
  answers requests on several threads and does not: two conditional updates of one item at
  once could both pass their check, and the older value could win ("the newest deadline
  wins" then lost to an older one, in tests/aws/test_silence.py, once in many runs). Here the
  writes are serialised, which is stronger than DynamoDB (per item) and enough.

Run as ``python tests/aws/moto_server.py -H 127.0.0.1 -p PORT`` (the arguments of moto.server).
"""

from __future__ import annotations

import copy
import functools
import threading
import types
from collections.abc import Callable
from typing import Any

from moto.dynamodb import models
from moto.server import main

_transact = models.DynamoDBBackend.transact_write_items
# held by every write; a transaction's own writes take it again, hence re-entrant. It also
# covers the module-level ``copy`` swapped while a transaction runs.
_lock = threading.RLock()


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


def _atomic(write: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(write)
    def locked(self: Any, *args: Any, **kwargs: Any) -> Any:
        with _lock:
            return write(self, *args, **kwargs)

    return locked


models.DynamoDBBackend.transact_write_items = _transact_copying_each_table_once  # type: ignore[method-assign]
for _write in ("put_item", "update_item", "delete_item", "batch_write_item"):
    setattr(models.DynamoDBBackend, _write, _atomic(getattr(models.DynamoDBBackend, _write)))

if __name__ == "__main__":
    main()
