"""Load a run's subjects into Zooniverse's own classifier and report what it draws.

A maintainer's check, run by hand (not by CI), so that the next change to the
classifier's viewers upstream is caught::

    python tools/classifier_check.py RUN --monorepo ~/src/front-end-monorepo \\
        [--install] [--subject-viewer dataImage] [--limit 20]

It needs a local checkout of zooniverse/front-end-monorepo, Node.js 20 with
npm, and Chromium (``/usr/bin/chromium``).  What it does:

1. ``--install`` installs lib-classifier with the monorepo's pnpm (run by
   ``npx``: ``pnpm install --filter @zooniverse/classifier...``; several of
   the ``@zooniverse/*`` packages it imports exist only in the workspace)
   and builds the two of them that need a build (react-components,
   subject-viewers).  Needed once per checkout.
2. It writes a small page, ``packages/lib-classifier/zooprep-check/``, that
   builds the classifier's real stores (the test ``mockStore`` of
   lib-classifier: ``RootStore`` with a project, a workflow whose
   ``configuration`` is the one given here, and the subject) and renders the
   classifier's ``SubjectViewer`` for one subject, and builds it with the
   package's own webpack configuration (``webpack.dev.js``).
3. It serves that page and the run's files (the manifest's rows, in order,
   with the content types upload would declare) on 127.0.0.1, loads each
   subject in headless Chromium (``--headless --no-sandbox --disable-gpu
   --disable-background-networking``) and reads what was drawn.
4. It prints, per subject: the files, the viewer the classifier chose, the
   images drawn (with their pixel sizes, and the box they are drawn in),
   the charts and their points, and any error text or exception; then
   compares each with what `zooprep.viewers.draws` predicts and exits 1 if
   they differ (the rules in ``zooprep/viewers.py`` need updating).

Nothing here contacts a Zooniverse server: the page's stores are the
classifier's own test stores, and every file comes from the local server.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import html
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--no-first-run",
    "--disable-extensions",
    "--disable-component-update",
    "--hide-scrollbars",
    # Only the local server resolves: the flipbook's thumbnails (and anything
    # else) pointing at a Zooniverse host are not fetched.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
)

#: The page: the classifier's stores and SubjectViewer for one subject.
HARNESS_JSX = r"""
import { Box, Grommet } from 'grommet'
import zooTheme from '@zooniverse/grommet-theme'
import { Provider } from 'mobx-react'
import { createRoot } from 'react-dom/client'
import mockStore from '@test/mockStore'
import { SubjectFactory, WorkflowFactory } from '@test/factories'
import SubjectViewer from '@components/Classifier/components/SubjectViewer'

const problems = []
const keep = (kind) => (...args) => problems.push(`${kind}: ${args.map(String).join(' ')}`.slice(0, 300))
const consoleError = console.error
console.error = (...args) => { keep('console.error')(...args); consoleError(...args) }
window.addEventListener('error', event => keep('exception')(event.message))
window.addEventListener('unhandledrejection', event => keep('rejection')(event.reason))

function report(data) {
  const pre = document.createElement('pre')
  pre.id = 'zooprep-report'
  pre.textContent = JSON.stringify({ ...data, problems })
  document.body.appendChild(pre)
}

function drawn(root) {
  const box = el => { const r = el.getBoundingClientRect(); return [Math.round(r.width), Math.round(r.height)] }
  const images = [...root.querySelectorAll('svg image')].map(el => ({
    href: el.getAttribute('href') || el.getAttribute('xlink:href'),
    width: Number(el.getAttribute('width')) || null,
    height: Number(el.getAttribute('height')) || null,
    box: box(el),
    viewBox: el.ownerSVGElement?.getAttribute('viewBox') || null
  }))
  const thumbnails = [...root.querySelectorAll('img')].map(el => el.getAttribute('src'))
  // a flipbook's (or frame carousel's) frame buttons
  // and a multiFrame carousel's radio buttons (one per location)
  const frames = root.querySelectorAll('[role=tablist] [role=tab], input[name=frame]').length
  const charts = [...root.querySelectorAll('svg.scatterPlot')].map(svg => ({
    points: svg.querySelectorAll('.chartContent .visx-glyph').length,
    box: box(svg),
    yTicks: [...svg.querySelectorAll('.chartAxes .visx-axis-left .visx-axis-tick text')].map(t => t.textContent)
  }))
  const text = root.innerText
  const messages = ['Something went wrong', 'No JSON url found'].filter(m => text.includes(m))
  return { images, thumbnails, frames, charts, messages, text: text.slice(0, 200) }
}

async function main() {
  const params = new URLSearchParams(window.location.search)
  const job = await (await fetch('/job.json')).json()
  const entry = job.subjects[Number(params.get('i') || 0)]
  const settle = Number(params.get('settle') || job.settle_ms)
  const subject = SubjectFactory.build({ id: `9${entry.index}`, locations: entry.locations, metadata: {} })
  // A workflow like a zooprep project's: one real/bogus question.
  const workflow = WorkflowFactory.build({
    configuration: job.configuration,
    first_task: 'T0',
    tasks: {
      T0: {
        answers: [{ label: 'Real' }, { label: 'Bogus' }],
        question: 'Is this a real astrophysical source?',
        required: false,
        taskKey: 'T0',
        type: 'single'
      }
    }
  })
  let store
  try {
    store = mockStore({ subject, workflow })
  } catch (error) {
    report({ index: entry.index, storeError: String(error).slice(0, 300), viewer: null })
    return
  }
  const active = store.subjects.active
  if (!active || active.id !== subject.id) {
    report({ index: entry.index, storeError: 'subject not accepted by the subject store', viewer: null })
    return
  }
  const rootElement = document.getElementById('root')
  createRoot(rootElement).render(
    <Grommet theme={zooTheme}>
      <Provider classifierStore={store}>
        <Box width='1200px' height='900px'>
          <SubjectViewer />
        </Box>
      </Provider>
    </Grommet>
  )
  const wait = ms => new Promise(resolve => setTimeout(resolve, ms))
  await wait(settle)
  const first = drawn(rootElement)
  // Step through every location as the frame (what a flipbook's autoplay or
  // next button, or a carousel's radio button, shows).
  const frameViews = []
  if (first.frames > 0) {
    for (let frame = 0; frame < entry.locations.length; frame++) {
      store.subjectViewer.setFrame(frame)
      await wait(settle / 2)
      const view = drawn(rootElement)
      frameViews.push({ frame, images: view.images.map(i => i.href), messages: view.messages })
    }
    store.subjectViewer.setFrame(0)
  }
  report({ index: entry.index, viewer: active.viewer, ...first, frameViews })
}

main().catch(error => report({ fatal: String(error) }))
"""

WEBPACK_CONFIG_JS = r"""
const path = require('path')
const HtmlWebpackPlugin = require('html-webpack-plugin')
const base = require('../webpack.dev.js')

module.exports = {
  ...base,
  devServer: undefined,
  entry: ['./zooprep-check/index.jsx'],
  output: { path: path.resolve(__dirname, 'build'), filename: 'main.js' },
  plugins: [
    ...base.plugins.filter(p => !(p instanceof HtmlWebpackPlugin)),
    new HtmlWebpackPlugin({ template: './dev/index.html', filename: 'index.html', inject: 'body' })
  ],
  devtool: false,
  performance: { hints: false }
}
"""


@dataclass
class Subject:
    """One manifest row as the classifier gets it."""

    index: int
    source_id: int
    files: list[Path]
    types: list[str]


def run_subjects(run: Path, limit: int) -> list[Subject]:
    """The first ``limit`` rows of the run's reviewed manifest."""
    from zooprep.run import Run
    from zooprep.stages.review import read_reviewed
    from zooprep.stages.upload import content_type

    with Run.open(run, lock=False) as opened:
        rows = read_reviewed(opened).rows
    out = []
    for n, row in enumerate(rows[:limit]):
        files = [Path(f) for f in row.files]
        out.append(Subject(n, row.source_id, files, [content_type(f) for f in files]))
    return out


def _pnpm(root: Path) -> list[str]:
    """The monorepo's own pnpm (its ``packageManager``), through npx."""
    manager = json.loads((root / "package.json").read_text()).get("packageManager")
    return ["npx", "--yes", manager or "pnpm"]


def install(root: Path) -> None:
    """Install lib-classifier and build the workspace packages it imports.

    ``pnpm install --filter @zooniverse/classifier...`` (lib-classifier and
    the workspace packages it depends on; ``--ignore-scripts`` skips every
    package's ``prepare`` build), then the babel builds of the two whose
    ``main`` is a ``dist/`` (react-components, subject-viewers).
    """
    pnpm = _pnpm(root)
    subprocess.run(
        [*pnpm, "install", "--filter", "@zooniverse/classifier...", "--ignore-scripts"],
        cwd=root,
        check=True,
    )
    builds = ["--filter", "@zooniverse/subject-viewers"]
    builds += ["--filter", "@zooniverse/react-components"]
    for script in ("build:cjs", "build:es6"):
        subprocess.run([*pnpm, *builds, "run", script], cwd=root, check=True)


def build(package: Path) -> Path:
    """Write the page and build it with the package's webpack; its directory."""
    here = package / "zooprep-check"
    here.mkdir(exist_ok=True)
    (here / "index.jsx").write_text(HARNESS_JSX, encoding="utf-8")
    (here / "webpack.config.js").write_text(WEBPACK_CONFIG_JS, encoding="utf-8")
    env = {**os.environ, "BABEL_ENV": "es6", "NODE_ENV": "development"}
    found = [
        d / "node_modules" / ".bin" / "webpack"
        for d in (package, package.parent.parent)
        if (d / "node_modules" / ".bin" / "webpack").exists()
    ]
    if not found:
        raise SystemExit(f"webpack not found under {package}: run with --install")
    webpack = found[0]
    subprocess.run(
        [str(webpack), "--config", "zooprep-check/webpack.config.js"],
        cwd=package,
        env=env,
        check=True,
    )
    return here / "build"


class _Handler(SimpleHTTPRequestHandler):
    """The built page, ``/job.json`` and ``/files/<n>/<k>/<name>``."""

    job: bytes = b"{}"
    subjects: Sequence[Subject] = ()

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/job.json":
            return self._send(self.job, "application/json")
        found = re.fullmatch(r"/files/(\d+)/(\d+)/[^/]+", path)
        if found:
            n, k = int(found[1]), int(found[2])
            f = self.subjects[n].files[k]
            return self._send(f.read_bytes(), self.subjects[n].types[k])
        return super().do_GET()

    def _send(self, body: bytes, kind: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@contextlib.contextmanager
def serve(
    page: Path, subjects: Sequence[Subject], configuration: dict[str, Any], settle: int
) -> Iterator[str]:
    """Serve the page and the files on 127.0.0.1 (a free port); yield its URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    job = {
        "configuration": configuration,
        "settle_ms": settle,
        "subjects": [
            {
                "index": s.index,
                "locations": [
                    {t: f"{base}/files/{s.index}/{k}/{f.name}"}
                    for k, (f, t) in enumerate(zip(s.files, s.types, strict=True))
                ],
            }
            for s in subjects
        ],
    }
    handler = type(
        "Handler",
        (_Handler,),
        {"job": json.dumps(job).encode(), "subjects": subjects},
    )
    server.RequestHandlerClass = functools.partial(handler, directory=str(page))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield base
    finally:
        server.shutdown()
        server.server_close()


def load(chromium: str, url: str, budget_ms: int, timeout: float) -> dict[str, Any]:
    """One page load in headless Chromium; the page's report."""
    profile = Path(os.environ.get("TMPDIR", "/tmp")) / f"zooprep-check-{os.getpid()}"
    done = subprocess.run(
        [
            chromium,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            "--window-size=1280,900",
            f"--virtual-time-budget={budget_ms}",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    shutil.rmtree(profile, ignore_errors=True)
    found = re.search(r'<pre id="zooprep-report">(.*?)</pre>', done.stdout, re.S)
    if not found:
        return {"fatal": f"no report (chromium exit {done.returncode})"}
    return dict(json.loads(html.unescape(found[1])))


def expected(viewer: str | None, types: list[str]) -> dict[str, Any]:
    """What `zooprep.viewers.draws` says the classifier draws."""
    from zooprep.viewers import automatic_viewer, draws, subject_model

    drawing = draws(viewer, types)
    # The store's name of the workflow's value (``viewerType`` of
    # WorkflowConfiguration.js: ``lightcurve`` is ``lightCurve``).
    store_name = {"lightcurve": "lightCurve"}.get(viewer or "", viewer)
    return {
        "valid": subject_model(types) is not None,
        "viewer": store_name or automatic_viewer(types),
        "images": len(drawing.images),
        "charts": drawing.charts,
        # dataImage always draws its chart area (empty axes without JSON)
        "chart_areas": 1 if drawing.viewer == "dataImage" else drawing.charts,
        "broken": len(drawing.broken),
        "broken_at": list(drawing.broken),
        # frame buttons: a flipbook's per image, a multiFrame carousel's per
        # location; none for one image or a chart alone
        "frames": _frames(drawing),
    }


def _frames(drawing: Any) -> int:
    """Frame buttons drawn: per image in a flipbook, per location in multiFrame."""
    if drawing.viewer == "multiFrame":
        return len(drawing.images) + len(drawing.broken)
    if drawing.viewer == "flipbook":
        return len(drawing.images)
    if drawing.viewer == "dataImage" and len(drawing.images) > 1:
        return len(drawing.images)  # its images are a flipbook
    return 0


def _blank_frames(got: dict[str, Any]) -> list[int]:
    """Frames (location indexes) drawn without an image, or with an error."""
    return [
        v["frame"]
        for v in got.get("frameViews", [])
        if not v.get("images") or v.get("messages")
    ]


def describe(subject: Subject, got: dict[str, Any], want: dict[str, Any]) -> str:
    """One subject's lines of the report."""
    files = " + ".join(subject.types)
    lines = [f"subject {subject.index} (source {subject.source_id}): {files}"]
    if got.get("fatal") or got.get("storeError"):
        lines.append(f"  not shown: {got.get('fatal') or got.get('storeError')}")
        return "\n".join(lines)
    shown = {i.get("href") for i in got.get("images", [])}
    sizes = ", ".join(
        f"{i.get('width')}x{i.get('height')} in {i['box'][0]}x{i['box'][1]}"
        for i in got.get("images", [])
    )
    lines.append(f"  viewer: {got.get('viewer')}")
    lines.append(f"  images drawn: {len(shown)}" + (f" ({sizes})" if sizes else ""))
    if got.get("frames"):
        lines.append(f"  frames to flip through: {got['frames']}")
    blank = _blank_frames(got)
    if got.get("frameViews"):
        lines.append(f"  frames with no image: {blank or 'none'}")
    for chart in got.get("charts", []):
        ticks = ", ".join(chart.get("yTicks", [])[:6])
        lines.append(f"  chart: {chart['points']} points; y ticks {ticks}")
    for message in got.get("messages", []):
        lines.append(f"  shows: {message!r}")
    for problem in got.get("problems", [])[:5]:
        lines.append(f"  {problem}")
    lines.append(
        f"  zooprep.viewers predicts: {want['viewer']}, {want['images']} images, "
        f"{want['charts']} charts, {want['frames']} frames"
    )
    return "\n".join(lines)


def agrees(got: dict[str, Any], want: dict[str, Any]) -> bool:
    """Whether the classifier drew what `zooprep.viewers` predicts."""
    if got.get("fatal") or got.get("storeError"):
        return not want["valid"]
    images = len({i.get("href") for i in got.get("images", [])})
    frames = int(got.get("frames") or 0)
    return (
        got.get("viewer") == want["viewer"]
        and len(got.get("charts", [])) == want["chart_areas"]
        and (want["charts"] or not any(c["points"] for c in got.get("charts", [])))
        and (images >= 1) == (want["images"] >= 1)
        and frames == want["frames"]
        and (
            not got.get("frameViews")
            or got.get("viewer") not in ("flipbook", "multiFrame")
            or _blank_frames(got) == want["broken_at"]
        )
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Build, load every subject, print the report; 1 if any differs."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("run", type=Path, help="the zooprep run directory")
    parser.add_argument(
        "--monorepo", type=Path, required=True, help="front-end-monorepo checkout"
    )
    parser.add_argument("--install", action="store_true", help="npm install first")
    parser.add_argument(
        "--subject-viewer", help="the workflow's subject_viewer (default: unset)"
    )
    parser.add_argument("--limit", type=int, default=10, help="subjects to load")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "chromium")
    parser.add_argument(
        "--settle-ms", type=int, default=4000, help="virtual ms before reading"
    )
    parser.add_argument("--no-build", action="store_true", help="reuse the last build")
    parser.add_argument("--raw", action="store_true", help="print each page's report")
    args = parser.parse_args(argv)

    package = args.monorepo / "packages" / "lib-classifier"
    if not (package / "package.json").exists():
        parser.error(f"{package} is not lib-classifier (give the monorepo's root)")
    subjects = run_subjects(args.run, args.limit)
    if not subjects:
        parser.error(f"{args.run} has no manifest rows (run zooprep manifest)")
    if args.install:
        install(args.monorepo)
    page = package / "zooprep-check" / "build" if args.no_build else build(package)
    configuration = (
        {"subject_viewer": args.subject_viewer} if args.subject_viewer else {}
    )
    differ = 0
    with serve(page, subjects, configuration, args.settle_ms) as base:
        for s in subjects:
            want = expected(args.subject_viewer, s.types)
            # A loaded machine can read a page before it settles: a subject
            # that differs is loaded once more with twice the time.
            for settle in (args.settle_ms, 2 * args.settle_ms):
                got = load(
                    args.chromium,
                    f"{base}/index.html?i={s.index}&settle={settle}",
                    settle * (3 + len(s.files)),
                    240,
                )
                if agrees(got, want):
                    break
            print(describe(s, got, want))
            if args.raw:
                print("  raw:", json.dumps(got))
            if not agrees(got, want):
                differ += 1
                print("  DIFFERS from zooprep.viewers")
    print(
        f"{len(subjects)} subjects loaded with subject_viewer "
        f"{args.subject_viewer or 'unset'}; {differ} differ from zooprep.viewers"
    )
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
