"""The kafka runtime: Ringfence's services over Apache Kafka topics and a PostgreSQL store.

``ringfence serve ingest`` produces accepted events to the events topic; ``serve process``
workers (one consumer group) run the engine's keyed stages (:mod:`ringfence.engine.stages`)
in Kafka transactions that also write each stage's state changelog and commit the input
offsets; ``serve dispatch`` runs the alert pipeline from the alerts topic into PostgreSQL;
``serve api`` answers the HTTP API from PostgreSQL. Topics: :mod:`.topics`.
"""
