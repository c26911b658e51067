"""The partitioned durable log: protocol, SQLite journal, group commit."""

from ringfence.log.base import EventLog, Record, partition_for
from ringfence.log.group_commit import GroupCommitter
from ringfence.log.sqlite import SqliteLog

__all__ = ["EventLog", "GroupCommitter", "Record", "SqliteLog", "partition_for"]
