"""The kafka runtime: Ringfence's services over Apache Kafka topics and a PostgreSQL store.

``ringfence serve ingest`` produces accepted events to the events topic (:mod:`.ingest`).
``serve process`` workers (:mod:`.worker`, one consumer group) run the engine's keyed stages
(:mod:`ringfence.engine.stages`) through the processing driver: each input partition is a
task (:mod:`.task`) restored from its changelog (:mod:`.restore`), a retried event is folded
once (:mod:`.seen`), the stages' values meet in the join (:mod:`.join`), and every batch is
one transaction with the changelogs and the input offsets (:mod:`.checkpoint`).
``serve dispatch`` runs the alert pipeline from the alerts topic into PostgreSQL
(:mod:`.dispatch`); ``serve api`` answers the HTTP API from PostgreSQL. Topics:
:mod:`.topics`; the records services exchange: :mod:`.records`.
"""
