"""``siprec-src serve``: the sidecar process (a composition root: it may import every layer).

Start order: logging, the recording ``Engine`` (SIP listeners, media ports or workers), the
status ``CallbackQueue``, the ``Sidecar`` and its HTTP application on the control host and
port. SIGTERM or SIGINT (or the ``stop`` event) starts a graceful shutdown, each step bounded
by one deadline:

1. ``/healthz`` answers 503 and new calls are refused (503 ``shutting_down``), so a load
   balancer stops sending; the HTTP server keeps answering while the sidecar drains;
2. every call is closed: BYE to every SRS, RTCP BYE on every stream;
3. the status callbacks those BYEs produced get the rest of a few seconds to go out;
4. the HTTP server and the engine stop.

Exit status 0 when all of it finished in time; 1 when a step hung (logged by name) or the
sidecar could not start; ``serve_main`` returns 2 for an invalid configuration, after
printing every problem in it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import importlib
import json
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from siprec_src.config import ConfigErrors, SidecarConfig, load_config, message_of, summary
from siprec_src.control.callbacks import CallbackQueue
from siprec_src.control.http import build_app, register_callback_metrics
from siprec_src.control.metrics import Registry
from siprec_src.control.sidecar import Sidecar
from siprec_src.errors import ConfigError, SiprecError
from siprec_src.recording.engine import Engine
from siprec_src.sdp.siprec import PCMA, PCMU

log = logging.getLogger("siprec_src.serve")

SHUTDOWN_TIMEOUT = 10.0  # seconds for the whole graceful shutdown
CALLBACK_DRAIN = 5.0  # at most this long for the last status callbacks
HTTP_DRAIN = 2.0  # in-flight HTTP requests get this long once the calls are closed
# What the API may name in POST /v1/calls {"codec": ...} (control may not import sdp).
API_CODECS = {"PCMU": PCMU, "PCMA": PCMA}


# --- logging --------------------------------------------------------------------------------------


class JsonLinesFormatter(logging.Formatter):
    """One JSON object per line: time (RFC 3339 UTC), level, logger, message, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(log_format: str, level: str) -> Callable[[], None]:
    """Log to stderr in ``text`` or ``json`` lines at ``level``; returns what undoes it.

    Nothing here logs configuration values: tokens, passwords and signing secrets stay out of
    the logs (the start line says what is configured, not with what).
    """
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonLinesFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(level.upper())

    def undo() -> None:
        root.removeHandler(handler)
        root.setLevel(previous)

    return undo


# --- serve ------------------------------------------------------------------------------------------


async def serve(
    config: SidecarConfig,
    *,
    stop: asyncio.Event | None = None,
    ready: Callable[[str], None] | None = None,
    shutdown_timeout: float = SHUTDOWN_TIMEOUT,
) -> int:
    """Run the sidecar until SIGTERM/SIGINT or ``stop`` is set; ``ready(url)`` once it listens."""
    undo_logging = configure_logging(config.log_format, config.log_level)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    signals: list[signal.Signals] = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(signum, _on_signal, signum, stop)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
            continue
        signals.append(signum)
    try:
        return await _serve(config, stop, ready, shutdown_timeout)
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)
        undo_logging()


def _on_signal(signum: signal.Signals, stop: asyncio.Event) -> None:
    if stop.is_set():
        log.warning("%s again: already shutting down", signum.name)
        return
    log.info("%s: shutting down", signum.name)
    stop.set()


async def _serve(
    config: SidecarConfig, stop: asyncio.Event, ready: Callable[[str], None] | None, shutdown_timeout: float
) -> int:
    engine = Engine(config.engine)
    try:
        await engine.start()
    except (OSError, SiprecError) as exc:
        log.error("cannot start SIP and media: %s", exc)
        await engine.close()
        return 1
    queue = CallbackQueue(config.control.callbacks)
    await queue.start()
    # The sidecar hooks the engine's on_event and on_stream_event (status callbacks, metrics).
    sidecar = Sidecar(engine, config.control, submit=queue.submit, codecs=API_CODECS, streams=config.streams)
    registry = Registry()
    app = build_app(sidecar, registry)
    register_callback_metrics(registry, queue)
    runner = web.AppRunner(
        app, access_log=logging.getLogger("siprec_src.access"), shutdown_timeout=HTTP_DRAIN
    )
    await runner.setup()
    host, port = config.control.host, config.control.port
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        log.error("cannot listen for the API on %s port %d: %s", host, port, exc.strerror or exc)
        await runner.cleanup()
        await queue.close(0)
        await engine.close()
        return 1
    bound = runner.addresses[0]
    shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
    url = f"http://{shown}:{bound[1]}"
    log.info("serving on %s: %s", url, summary(config))
    if ready is not None:
        ready(url)
    await stop.wait()
    return await _shutdown(sidecar, queue, runner, engine, shutdown_timeout)


async def _shutdown(
    sidecar: Sidecar, queue: CallbackQueue, runner: web.AppRunner, engine: Engine, timeout: float
) -> int:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    log.info(
        "draining: %d calls, %d recordings (healthz now 503, new calls refused)",
        len(sidecar.engine.calls),
        sidecar.live_recordings(),
    )

    def callbacks_close() -> Awaitable[None]:
        remaining = deadline - loop.time()
        return queue.close(max(0.0, min(CALLBACK_DRAIN, remaining - 1.0)))

    steps: list[tuple[str, Callable[[], Awaitable[None]]]] = [
        ("closing every call (BYE to every SRS)", sidecar.shutdown),
        ("sending the last status callbacks", callbacks_close),
        ("stopping the HTTP server", runner.cleanup),
        ("stopping SIP and media", engine.close),
    ]
    hung: str | None = None
    for name, step in steps:
        # Once a step hung, the rest still run (media worker processes must not be orphaned),
        # each with a short bound.
        when = deadline if hung is None else loop.time() + 1.0
        try:
            async with asyncio.timeout_at(when):
                await step()
        except TimeoutError:
            if hung is None:
                hung = name
                log.error("shutdown did not finish within %g s: %s hung", timeout, name)
            else:
                log.error("%s also hung", name)
        except Exception:
            log.exception("shutdown step failed: %s", name)
            hung = hung or name
    if hung is not None:
        return 1
    log.info("stopped cleanly")
    return 0


# --- the process ------------------------------------------------------------------------------------


# The young generation is collected every this many net allocations (CPython's default is 700).
GC_YOUNG_THRESHOLD = 10_000


def tune_collector() -> None:
    """The garbage collector policy of the sidecar process, set once it serves.

    Only the ``siprec-src serve`` command calls this: the process is ours. The library (an
    ``Engine`` embedded in someone else's process) never changes the host's collector.

    - ``gc.freeze()``: what start-up allocated (modules, configuration, the engine, the HTTP
      application) lives as long as the process, so full collections stop scanning it.
    - A young generation of 10 000 objects instead of 700: each recording session allocates a
      few hundred tracked objects that mostly die with it; collecting less often spares scanning
      (and promoting to older generations) the objects of sessions still being set up.

    Measured with the signaling benchmark's sessions (udp, in-process media): collector time per
    session 0.16 -> 0.06 ms (median of 5 runs each, side by side).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 10, 10)


# --- the command line ---------------------------------------------------------------------------------


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``siprec-src serve``."""
    parser.add_argument(
        "--config",
        required=True,
        metavar="FILE",
        help="the sidecar configuration file (TOML; check it with `siprec-src check-config FILE`)",
    )


def serve_main(args: argparse.Namespace) -> int:
    """Exit status: 0 after a clean shutdown, 1 when it could not start or a shutdown step hung,
    2 for an invalid configuration (every problem printed on stderr)."""
    try:
        config = load_config(args.config)
    except ConfigErrors as problems:
        for error in problems.errors:
            print(f"{error.file}: {error.key or '(top level)'}: {message_of(error)}", file=sys.stderr)
        print(
            f"siprec-src serve: {len(problems.errors)} configuration error(s); not started", file=sys.stderr
        )
        return 2
    except ConfigError as error:
        print(f"{error}\nsiprec-src serve: not started", file=sys.stderr)
        return 2

    def ready(url: str) -> None:
        tune_collector()
        print(f"siprec-src serving on {url}", flush=True)

    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        return runner.run(serve(config, ready=ready))


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop when it is installed (DESIGN.md: the control process runs on uvloop)."""
    with contextlib.suppress(ImportError):
        uvloop = importlib.import_module("uvloop")
        factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
        return factory
    return None
