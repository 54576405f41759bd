"""Object stores on 127.0.0.1 for the remote-image tests and benchmarks.

* `RangeServer`: a threaded ``http.server`` serving a directory, honouring
  ``Range: bytes=a-b``, counting the bytes of file data it sends, with an
  optional latency per request and three failure modes: paths that answer
  403, paths whose connection is dropped half-way through the body, and
  "signed" URLs (``?expires=UNIX&signature=...``) refused with 403 once
  expired.
* `S3Server`: moto's S3 in server mode (werkzeug, threaded) behind a
  middleware that counts the body bytes of ``GET`` answers and can add latency.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

#: The signature the range server accepts on signed URLs (a stand-in secret),
#: percent-encoded as real ones are: it must reach the server byte for byte.
SIGNATURE = "s3cr3t%2FSig%2B"


class _Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.bytes = 0
        self.requests = 0

    def add(self, n: int) -> None:
        with self.lock:
            self.bytes += n

    def hit(self) -> None:
        with self.lock:
            self.requests += 1

    def reset(self) -> None:
        with self.lock:
            self.bytes = 0
            self.requests = 0


class RangeServer:
    """Serve ``root`` over HTTP on 127.0.0.1 with ``Range`` support.

    Attributes ``forbidden`` and ``drop`` are sets of URL paths (e.g.
    ``"/a/b.fits"``) that answer 403 or lose their connection mid-body;
    ``flaky`` maps paths to a number of 503 answers given before they work;
    ``hang`` maps paths to a number of requests that get no answer for
    ``hang_seconds`` (then are answered, as a slow server would).
    """

    def __init__(
        self, root: Path, latency: float = 0.0, bandwidth: float | None = None
    ) -> None:
        self.root = Path(root)
        self.latency = latency
        self.bandwidth = bandwidth  # bytes per second per connection, or None
        self.stats = _Stats()
        self.forbidden: set[str] = set()
        self.drop: set[str] = set()
        self.flaky: dict[str, int] = {}  # path -> how many 503s before it works
        self.hang: dict[str, int] = {}  # path -> how many requests hang
        self.hang_seconds = 60.0
        self._stopping = threading.Event()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_HEAD(self) -> None:
                self._serve(body=False)

            def do_GET(self) -> None:
                self._serve(body=True)

            def _serve(self, body: bool) -> None:
                server.stats.hit()
                if server.latency:
                    time.sleep(server.latency)
                url = urllib.parse.urlsplit(self.path)
                query = urllib.parse.parse_qs(url.query)
                if url.path in server.forbidden:
                    return self._error(403)
                with server.stats.lock:
                    left = server.flaky.get(url.path, 0)
                    if left:
                        server.flaky[url.path] = left - 1
                if left:
                    return self._error(503)
                with server.stats.lock:
                    hangs = server.hang.get(url.path, 0)
                    if hangs:
                        server.hang[url.path] = hangs - 1
                if hangs:
                    server._stopping.wait(server.hang_seconds)
                if "expires" in query:
                    ok = f"signature={SIGNATURE}" in url.query.split("&")
                    if not ok or float(query["expires"][0]) < time.time():
                        return self._error(403)
                path = server.root / urllib.parse.unquote(url.path).lstrip("/")
                if not path.is_file():
                    return self._error(404)
                size = path.stat().st_size
                start, end, status = 0, size - 1, 200
                m = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", ""))
                if m:
                    if m.group(1):
                        start = int(m.group(1))
                        if m.group(2):
                            end = min(int(m.group(2)), size - 1)
                    else:
                        start = max(size - int(m.group(2)), 0)
                    if start >= size:
                        return self._error(416)
                    status = 206
                length = end - start + 1
                self.send_response(status)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Length", str(length))
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
                self.end_headers()
                if not body:
                    return
                with open(path, "rb") as f:
                    f.seek(start)
                    data = f.read(length)
                if url.path in server.drop:
                    data = data[: max(len(data) // 2, 1)]
                    self.wfile.write(data)
                    server.stats.add(len(data))
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                if server.bandwidth:
                    time.sleep(len(data) / server.bandwidth)
                self.wfile.write(data)
                server.stats.add(len(data))

            def _error(self, code: int) -> None:
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def signed(self, path: str, expires_in: float) -> str:
        """A signed URL of ``path`` valid for ``expires_in`` seconds."""
        expires = int(time.time() + expires_in)
        return f"{self.url}/{path.lstrip('/')}?expires={expires}&signature={SIGNATURE}"

    def __enter__(self) -> RangeServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()  # wake hung requests
        self.httpd.shutdown()
        self.httpd.server_close()


class _Counting:
    """WSGI middleware: count body bytes of GET answers, add latency."""

    def __init__(self, app: Callable[..., Iterable[bytes]], server: S3Server) -> None:
        self.app = app
        self.server = server

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path.startswith("/_zooprep/"):  # control of a server in another process
            return self._control(path, start_response)
        self.server.stats.hit()
        if self.server.latency:
            time.sleep(self.server.latency)
        body = self.app(environ, start_response)
        if environ.get("REQUEST_METHOD") != "GET":
            return body
        chunks = list(body)
        self.server.stats.add(sum(len(c) for c in chunks))
        return chunks

    def _control(self, path: str, start_response: Callable[..., Any]) -> list[bytes]:
        stats = self.server.stats
        if path == "/_zooprep/reset":
            stats.reset()
        elif path.startswith("/_zooprep/latency/"):
            self.server.latency = float(path.rsplit("/", 1)[1])
        body = json.dumps({"bytes": stats.bytes, "requests": stats.requests}).encode()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body]


def s3_environ(url: str) -> dict[str, str]:
    """Environment variables that point botocore/s3fs at the S3 server at ``url``."""
    return {
        "AWS_ACCESS_KEY_ID": "testing-key-id",
        "AWS_SECRET_ACCESS_KEY": "testing-secret-key",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": url,
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def s3_client(url: str) -> Any:
    """A boto3 client of the S3 server at ``url``."""
    import boto3

    env = s3_environ(url)
    return boto3.client(
        "s3",
        endpoint_url=url,
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_DEFAULT_REGION"],
    )


class S3Server:
    """moto's S3 on 127.0.0.1 with byte counting; sets fake credentials in env."""

    def __init__(self, latency: float = 0.0) -> None:
        from moto.moto_server.threaded_moto_server import MotoRequestHandler
        from moto.server import DomainDispatcherApplication, create_backend_app
        from werkzeug.serving import make_server

        self.latency = latency
        self.stats = _Stats()
        app = DomainDispatcherApplication(create_backend_app)
        self.httpd = make_server(
            "127.0.0.1",
            0,
            _Counting(app, self),
            threaded=True,
            request_handler=MotoRequestHandler,
        )
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def environ(self) -> dict[str, str]:
        """Environment variables that point botocore/s3fs at this server."""
        return s3_environ(self.url)

    def client(self) -> Any:
        """A boto3 S3 client of this server."""
        return s3_client(self.url)

    def upload_tree(self, bucket: str, root: Path) -> None:
        """Create ``bucket`` and put every file under ``root`` at its relative key."""
        client = self.client()
        client.create_bucket(Bucket=bucket)
        for dirpath, _, names in os.walk(root):
            for name in names:
                path = Path(dirpath) / name
                key = path.relative_to(root).as_posix()
                client.put_object(Bucket=bucket, Key=key, Body=path.read_bytes())

    def __enter__(self) -> S3Server:
        import urllib.request

        self._thread.start()
        # moto keeps its buckets per process: start each server empty
        request = urllib.request.Request(f"{self.url}/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=10) as answer:
            answer.read()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class RemoteStats:
    """The `_Stats` of an `S3Server` running in another process (``python -m``)."""

    def __init__(self, url: str) -> None:
        self.url = url

    def _get(self, what: str) -> dict[str, int]:
        import urllib.request

        with urllib.request.urlopen(f"{self.url}/_zooprep/{what}", timeout=30) as r:
            return json.loads(r.read())  # type: ignore[no-any-return]

    @property
    def bytes(self) -> int:
        return self._get("stats")["bytes"]

    @property
    def requests(self) -> int:
        return self._get("stats")["requests"]

    def reset(self) -> None:
        self._get("reset")

    def latency(self, seconds: float) -> None:
        self._get(f"latency/{seconds}")


def main() -> None:
    """``python -m tests.objectstores [--latency S]``: an S3 server until killed.

    Prints its URL on the first line of stdout.
    """
    import argparse
    import sys

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--latency", type=float, default=0.0)
    args = ap.parse_args()
    with S3Server(latency=args.latency) as server:
        sys.stdout.write(server.url + "\n")
        sys.stdout.flush()
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
