"""The aws runtime: the reference deployment, serverless.

API Gateway -> the API (the same Starlette application as every runtime's, on Lambda through
Mangum, over :class:`~ringfence.runtimes.aws.platform.AwsPlatform`) -> Kinesis (partition key:
customer) -> ``handlers.process`` (the engine; per-key state in DynamoDB, versioned) -> alerts
in DynamoDB -> SNS -> SQS -> ``handlers.dispatch`` (the shared alert pipeline's stages over
DynamoDB) ; ``handlers.tick`` fires absence timers of quiet keys. The Lambda entry points are
:mod:`ringfence.aws_lambda`; ``deploy/aws/template.yaml`` declares it all;
:mod:`ringfence.runtimes.aws.local` runs it against a local AWS endpoint.

boto3 is the ``aws`` extra and is imported only when a handler first needs a client.
"""
