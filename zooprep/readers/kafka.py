"""Sources from a Kafka alert stream (extra ``zooprep[kafka]``: confluent-kafka).

``zooprep select RUN --kafka HOST:PORT --topic T [--group G] [--max N]
[--until-idle S]`` reads the topic's messages in batches and understands,
message by message:

* **Rubin alerts** in the Confluent wire format (byte 0 is 0, bytes 1-4 the
  schema id, then schemaless Avro).  The writer schema of an id comes from
  ``lsst-alert-packet`` (id ``major * 100 + minor``: 900 is ``lsst.v9_0``)
  or, with ``schema_registry``, from a Confluent schema registry
  (``GET {url}/schemas/ids/{id}``); schemas are kept in the run.
* **Fink alerts**: schemaless Avro whose writer schema is the message key
  (``fink-client``'s convention), or was published on ``<topic>_schema``.
* **Avro container files** sent as messages (they embed their schema).
* **Lasair filter output**: JSON objects with ``diaObjectId`` and, when the
  filter sends it, the ``alert`` (``diaSourcesList``, ``diaForcedSourcesList``).
  Lasair messages carry no stamps: the cutouts are Lasair's FITS URLs
  (``{lasair_web}/fits/<diaSourceId>_cutout<Kind>/``), fetched at render time.

Alerts are written into the run as they arrived (``RUN/stream/<topic>/
<partition>-<offset>.avro``, Avro containers of the messages' own bytes, no
re-encoding), so render reads their stamps and light curves from there
exactly as for ``--alerts``.

**Offsets.**  Auto-commit is off.  The select stage records a batch's rows
(and its bad messages, as failed rows) in the run, and only then
`KafkaReader.commit` commits the batch's offsets, synchronously.  A kill
between the two loses nothing (the batch is read again) and duplicates
nothing (ids already in the run are kept as they are).  The consumer group
defaults to one named after the run, so running the same command again goes
on where the last one stopped.

**Credentials** come only from the environment: ``KAFKA_SASL_USERNAME`` and
``KAFKA_SASL_PASSWORD`` (with ``KAFKA_SASL_MECHANISM``, default
``SCRAM-SHA-512``, and ``KAFKA_SECURITY_PROTOCOL``, default ``SASL_SSL``).
Other librdkafka settings may be given as ``config`` (``--kafka-config
KEY=VALUE``); secrets are refused there.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zooprep import interrupt
from zooprep.avro import AVRO_MAGIC, container_bytes
from zooprep.errors import InputError
from zooprep.files import atomic_write
from zooprep.readers.alerts import alert_rows, rubin_row
from zooprep.readers.base import ReadFailure
from zooprep.readers.brokers import CUTOUT_COLUMNS, BrokerObject, write_history

__all__ = [
    "Batch",
    "KafkaReader",
    "kafka_config",
    "message_label",
    "parse_config",
]

log = logging.getLogger(__name__)

#: Messages asked for per poll.
BATCH = 500
#: Seconds the idle clock waits for the group to assign partitions.
JOIN_WAIT = 60.0
#: Lasair's web site, where its cutouts are.
LASAIR_WEB = "https://lasair.lsst.ac.uk"
#: librdkafka settings that hold secrets: only from the environment.
_SECRET_KEYS = ("sasl.password", "ssl.key.password", "sasl.oauthbearer.client.secret")
_KINDS = ("Template", "Science", "Difference")


def parse_config(items: Sequence[str] | Mapping[str, Any] | None) -> dict[str, str]:
    """``KEY=VALUE`` librdkafka settings as a dict; secrets refused.

    Examples
    --------
    >>> parse_config(["session.timeout.ms=6000"])
    {'session.timeout.ms': '6000'}
    """
    if not items:
        return {}
    pairs: list[tuple[Any, Any]] = []
    if isinstance(items, Mapping):
        pairs = list(items.items())
    else:
        for item in items:
            key, sep, value = str(item).partition("=")
            if not sep or not key.strip():
                raise InputError(f"--kafka-config {item!r}: write KEY=VALUE")
            pairs.append((key.strip(), value.strip()))
    out: dict[str, str] = {}
    for key, value in pairs:
        if any(s in str(key).lower() for s in (*_SECRET_KEYS, "password", "secret")):
            raise InputError(
                f"--kafka-config {key}: secrets come only from the environment "
                "(KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD)"
            )
        out[str(key)] = str(value)
    return out


def kafka_config(
    bootstrap: str, group: str, extra: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The consumer's librdkafka settings: no auto-commit, SASL from the environment."""
    conf: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "enable.partition.eof": False,
        # A killed consumer's partitions go to the next one within seconds.
        "session.timeout.ms": 10_000,
    }
    user = os.environ.get("KAFKA_SASL_USERNAME")
    password = os.environ.get("KAFKA_SASL_PASSWORD")
    if user or password:
        if not (user and password):
            raise InputError(
                "set both KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD (or neither)"
            )
        conf["security.protocol"] = os.environ.get(
            "KAFKA_SECURITY_PROTOCOL", "SASL_SSL"
        )
        conf["sasl.mechanism"] = os.environ.get("KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
        conf["sasl.username"] = user
        conf["sasl.password"] = password
    conf.update(extra or {})
    return conf


def message_label(topic: str, partition: int, offset: int) -> str:
    """How a message is named in failures: ``kafka:<topic>/<partition>/<offset>``."""
    return f"kafka:{topic}/{partition}/{offset}"


@dataclass
class Batch:
    """What one poll gave: rows to add, bad messages, and the offsets to commit."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    failures: list[ReadFailure] = field(default_factory=list)
    #: (topic, partition) -> the next offset to read.
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    messages: int = 0


class _Bad(Exception):
    """A message that is not an alert; ``str()`` is the reason."""


class KafkaReader:
    """Alerts from one Kafka topic, read in batches with offsets committed late.

    Parameters
    ----------
    bootstrap : str
        ``HOST:PORT`` (comma-separated for several brokers).
    topic : str
        The topic.
    group : str or None
        Consumer group (default: named after the run, so a rerun resumes).
    max_messages : int or None
        Stop after this many messages.
    until_idle : float or None
        Stop when no message came for this many seconds (None: run until
        stopped by a signal).
    schema_registry : str or None
        A Confluent schema registry URL for schema ids (default:
        ``lsst-alert-packet``'s schemas).
    store : path
        The run directory (alerts, schemas and histories are written there).
    config : mapping, optional
        Extra librdkafka settings.
    lasair_web : str
        Where Lasair's cutouts are (``https://lasair.lsst.ac.uk``).
    instrument : str or None
        The camera named on the rows (``LSSTCam``).
    """

    kind = "kafka"
    id_column = "diaSourceId"

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        *,
        store: str | os.PathLike[str],
        group: str | None = None,
        max_messages: int | None = None,
        until_idle: float | None = None,
        schema_registry: str | None = None,
        config: Mapping[str, str] | None = None,
        lasair_web: str = LASAIR_WEB,
        instrument: str | None = None,
        batch: int = BATCH,
    ) -> None:
        if not bootstrap or not topic:
            raise InputError("--kafka needs HOST:PORT and --topic")
        self.bootstrap = bootstrap
        self.topic = topic
        self.store = Path(store)
        if group is None:
            where = str(self.store.resolve())
            digest = hashlib.sha256(where.encode()).hexdigest()[:8]
            group = f"zooprep-{self.store.name}-{digest}"
        #: The consumer group.
        self.group_id = group
        self.max_messages = max_messages
        self.until_idle = until_idle
        self.schema_registry = schema_registry.rstrip("/") if schema_registry else None
        self.extra = dict(config or {})
        self.lasair_web = lasair_web.rstrip("/")
        self.instrument: str | None = instrument or "LSSTCam"
        self.batch = max(1, int(batch))
        self.consumer: Any = None
        #: Whether the group has given this consumer its partitions.
        self.assigned = False
        self._schemas: dict[Any, Any] = {}
        self._topic_schema: Any = None
        self.messages = 0
        #: Why reading ended (``max``, ``idle``, ``stop``).
        self.ended: str | None = None

    # -- SourceReader (what select records about it) -------------------------------

    def describe(self) -> str:
        """Broker, topic and group (never credentials)."""
        return f"kafka {self.bootstrap} topic {self.topic} group {self.group_id}"

    @property
    def paths(self) -> Sequence[str]:
        """No files: bad messages come with each `Batch`."""
        return ()

    @property
    def failures(self) -> Sequence[ReadFailure]:
        """None outside batches: each `Batch` carries its bad messages."""
        return ()

    def group(self, row: Mapping[str, Any]) -> str | None:
        """The stream file of a row (its stamps are read together), or its object."""
        path = row.get("_alert_path")
        if path is not None:
            return str(path)
        oid = row.get("diaObjectId")
        return None if oid is None else f"lasair:{oid}"

    # -- consuming ---------------------------------------------------------------------

    def open(self) -> KafkaReader:
        """Connect and subscribe (raises InputError for a missing extra)."""
        try:
            from confluent_kafka import Consumer, KafkaException
        except ImportError:
            raise InputError(
                "reading Kafka needs confluent-kafka: pip install 'zooprep[kafka]'"
            ) from None
        try:
            self.consumer = Consumer(
                kafka_config(self.bootstrap, self.group_id, self.extra)
            )
        except KafkaException as exc:
            raise InputError(f"--kafka {self.bootstrap}: {exc}") from None
        self.assigned = False

        def on_assign(consumer: Any, partitions: Any) -> None:
            self.assigned = True

        self.consumer.subscribe([self.topic], on_assign=on_assign)
        return self

    def close(self) -> None:
        """Leave the group (the partitions go to the next consumer at once)."""
        if self.consumer is not None:
            self.consumer.close()
            self.consumer = None

    def batches(self) -> Iterator[Batch]:
        """Batches of decoded messages until ``max``, idle time or a stop.

        Commit each with `commit` after recording it.
        """
        from confluent_kafka import KafkaError

        assert self.consumer is not None, "open() first"
        # The idle time counts from when the group gave this consumer its
        # partitions (joining a group takes seconds), or from the start when
        # that never happens within a minute.
        started = idle_since = time.monotonic()
        while True:
            if interrupt.requested():
                self.ended = "stop"
                return
            if self.max_messages is not None and self.messages >= self.max_messages:
                self.ended = "max"
                return
            want = self.batch
            if self.max_messages is not None:
                want = min(want, self.max_messages - self.messages)
            messages = self.consumer.consume(num_messages=want, timeout=1.0)
            good = []
            for m in messages:
                err = m.error()
                if err is None:
                    good.append(m)
                elif err.code() == KafkaError._PARTITION_EOF:
                    continue
                elif (
                    err.fatal()
                    or err.code()
                    in (
                        KafkaError.UNKNOWN_TOPIC_OR_PART,
                        KafkaError._ALL_BROKERS_DOWN,
                    )
                    or "SASL" in str(err)
                    or "Authentication" in str(err)
                ):
                    raise InputError(f"--kafka {self.bootstrap}: {err.str()}")
                else:
                    log.warning("kafka: %s", err.str())
            if not good:
                now = time.monotonic()
                if not self.assigned and now - started < JOIN_WAIT:
                    idle_since = now
                if self.until_idle is not None and now - idle_since >= self.until_idle:
                    self.ended = "idle"
                    return
                continue
            idle_since = time.monotonic()
            self.messages += len(good)
            yield self._decode(good)

    def commit(self, batch: Batch) -> None:
        """Commit a recorded batch's offsets (synchronously)."""
        from confluent_kafka import TopicPartition

        if not batch.offsets or self.consumer is None:
            return
        self.consumer.commit(
            offsets=[TopicPartition(t, p, o) for (t, p), o in batch.offsets.items()],
            asynchronous=False,
        )

    # -- decoding ----------------------------------------------------------------------

    def _decode(self, messages: list[Any]) -> Batch:
        """Rows of a batch; alerts written to the run first (one file per schema)."""
        batch = Batch(messages=len(messages))
        groups: dict[str, tuple[Any, list[tuple[Any, bytes, dict[str, Any]]]]] = {}
        for m in messages:
            key = (m.topic(), m.partition())
            batch.offsets[key] = max(batch.offsets.get(key, 0), m.offset() + 1)
            label = message_label(m.topic(), m.partition(), m.offset())
            try:
                kind, schema, datum, record = self._message(m)
            except _Bad as exc:
                batch.failures.append(ReadFailure(label, f"{label}: {exc}", "rubin"))
                continue
            if kind == "json":
                try:
                    batch.rows.extend(self._lasair_rows(record, label))
                except _Bad as exc:
                    batch.failures.append(ReadFailure(label, f"{label}: {exc}"))
                continue
            if kind == "container":
                path = self._write(m, None, [datum])
                batch.rows.extend(
                    self._tag(r, label)
                    for r in alert_rows(path, instrument=self.instrument)
                )
                continue
            text = schema if isinstance(schema, str) else json.dumps(schema)
            groups.setdefault(text, (schema, []))[1].append((m, datum, record))
        for text, (_, items) in groups.items():
            path = self._write(items[0][0], text, [d for _, d, _ in items])
            for index, (m, _, record) in enumerate(items):
                label = message_label(m.topic(), m.partition(), m.offset())
                if not isinstance(record.get("diaSource"), Mapping):
                    batch.failures.append(
                        ReadFailure(label, f"{label}: an Avro record with no diaSource")
                    )
                    continue
                row = rubin_row(record, self.instrument or "LSSTCam")
                row["_alert_path"] = str(path)
                row["_alert_index"] = index
                row["_alert_format"] = "rubin"
                batch.rows.append(self._tag(row, label))
        return batch

    @staticmethod
    def _tag(row: dict[str, Any], label: str) -> dict[str, Any]:
        row["_kafka"] = label.removeprefix("kafka:")
        return row

    def _write(self, m: Any, schema: str | None, datums: list[bytes]) -> Path:
        """Write alerts into the run, atomically; the file's path."""
        folder = (
            self.store
            / "stream"
            / "".join(c if c.isalnum() or c in "-_." else "_" for c in m.topic())
        )
        folder.mkdir(parents=True, exist_ok=True)
        suffix = (
            ""
            if schema is None
            else f"-{hashlib.sha256(schema.encode()).hexdigest()[:6]}"
        )
        path = folder / f"{m.partition()}-{m.offset()}{suffix}.avro"
        data = datums[0] if schema is None else container_bytes(schema, datums)
        atomic_write(path, data)
        return path

    def _message(self, m: Any) -> tuple[str, Any, bytes, dict[str, Any]]:
        """``(kind, writer schema, datum bytes, decoded record)`` of one message."""
        import fastavro

        value = m.value()
        if not value:
            raise _Bad("empty message")
        value = bytes(value)
        if value[:4] == AVRO_MAGIC:
            try:
                records = list(fastavro.reader(io.BytesIO(value)))
            except Exception as exc:  # fastavro raises many types on damage
                raise _Bad(f"damaged Avro container ({type(exc).__name__})") from None
            if not records or not isinstance(records[0], dict):
                raise _Bad("Avro container with no records")
            return "container", None, value, records[0]
        if value[:1] in (b"{", b"["):
            try:
                doc = json.loads(value)
            except ValueError:
                raise _Bad("damaged JSON") from None
            if not isinstance(doc, dict):
                raise _Bad("JSON that is not an object")
            return "json", None, value, doc
        key_schema = _json_schema(m.key())
        if key_schema is not None:  # Fink: the writer schema is the key
            schema, datum = key_schema, value
        elif value[0] == 0 and len(value) > 5:  # Confluent wire format
            schema_id = int.from_bytes(value[1:5], "big")
            schema = self._schema_by_id(schema_id)
            datum = value[5:]
        else:
            schema = self._fink_schema()
            datum = value
        try:
            record = fastavro.schemaless_reader(io.BytesIO(datum), self._parsed(schema))
        except Exception as exc:  # fastavro raises many types on damage
            detail = type(exc).__name__
            raise _Bad(f"cannot decode the Avro payload ({detail})") from None
        if not isinstance(record, dict):
            raise _Bad("the Avro payload is not a record")
        return "avro", schema, datum, record

    def _parsed(self, schema: Any) -> Any:
        import fastavro

        key = schema if isinstance(schema, str) else json.dumps(schema, sort_keys=True)
        if key not in self._schemas:
            doc = json.loads(schema) if isinstance(schema, str) else schema
            self._schemas[key] = fastavro.parse_schema(doc)
        return self._schemas[key]

    def _schema_by_id(self, schema_id: int) -> str:
        """The writer schema (JSON text) of a Confluent schema id, kept in the run."""
        kept = self.store / "stream" / "schemas" / f"{schema_id}.avsc"
        if kept.is_file():
            return kept.read_text(encoding="utf-8")
        if self.schema_registry:
            text = self._registry(schema_id)
        else:
            text = _packet_schema(schema_id)
        kept.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(kept, text.encode("utf-8"))
        return text

    def _registry(self, schema_id: int) -> str:
        import requests

        url = f"{self.schema_registry}/schemas/ids/{schema_id}"
        try:
            answer = requests.get(url, timeout=30)
        except requests.RequestException as exc:
            raise InputError(
                f"--schema-registry {self.schema_registry}: {type(exc).__name__}"
            ) from None
        if answer.status_code == 404:
            raise _Bad(f"unknown schema id {schema_id} (not in {self.schema_registry})")
        if answer.status_code >= 400:
            raise InputError(
                f"--schema-registry {self.schema_registry}: HTTP {answer.status_code}"
            )
        try:
            return str(answer.json()["schema"])
        except (ValueError, KeyError, TypeError):
            raise InputError(
                f"--schema-registry {self.schema_registry}: answer has no schema"
            ) from None

    def _fink_schema(self) -> Any:
        """The schema Fink published on ``<topic>_schema`` (for keyless messages)."""
        if self._topic_schema is None:
            self._topic_schema = self._schema_topic() or False
        if self._topic_schema is False:
            raise _Bad(
                "neither a Confluent payload (byte 0 is not 0) nor a message whose "
                f"key is its schema, and {self.topic}_schema has none"
            )
        return self._topic_schema

    def _schema_topic(self) -> Any:
        from confluent_kafka import Consumer

        conf = kafka_config(self.bootstrap, f"{self.group_id}-schema", self.extra)
        c = Consumer(conf)
        try:
            c.subscribe([f"{self.topic}_schema"])
            end = time.monotonic() + 15
            while time.monotonic() < end:
                m = c.poll(1.0)
                if m is None or m.error():
                    continue
                try:
                    return json.loads(bytes(m.key() or m.value() or b""))
                except ValueError:
                    return None
            return None
        finally:
            c.close()

    def _lasair_rows(self, doc: Mapping[str, Any], label: str) -> list[dict[str, Any]]:
        """The row of a Lasair filter message: its newest diaSource."""
        oid = doc.get("diaObjectId") or doc.get("objectId")
        found = doc.get("alert")
        alert: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
        sources: list[Mapping[str, Any]] = [
            s for s in alert.get("diaSourcesList") or [] if isinstance(s, Mapping)
        ]
        forced: list[Mapping[str, Any]] = [
            f for f in alert.get("diaForcedSourcesList") or [] if isinstance(f, Mapping)
        ]
        newest: dict[str, Any]
        if sources:
            latest: Mapping[str, Any] = max(sources, key=_mjd)
            newest = dict(latest)
        elif doc.get("diaSourceId") is not None:
            newest = {k: v for k, v in doc.items() if k != "alert"}
        else:
            raise _Bad(
                f"Lasair message for object {oid} has no diaSourceId (select it in "
                "the filter, or send the alert with it)"
            )
        try:
            sid = int(newest["diaSourceId"])
            oid = int(oid if oid is not None else newest["diaObjectId"])
        except (KeyError, TypeError, ValueError):
            raise _Bad(
                "Lasair message with no valid diaSourceId / diaObjectId"
            ) from None
        row = {
            k: v
            for k, v in {**doc, **newest}.items()
            if v is None or isinstance(v, bool | int | float | str)
        }
        row.update(diaSourceId=sid, diaObjectId=oid, _broker="lasair")
        row.setdefault("instrument", self.instrument)
        for column, kind in zip(CUTOUT_COLUMNS, _KINDS, strict=True):
            row[column] = f"{self.lasair_web}/fits/{sid}_cutout{kind}/"
        all_sources = sources or [newest]
        path = write_history(
            self.store / "history",
            "lasair",
            BrokerObject(
                oid, [dict(s) for s in all_sources], [dict(f) for f in forced], {}
            ),
        )
        row["_history_path"] = str(path)
        return [self._tag(row, label)]


def _packet_schema(schema_id: int) -> str:
    """The ``lsst-alert-packet`` schema of an id (``major * 100 + minor``)."""
    try:
        from lsst.alert.packet import Schema, get_schema_path
    except ImportError:
        raise InputError(
            "Rubin alerts need their schemas: pip install 'zooprep[kafka]' "
            "(lsst-alert-packet), or give --schema-registry URL"
        ) from None
    major, minor = divmod(schema_id, 100)
    path = Path(get_schema_path(major, minor)) / f"lsst.v{major}_{minor}.alert.avsc"
    if not path.is_file():
        raise _Bad(
            f"unknown schema id {schema_id} (lsst-alert-packet has no lsst.v{major}_"
            f"{minor}; give --schema-registry URL)"
        )
    return json.dumps(Schema.from_file(str(path)).definition)


def _mjd(entry: Mapping[str, Any]) -> float:
    """The time of a history entry (0 when it has none)."""
    return float(entry.get("midpointMjdTai") or 0)


def _json_schema(key: Any) -> Any:
    """A message key that is an Avro schema (Fink's convention), else None."""
    if not key or bytes(key[:1]) not in (b"{", b"["):
        return None
    try:
        doc = json.loads(bytes(key))
    except ValueError:
        return None
    if isinstance(doc, dict) and doc.get("type") == "record":
        return doc
    return None
