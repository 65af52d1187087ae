"""``facewatch watch SOURCE... [--for SECONDS]``: the pipeline, headless, alerts as JSON lines.

Runs until every source that can end has ended (a file that is not looped), ``--for`` seconds
have passed, or SIGINT/SIGTERM (a second signal exits at once). Prints one JSON line per alert,
then one summary line with ``"type": "summary"``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from facewatch.config import Settings
from facewatch.errors import StreamError
from facewatch.pipeline.alerts import Subscription
from facewatch.pipeline.runner import Pipeline
from facewatch.recognizer.engine import FaceEngine
from facewatch.stream.config import StreamConfig
from facewatch.watchlist.service import Watchlist

EXIT_INPUT = 1
EXIT_INTERRUPTED = 130
#: Alert fields on each JSON line, in this order (the contract scripts rely on).
ALERT_FIELDS = (
    "type",
    "stream",
    "track",
    "person",
    "person_id",
    "similarity",
    "bbox",
    "ts",
    "snapshot",
)


def add_watch_command(commands: Any, data_dir: argparse.ArgumentParser) -> None:
    watch = commands.add_parser(
        "watch", help="run the pipeline on video sources, alerts as JSON lines", parents=[data_dir]
    )
    watch.add_argument(
        "sources", nargs="+", metavar="SOURCE", help="rtsp:// or http(s):// URL, or a video file"
    )
    watch.add_argument(
        "--for", dest="duration", type=float, metavar="SECONDS", help="stop after this long"
    )
    watch.add_argument("--loop", action="store_true", help="play files in a loop")
    watch.add_argument(
        "--realtime",
        action="store_true",
        help="pace files at their frame rate (like a camera) instead of as fast as possible",
    )
    watch.add_argument("--fps", type=float, help="at most this many frames/s per stream")
    watch.set_defaults(handler=_watch)


def _watch(args: argparse.Namespace, settings: Settings) -> int:
    if args.duration is not None and args.duration <= 0:
        print("facewatch: error: --for takes a positive number of seconds", file=sys.stderr)
        return 2
    engine = FaceEngine.load(settings.engine)
    with Watchlist.open(settings, engine) as watchlist:
        return asyncio.run(_run(args, settings, engine, watchlist))


async def _run(
    args: argparse.Namespace, settings: Settings, engine: FaceEngine, watchlist: Watchlist
) -> int:
    stop = asyncio.Event()
    _on_signals(stop)
    refused = 0
    async with Pipeline(settings, engine, watchlist) as pipeline:
        # Big enough for any run's alerts: this subscriber is our stdout, it must not be dropped.
        printer = asyncio.create_task(_print_alerts(pipeline.subscribe(maxsize=1_000_000)))
        for source in args.sources:
            config = StreamConfig(
                url=source,
                name=_stream_name(source),
                loop=args.loop,
                realtime=args.realtime or None,
                fps_cap=args.fps,
            )
            try:
                await pipeline.add_stream(config)
            except (StreamError, ValueError) as exc:
                refused += 1
                print(f"facewatch: error: {source}: {exc}", file=sys.stderr)
        if len(pipeline.streams.list()):
            # Live streams never end: then only --for or a signal stops the run.
            waits = [
                asyncio.create_task(stop.wait()),
                asyncio.create_task(pipeline.streams.wait_all_ended()),
            ]
            try:
                async with asyncio.timeout(args.duration):
                    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            except TimeoutError:
                pass
            for task in waits:
                task.cancel()
            await asyncio.gather(*waits, return_exceptions=True)
    await printer
    print(json.dumps({"type": "summary", **pipeline.summary()}), flush=True)
    if stop.is_set():
        return EXIT_INTERRUPTED
    return EXIT_INPUT if refused else 0


async def _print_alerts(subscription: Subscription) -> None:
    async for alert in subscription:
        data = alert.as_dict()
        line = {key: data[key] for key in ALERT_FIELDS}
        line.update(
            {key: value for key, value in data.items() if key not in line and value is not None}
        )
        print(json.dumps(line), flush=True)


def _on_signals(stop: asyncio.Event) -> None:
    """First SIGINT/SIGTERM: stop gracefully; a second one: exit at once."""
    loop = asyncio.get_running_loop()

    def handle() -> None:
        if stop.is_set():
            os._exit(EXIT_INTERRUPTED)
        print("facewatch: stopping (signal again to force)", file=sys.stderr)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, handle)
        except (NotImplementedError, RuntimeError):  # not the main thread, or no signals here
            pass


def _stream_name(source: str) -> str:
    parts = urlsplit(source)
    if parts.scheme and parts.netloc:
        return Path(parts.path).stem or parts.hostname or source
    return Path(source).stem or source
