"""Run the aws runtime against a local AWS endpoint (moto in server mode, or LocalStack).

Lambda itself cannot run here, so this module plays its event source mappings:
:class:`KinesisSource` reads each shard in order and invokes the processor the way Lambda
does (batches per shard, ``ReportBatchItemFailures``, bisect on a function error, a bounded
number of retries, then the on-failure destination), and :class:`QueueSource` feeds the
dispatcher from its SQS queue. :func:`provision` creates the resources from the SAM
template's own definitions, so what is tested is what is deployed.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import yaml

from ringfence.runtimes.aws.resources import AwsClients, AwsNames

log = logging.getLogger("ringfence.aws.local")

TEMPLATE = Path(__file__).resolve().parents[4] / "deploy" / "aws" / "template.yaml"
Handler = Callable[[dict[str, Any]], dict[str, Any]]


class _TemplateLoader(yaml.SafeLoader):
    """Reads CloudFormation's short-form intrinsics (``!Ref``, ``!Sub``…) as plain tagged values."""


def _intrinsic(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {f"!{suffix}": value}


_TemplateLoader.add_multi_constructor("!", _intrinsic)


def load_template(path: Path = TEMPLATE) -> dict[str, Any]:
    text = path.read_text()  # apart from the load: a nosec line with two calls makes bandit warn
    loaded: dict[str, Any] = yaml.load(text, Loader=_TemplateLoader)  # noqa: S506 - a SafeLoader subclass  # nosec B506
    return loaded


_NO_VALUE = object()


def resolved(value: Any, template: dict[str, Any], parameters: dict[str, str] | None = None) -> Any:
    """``value`` of ``template`` with the intrinsics a table's properties choose by (``!If`` on a
    condition of ``!Equals``, ``!Ref`` to a parameter or ``AWS::NoValue``) resolved at
    ``parameters`` and the template's defaults for the rest; references to resources are left
    as they are (only a deployment knows them). ValueError for a condition it cannot decide."""
    given = {name: str(p.get("Default", "")) for name, p in template.get("Parameters", {}).items()}
    given.update(parameters or {})

    def walk(node: Any) -> Any:
        if isinstance(node, list):
            return [item for item in map(walk, node) if item is not _NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1 and (tag := next(iter(node))).startswith("!"):
            argument = node[tag]
            if tag == "!If":
                condition, then, otherwise = argument
                decided = walk(template["Conditions"][condition])
                if not isinstance(decided, bool):
                    raise ValueError(f"cannot decide the template's condition {condition}")
                return walk(then if decided else otherwise)
            if tag == "!Equals":
                left, right = walk(argument)
                return left == right
            if tag == "!Ref" and argument == "AWS::NoValue":
                return _NO_VALUE
            if tag == "!Ref" and argument in given:
                return given[argument]
            return node
        return {key: item for key, item in ((k, walk(v)) for k, v in node.items()) if item is not _NO_VALUE}

    return walk(value)


def provision(
    clients: AwsClients,
    prefix: str,
    shards: int = 2,
    template: Path = TEMPLATE,
    parameters: dict[str, str] | None = None,
) -> AwsNames:
    """Create the stream, tables, topic and queues of one deployment named ``prefix``, the
    tables as the template's ``parameters`` (its defaults otherwise) make them."""
    loaded = load_template(template)
    resources = loaded["Resources"]
    db = clients.dynamodb
    names: dict[str, str] = {}
    for logical in ("StateTable", "AlertsTable"):
        props = resolved(resources[logical]["Properties"], loaded, parameters)
        table = f"{prefix}-{logical}"
        kwargs: dict[str, Any] = {
            "TableName": table,
            "KeySchema": props["KeySchema"],
            "AttributeDefinitions": props["AttributeDefinitions"],
            "BillingMode": props["BillingMode"],
        }
        if "ProvisionedThroughput" in props:
            kwargs["ProvisionedThroughput"] = _units(props["ProvisionedThroughput"])
        if props.get("GlobalSecondaryIndexes"):
            kwargs["GlobalSecondaryIndexes"] = [
                {**index, "ProvisionedThroughput": _units(index["ProvisionedThroughput"])}
                if "ProvisionedThroughput" in index
                else index
                for index in props["GlobalSecondaryIndexes"]
            ]
        db.create_table(**kwargs)
        db.get_waiter("table_exists").wait(TableName=table)
        ttl = props.get("TimeToLiveSpecification")
        if ttl:
            db.update_time_to_live(TableName=table, TimeToLiveSpecification=ttl)
        names[logical] = table
    stream = f"{prefix}-events"
    clients.kinesis.create_stream(StreamName=stream, ShardCount=shards)
    clients.kinesis.get_waiter("stream_exists").wait(StreamName=stream)
    topic = clients.sns.create_topic(Name=f"{prefix}-alerts")["TopicArn"]
    queues: dict[str, str] = {}
    for name in ("alerts-dlq", "alerts", "poison"):
        attributes: dict[str, str] = {}
        if name == "alerts":
            dlq_arn = _queue_arn(clients, queues["alerts-dlq"])
            receives = resources["AlertsQueue"]["Properties"]["RedrivePolicy"]["maxReceiveCount"]
            attributes["RedrivePolicy"] = msgspec.json.encode(
                {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": receives}
            ).decode()
        queues[name] = clients.sqs.create_queue(QueueName=f"{prefix}-{name}", Attributes=attributes)["QueueUrl"]
    clients.sns.subscribe(
        TopicArn=topic,
        Protocol="sqs",
        Endpoint=_queue_arn(clients, queues["alerts"]),
        Attributes={"RawMessageDelivery": "true"},
    )
    return AwsNames(stream, names["StateTable"], names["AlertsTable"], topic, queues["poison"])


def _units(throughput: dict[str, Any]) -> dict[str, int]:
    return {name: int(units) for name, units in throughput.items()}


def _queue_arn(clients: AwsClients, url: str) -> str:
    reply = clients.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    return str(reply["Attributes"]["QueueArn"])


@dataclass
class _Shard:
    id: str
    after: str | None = None  # the last sequence number handed over and done with


@dataclass
class KinesisSource:
    """Lambda's Kinesis event source mapping, for one stream and one function.

    ``max_retries`` and ``bisect`` are the mapping's ``MaximumRetryAttempts`` and
    ``BisectBatchOnFunctionError``; ``on_failure`` receives what Lambda sends to the
    on-failure destination (the shard and sequence range, not the records). ``shards``, if
    given, are the only shards it reads: a source a shard, each drained on a thread of its own
    (:func:`drain_at_once`), runs shards at once as Lambda does.
    """

    kinesis: Any
    stream: str
    handler: Handler
    batch_size: int = 100
    max_retries: int = 10  # as deploy/aws/template.yaml sets it
    bisect: bool = True
    on_failure: Callable[[dict[str, Any]], None] = lambda info: None
    region: str = "us-east-1"
    shards: tuple[str, ...] = ()
    _shards: dict[str, _Shard] = field(default_factory=dict)
    invocations: int = 0

    def shard_ids(self) -> list[str]:
        if self.shards:
            return list(self.shards)
        reply = self.kinesis.list_shards(StreamName=self.stream)
        return sorted(s["ShardId"] for s in reply["Shards"])

    def read(self, shard_id: str, after: str | None = None) -> list[dict[str, Any]]:
        """Up to a batch of a shard's records after sequence number ``after`` (None: from the start)."""
        kwargs: dict[str, Any] = {"StreamName": self.stream, "ShardId": shard_id}
        if after is None:
            kwargs["ShardIteratorType"] = "TRIM_HORIZON"
        else:
            kwargs["ShardIteratorType"] = "AFTER_SEQUENCE_NUMBER"
            kwargs["StartingSequenceNumber"] = after
        iterator = self.kinesis.get_shard_iterator(**kwargs)["ShardIterator"]
        records: list[dict[str, Any]] = self.kinesis.get_records(ShardIterator=iterator, Limit=self.batch_size)[
            "Records"
        ]
        return records

    def event_for(self, shard: str, records: list[dict[str, Any]]) -> dict[str, Any]:
        """The event Lambda would invoke the function with for these records of ``shard``."""
        arn = f"arn:aws:kinesis:{self.region}:000000000000:stream/{self.stream}"
        return {
            "Records": [
                {
                    "eventSource": "aws:kinesis",
                    "eventSourceARN": arn,
                    "eventID": f"{shard}:{r['SequenceNumber']}",
                    "kinesis": {
                        "sequenceNumber": r["SequenceNumber"],
                        "partitionKey": r["PartitionKey"],
                        "data": base64.b64encode(r["Data"]).decode(),
                        "approximateArrivalTimestamp": r["ApproximateArrivalTimestamp"].timestamp(),
                    },
                }
                for r in records
            ]
        }

    def poll(self) -> int:
        """One batch per shard, as Lambda would invoke; returns how many records were handed over."""
        handed = 0
        for shard_id in self.shard_ids():
            shard = self._shards.setdefault(shard_id, _Shard(shard_id))
            records = self.read(shard.id, shard.after)
            if records:
                handed += len(records)
                self._deliver(shard, records)
        return handed

    def drain(self, timeout_s: float = 120.0) -> None:
        """Poll until every shard is read to its end."""
        deadline = time.monotonic() + timeout_s
        while self.poll():
            if time.monotonic() > deadline:
                raise TimeoutError("the stream did not drain")

    def _deliver(self, shard: _Shard, records: list[dict[str, Any]]) -> None:
        """Invoke until the batch is done, the way Lambda retries a Kinesis batch."""
        pending = [records]
        retries = 0
        while pending:
            batch = pending[0]
            self.invocations += 1
            try:
                reply = self.handler(self.event_for(shard.id, batch))
                failed = [f["itemIdentifier"] for f in (reply or {}).get("batchItemFailures", [])]
            except Exception as exc:
                log.warning("shard %s: function error: %s", shard.id, exc)
                failed = None
            if failed == []:  # the whole batch is done
                shard.after = batch[-1]["SequenceNumber"]
                pending.pop(0)
                retries = 0
                continue
            retries += 1
            if failed:  # checkpoint before the lowest reported record, retry from it
                first = min(failed, key=int)
                done = [r for r in batch if int(r["SequenceNumber"]) < int(first)]
                if done:
                    shard.after = done[-1]["SequenceNumber"]
                batch = [r for r in batch if int(r["SequenceNumber"]) >= int(first)]
                pending[0] = batch
            elif self.bisect and len(batch) > 1:
                half = len(batch) // 2
                pending[0:1] = [batch[:half], batch[half:]]
            if retries > self.max_retries:
                self.on_failure(
                    {
                        "requestContext": {"condition": "RetryAttemptsExhausted"},
                        "KinesisBatchInfo": {
                            "shardId": shard.id,
                            "startSequenceNumber": pending[0][0]["SequenceNumber"],
                            "endSequenceNumber": pending[0][-1]["SequenceNumber"],
                            "batchSize": len(pending[0]),
                            "streamArn": self.stream,
                        },
                    }
                )
                shard.after = pending[0][-1]["SequenceNumber"]
                pending.pop(0)
                retries = 0


def drain_at_once(sources: list[KinesisSource], timeout_s: float = 120.0) -> None:
    """Drain each source on a thread of its own; the first error any raised, raised here."""
    errors: list[BaseException] = []

    def drain(source: KinesisSource) -> None:
        try:
            source.drain(timeout_s)
        except BaseException as exc:  # handed to the caller's thread
            errors.append(exc)

    threads = [
        threading.Thread(target=drain, args=(source,), name=f"shards-{source.shards}", daemon=True)
        for source in sources
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout_s + 60.0)  # past its own drain's timeout: a handler hung
        if thread.is_alive():
            raise TimeoutError(f"{thread.name} did not finish")
    if errors:
        raise errors[0]


@dataclass
class QueueSource:
    """Lambda's SQS event source mapping with ``ReportBatchItemFailures``."""

    sqs: Any
    queue_url: str
    handler: Handler
    batch_size: int = 10
    invocations: int = 0

    def poll(self) -> int:
        reply = self.sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=self.batch_size,
            WaitTimeSeconds=0,
            AttributeNames=["All"],
        )
        messages = reply.get("Messages", [])
        if not messages:
            return 0
        arn = self.sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        event = {
            "Records": [
                {
                    "messageId": m["MessageId"],
                    "receiptHandle": m["ReceiptHandle"],
                    "body": m["Body"],
                    "attributes": m.get("Attributes", {}),
                    "eventSource": "aws:sqs",
                    "eventSourceARN": arn,
                }
                for m in messages
            ]
        }
        self.invocations += 1
        try:
            reply = self.handler(event)
            failed = {f["itemIdentifier"] for f in (reply or {}).get("batchItemFailures", [])}
        except Exception as exc:
            log.warning("queue function error: %s", exc)
            return len(messages)  # every message stays for its visibility timeout
        done = [m for m in messages if m["MessageId"] not in failed]
        for start in range(0, len(done), 10):
            self.sqs.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done[start : start + 10])
                ],
            )
        return len(messages)

    def drain(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while self.poll():
            if time.monotonic() > deadline:
                raise TimeoutError("the queue did not drain")
