"""The partitioned durable log's contract: records, partitioning and the EventLog protocol.

Each runtime brings its own log: the embedded SQLite journal (``runtimes/embedded``), Kafka
topics, a Kinesis stream."""

from ringfence.log.base import EventLog, Record, partition_for

__all__ = ["EventLog", "Record", "partition_for"]
