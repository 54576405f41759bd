"""Stand-ins of the alert brokers' web APIs and a Kafka broker, for the tests.

`stamps` takes real stamps and alerts from ``tests/data``; `standin` serves
Lasair's, Fink's and ALeRCE's HTTP APIs on 127.0.0.1 (written from their
server code, see its docstring); `kafka` starts a real Kafka-protocol broker.
"""
