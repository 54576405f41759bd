"""Selecting sources from a Kafka alert stream, against a real Kafka-protocol broker.

The broker is Tansu (``tests/plugins/kafka.py``) on 127.0.0.1; messages are
the real Rubin alerts of ``tests/data`` as Rubin (Confluent wire format),
Fink (schema in the key) and Lasair (JSON) send them, produced and consumed
with confluent-kafka.
"""

from __future__ import annotations

import copy
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("confluent_kafka")
pytest.importorskip("lsst.alert.packet")

import zooprep
from tests.brokers.messages import (
    confluent,
    fink_messages,
    lasair_messages,
    lsst_schema,
    rubin_messages,
    rubin_raw,
    rubin_record,
)
from tests.brokers.stamps import rubin_alerts
from tests.classifier_model import parse_strict, series_plot_errors
from tests.plugins.kafka import FAST_GROUP, KafkaBroker
from zooprep.run import Run

pytestmark = pytest.mark.slow


def _topic(kafka: KafkaBroker, partitions: int = 1) -> str:
    return kafka.create_topic(f"t-{uuid.uuid4().hex[:10]}", partitions)


def _rows(run: Path) -> dict[int, Any]:
    with Run.open(run, lock=False) as r:
        return {s.id: s for s in r.iter_sources()}


def test_select_reads_rubin_alerts_records_bad_messages_and_commits_after(
    kafka_broker: KafkaBroker, tmp_path: Path
) -> None:
    """Rubin alerts (two schema versions) become sources; each bad message
    becomes a failed row with its reason, and every offset is committed."""
    topic = _topic(kafka_broker)
    good = rubin_messages()
    bad = [
        b"this is not an alert",
        b"\x00\x00\x00\x27\x0f" + good[0][5:],  # schema id 9999: unknown
        good[0][:5] + b"\x02\x04",  # a truncated payload
        b"{not json",
    ]
    messages = [*good[:8], *bad, rubin_raw(), *good[8:]]
    kafka_broker.produce(topic, messages)
    run = tmp_path / "run"
    result = zooprep.select(
        run,
        kafka=kafka_broker.bootstrap,
        topic=topic,
        group="g-select",
        until_idle=3,
        kafka_config=FAST_GROUP,
    )
    ids = sorted(int(r["diaSource"]["diaSourceId"]) for r in rubin_alerts())
    rows = _rows(run)
    selected = sorted(i for i, s in rows.items() if s.status == "selected")
    assert selected == sorted([*ids, 7912941781254298])
    assert result.selected == len(ids) + 1
    reasons = sorted(s.reason for s in rows.values() if s.status == "failed")
    assert len(reasons) == 4
    assert any("unknown schema id 9999" in r for r in reasons)
    assert any("cannot decode the Avro payload" in r for r in reasons)
    assert any("damaged JSON" in r for r in reasons)
    assert all(r.startswith(f"kafka:{topic}/0/") for r in reasons)
    assert kafka_broker.committed(topic, "g-select") == [len(messages)]
    # The raw payload of schema 900 and the v10 alerts were kept as Avro
    # containers in the run: render cuts their stamps from there.
    done = zooprep.render(run, layout="triplet", lightcurve="flux")
    assert done.rendered == len(ids) + 1
    with Run.open(run, lock=False) as r:
        src = r.get(ids[-1])
        assert src is not None
        assert len(src.files) == 2
        assert all((run / f).stat().st_size > 1000 for f in src.files)


def test_select_reads_fink_and_lasair_messages(
    kafka_broker: KafkaBroker, tmp_path: Path, broker_standin: Any
) -> None:
    """Fink's Avro (schema in the key) and Lasair's JSON (cutouts at Lasair)."""
    fink = _topic(kafka_broker)
    kafka_broker.produce(fink, fink_messages())
    run = tmp_path / "fink"
    zooprep.select(run, kafka=kafka_broker.bootstrap, topic=fink, until_idle=3,
                   kafka_config=FAST_GROUP)  # fmt: skip
    want = {int(r["diaSource"]["diaSourceId"]) for r in rubin_alerts()[10:]}
    assert set(_rows(run)) == want

    lasair = _topic(kafka_broker)
    kafka_broker.produce(lasair, lasair_messages())
    run = tmp_path / "lasair"
    zooprep.select(run, kafka=kafka_broker.bootstrap, topic=lasair, until_idle=3,
                   kafka_config=FAST_GROUP, lasair_web=broker_standin.url)  # fmt: skip
    rows = _rows(run)
    objects = {int(s.row["diaObjectId"]) for s in rows.values()}
    assert objects == set(broker_standin.objects)
    done = zooprep.render(run, lightcurve="mag", lightcurve_json=True)
    assert done.rendered == len(rows)
    assert not done.failed
    for src in _rows(run).values():  # the light curves are charts the classifier draws
        (chart,) = [f for f in src.files if f.endswith(".json")]
        assert series_plot_errors(parse_strict((run / chart).read_bytes())) == []
    assert broker_standin.count("/fits/") == 3 * len(rows)
    assert broker_standin.count("/api/") == 0  # no API call: nothing rate-limited


def _numbered(n: int) -> list[bytes]:
    """``n`` Rubin alerts (the small real ones, renumbered) in the wire format."""
    schema = lsst_schema(10, 0)
    base = [rubin_record(r) for r in rubin_alerts()[:10]]
    out = []
    for i in range(n):
        record = copy.deepcopy(base[i % len(base)])
        record["diaSource"]["diaSourceId"] = 10**15 + i
        record["diaSourceId"] = 10**15 + i
        out.append(confluent(1000, record, schema))
    return out


def test_select_killed_mid_stream_loses_nothing_and_duplicates_nothing(
    kafka_broker: KafkaBroker, tmp_path: Path
) -> None:
    """kill -9 while batches are being recorded and committed, three times,
    then run to the end: every message is a source exactly once."""
    n = 600
    topic = _topic(kafka_broker, partitions=2)
    kafka_broker.produce(topic, _numbered(n))
    run = tmp_path / "run"
    code = (
        "import sys, zooprep\n"
        "from zooprep.readers.kafka import KafkaReader\n"
        "reader = KafkaReader(sys.argv[1], sys.argv[2], store=sys.argv[3],"
        " group='g-kill', until_idle=4, batch=25,"
        f" config=dict(kv.split('=') for kv in {list(FAST_GROUP)!r}))\n"
        "zooprep.select(sys.argv[3], reader=reader)\n"
    )
    cmd = [sys.executable, "-c", code, kafka_broker.bootstrap, topic, str(run)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    kills = 0
    for target in (60, 250, 420):
        proc = subprocess.Popen(cmd, env=env, stderr=subprocess.DEVNULL)
        end = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < end:
            if _count(run) >= target:
                proc.send_signal(signal.SIGKILL)
                kills += 1
                break
            time.sleep(0.02)
        proc.wait(60)
    assert kills == 3
    assert 0 < _count(run) < n
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = _rows(run)
    assert sorted(rows) == [10**15 + i for i in range(n)]
    assert all(s.status == "selected" for s in rows.values())
    assert sum(kafka_broker.committed(topic, "g-kill", partitions=2)) == n


def _count(run: Path) -> int:
    state = run / "state.sqlite"
    if not state.is_file():
        return 0
    try:
        with sqlite3.connect(f"file:{state}?mode=ro", uri=True, timeout=1) as db:
            return int(db.execute("SELECT COUNT(*) FROM sources").fetchone()[0])
    except sqlite3.Error:
        return 0


def test_stream_select_stops_cleanly_on_sigterm(
    kafka_broker: KafkaBroker, tmp_path: Path
) -> None:
    """Without --max or --until-idle the select runs until told to stop; SIGTERM
    ends it with what it recorded committed ("interrupted ... continue")."""
    topic = _topic(kafka_broker)
    kafka_broker.produce(topic, rubin_messages()[:5])
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "zooprep", "select", str(run), "--kafka",
           kafka_broker.bootstrap, "--topic", topic, "--group", "g-term",
           *[a for kv in FAST_GROUP for a in ("--kafka-config", kv)]]  # fmt: skip
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    end = time.monotonic() + 60
    while _count(run) < 5 and time.monotonic() < end:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "interrupted: 5 done; run the same command to continue" in err
    assert kafka_broker.committed(topic, "g-term") == [5]


def test_stream_select_refuses_what_does_not_apply(tmp_path: Path) -> None:
    """--sample on a stream, --topic without --kafka, a secret in --kafka-config."""
    from zooprep.errors import InputError

    with pytest.raises(InputError, match="use --max N"):
        zooprep.select(tmp_path / "a", kafka="127.0.0.1:1", topic="t", sample=5)
    with pytest.raises(InputError, match="--topic applies to --kafka only"):
        zooprep.select(tmp_path / "b", alerts="x.avro", topic="t")
    with pytest.raises(InputError, match="secrets come only from the environment"):
        zooprep.select(tmp_path / "c", kafka="127.0.0.1:1", topic="t",
                       kafka_config=["sasl.password=hunter2"])  # fmt: skip


def test_schemas_from_a_registry_and_fink_schema_topic_and_a_where_filter(
    kafka_broker: KafkaBroker, tmp_path: Path, broker_standin: Any
) -> None:
    """--schema-registry gives the writer schemas of schema ids (an unknown id
    fails its message); keyless Fink messages take the schema published on
    <topic>_schema; --where keeps only the rows it passes."""
    broker_standin.schemas[1000] = lsst_schema(10, 0)
    topic = _topic(kafka_broker)
    good = rubin_messages()[:6]
    kafka_broker.produce(topic, [*good, b"\x00\x00\x00\x03\xe9" + good[0][5:]])
    run = tmp_path / "registry"
    zooprep.select(run, kafka=kafka_broker.bootstrap, topic=topic, until_idle=3,
                   kafka_config=FAST_GROUP, schema_registry=broker_standin.url,
                   where="reliability > 0.5")  # fmt: skip
    rows = _rows(run)
    kept = {
        int(r["diaSource"]["diaSourceId"])
        for r in rubin_alerts()[:6]
        if (r["diaSource"]["reliability"] or 0) > 0.5
    }
    assert {i for i, s in rows.items() if s.status == "selected"} == kept
    (bad,) = [s for s in rows.values() if s.status == "failed"]
    assert f"unknown schema id 1001 (not in {broker_standin.url})" in bad.reason
    assert broker_standin.count("/schemas/ids/") == 2  # each id asked once

    fink = _topic(kafka_broker)
    schema, messages = fink_messages()[0][0], fink_messages()
    kafka_broker.create_topic(f"{fink}_schema")
    kafka_broker.produce(f"{fink}_schema", [(schema, b"")])
    kafka_broker.produce(fink, [value for _, value in messages])
    run = tmp_path / "fink"
    zooprep.select(run, kafka=kafka_broker.bootstrap, topic=fink, until_idle=3,
                   kafka_config=FAST_GROUP)  # fmt: skip
    assert len(_rows(run)) == len(messages)


def test_sasl_credentials_come_from_the_environment_only(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """KAFKA_SASL_USERNAME / _PASSWORD reach librdkafka; the run never holds them."""
    from zooprep.errors import InputError
    from zooprep.readers.kafka import KafkaReader, kafka_config

    monkeypatch.setenv("KAFKA_SASL_USERNAME", "zoo")
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", "s3cret-pw")
    conf = kafka_config("h:9092", "g")
    assert conf["sasl.username"] == "zoo"
    assert conf["sasl.password"] == "s3cret-pw"
    assert conf["sasl.mechanism"] == "SCRAM-SHA-512"
    assert conf["security.protocol"] == "SASL_SSL"
    assert conf["enable.auto.commit"] is False
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    assert kafka_config("h:9092", "g")["security.protocol"] == "SASL_PLAINTEXT"
    reader = KafkaReader("h:9092", "t", store=tmp_path)
    assert "s3cret" not in reader.describe()
    monkeypatch.delenv("KAFKA_SASL_PASSWORD")
    with pytest.raises(InputError, match="set both KAFKA_SASL_USERNAME"):
        kafka_config("h:9092", "g")


def test_the_same_stream_select_with_a_larger_max_reads_on(
    kafka_broker: KafkaBroker, tmp_path: Path
) -> None:
    """--max 4 then --max 10 on the same run: the second goes on from offset 4."""
    topic = _topic(kafka_broker)
    kafka_broker.produce(topic, rubin_messages()[:10])
    run = tmp_path / "run"
    common = {"kafka": kafka_broker.bootstrap, "topic": topic, "group": "g-max",
              "kafka_config": FAST_GROUP}  # fmt: skip
    first = zooprep.select(run, max=4, **common)
    assert first.selected == 4
    assert kafka_broker.committed(topic, "g-max") == [4]
    second = zooprep.select(run, max=6, until_idle=3, **common)
    assert second.selected == 6
    assert len(_rows(run)) == 10
    assert kafka_broker.committed(topic, "g-max") == [10]
