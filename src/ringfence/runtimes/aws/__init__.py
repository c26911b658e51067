"""The aws runtime: the reference deployment, serverless.

API Gateway -> ``handlers.ingest`` -> Kinesis (partition key: customer) -> ``handlers.process``
(the engine; per-key state in DynamoDB, versioned) -> alerts in DynamoDB -> SNS -> SQS ->
``handlers.dispatch`` (the alert pipeline and receivers). ``handlers.api`` serves the alerts
API and ``handlers.tick`` fires absence timers of quiet keys. ``deploy/aws/template.yaml``
declares it all; :mod:`ringfence.runtimes.aws.local` runs it against a local AWS endpoint.

boto3 is the ``aws`` extra and is imported only when a handler first needs a client.
"""
