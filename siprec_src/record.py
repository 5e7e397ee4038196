"""``siprec-src record``: record a synthetic call to any SRS — the smallest end-to-end use.

It opens a call whose two legs carry distinct tones (``synthetic.py``), sends their RTP to the
engine's tap ports as a PBX would, records it toward the SRS list (failing over in order)
for ``--duration`` seconds, and ends with BYE. Exit status 0 only when a recording session
was established and ended cleanly; otherwise one clear line on stderr and status 1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import sys
from dataclasses import asdict
from typing import Any

from siprec_src.config import load_config
from siprec_src.errors import SiprecError
from siprec_src.media.spec import Leg
from siprec_src.recording.call import Party, Track
from siprec_src.recording.connector import Connector, connector_for, parse_srs
from siprec_src.recording.engine import Engine, EngineConfig, RecordingError
from siprec_src.recording.events import RecordingStarted, RecordingStopped
from siprec_src.sdp.siprec import PCMA, PCMU
from siprec_src.signaling.transport import ListenSpec, TlsConfig
from siprec_src.sip.auth import Credentials
from siprec_src.synthetic import SyntheticLeg, play


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--srs", action="append", default=[], metavar="URI", help="SRS URI (repeat for failover)"
    )
    parser.add_argument(
        "--connector", default=None, metavar="NAME", help="a connector of --config instead of --srs"
    )
    parser.add_argument("--track", default="both_tracks", choices=[t.value for t in Track])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of audio (default 5)")
    parser.add_argument("--codec", default="PCMU", choices=["PCMU", "PCMA"])
    parser.add_argument("--secure", action="store_true", help="SIP over TLS and SRTP (SDES)")
    parser.add_argument("--session-timeout", type=int, default=None, help="Session-Expires, s (0 = off)")
    parser.add_argument("--attempt-timeout", type=float, default=8.0, help="s before trying the next SRS")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="custom parameter")
    parser.add_argument("--params-in-metadata", action="store_true", help="send --param in the metadata")
    parser.add_argument("--from", dest="from_aor", default="sip:alice@example.com", metavar="AOR")
    parser.add_argument("--to", dest="to_aor", default="sip:bob@example.net", metavar="AOR")
    parser.add_argument(
        "--bind", default=None, metavar="IP", help="local address (default: the route to the SRS)"
    )
    parser.add_argument(
        "--tls-ca", default=None, metavar="FILE", help="CA file to verify the SRS certificate"
    )
    parser.add_argument(
        "--tls-cert", default=None, metavar="FILE", help="our certificate (TLS listener, client)"
    )
    parser.add_argument("--tls-key", default=None, metavar="FILE")
    parser.add_argument(
        "--auth", default=None, metavar="USER:PASSWORD", help="digest credentials for the SRS"
    )
    parser.add_argument(
        "--config",
        default=None,
        metavar="FILE",
        help="sidecar config file: its SIP listeners, TLS, media ports, edges and connectors",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON summary")


def _local_ip_for(host: str) -> str:
    """The address this host uses to reach ``host`` (no packet is sent: UDP connect only)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect((host, 9))
            return str(probe.getsockname()[0])
    except OSError:
        return "127.0.0.1"


async def record(args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    if bool(args.srs) == bool(args.connector):
        raise SiprecError("give either --srs URI (repeatable) or --connector NAME (with --config)")
    if args.connector and args.config is None:
        raise SiprecError("--connector names a connector of a config file: add --config FILE")
    params: dict[str, str] = {}
    for item in args.param:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise SiprecError(f"--param {item!r}: expected NAME=VALUE")
        params[name] = value
    if args.config is not None:
        config = load_config(args.config).engine
        bind = config.media_host
    else:
        targets = [parse_srs(uri, secure=args.secure) for uri in args.srs]
        bind = args.bind or _local_ip_for(targets[0].uri.host)
        listens = [ListenSpec("udp", bind, 0), ListenSpec("tcp", bind, 0)]
        tls = None
        if args.secure or args.tls_ca or args.tls_cert:
            tls = TlsConfig(certfile=args.tls_cert, keyfile=args.tls_key, cafile=args.tls_ca)
            if args.tls_cert:
                listens.append(ListenSpec("tls", bind, 0))
        config = EngineConfig(sip_listen=tuple(listens), tls=tls, media_host=bind, from_uri=args.from_aor)
    summary: dict[str, Any] = {"srs_list": args.srs or [args.connector]}
    codec = PCMA if args.codec == "PCMA" else PCMU
    async with Engine(config) as engine:
        call = await engine.open_call(caller=Party(args.from_aor), callee=Party(args.to_aor), codec=codec)
        summary["call_id"] = call.call_id
        credentials: tuple[Credentials, ...] = ()
        if args.auth:
            user, sep, password = args.auth.partition(":")
            if not sep or not user:
                raise SiprecError("--auth: expected USER:PASSWORD")
            credentials = (Credentials(user, password),)
        connector: Connector | str = args.connector or connector_for(
            "record",
            list(args.srs),
            secure=args.secure,
            attempt_timeout=args.attempt_timeout,
            from_uri=args.from_aor,
            credentials=credentials,
        )
        recording = await call.record(
            connector=connector,
            track=args.track,
            params=params,
            params_in_metadata=args.params_in_metadata,
            session_timeout=args.session_timeout,
            secure=True if args.secure else None,  # --secure also upgrades a configured connector
        )
        sender = socket.socket(socket.AF_INET6 if ":" in bind else socket.AF_INET, socket.SOCK_DGRAM)
        sender.bind((bind, 0))
        sender.setblocking(False)
        legs = [SyntheticLeg(Leg.INBOUND, args.codec), SyntheticLeg(Leg.OUTBOUND, args.codec)]

        def send(leg: Leg, packet: bytes) -> None:
            # A full send buffer shows as loss on the SRS side; it must not end the run.
            with contextlib.suppress(OSError):
                sender.sendto(packet, call.taps[leg])

        status = 1
        try:
            await recording.wait_started()
            playing = asyncio.ensure_future(play(legs, send, args.duration))
            ended = asyncio.ensure_future(recording.wait_ended())
            await asyncio.wait({playing, ended}, return_when=asyncio.FIRST_COMPLETED)
            playing.cancel()
            if not ended.done():
                await recording.stop("duration reached")
            else:
                ended.result()
            stopped = [e for e in recording.events if isinstance(e, RecordingStopped)]
            status = 0 if stopped else 1
        except RecordingError as exc:
            summary["error"] = str(exc)
        finally:
            sender.close()
        stats = await engine.fork_stats(recording)
        summary.update(
            {
                "sip_call_id": recording.session.sip_call_id,
                "final_sip_status": recording.session.final_status,
                "srs": recording.srs
                if any(isinstance(e, RecordingStarted) for e in recording.events)
                else None,
                "status": recording.status,
                "streams": [
                    {
                        "label": label,
                        "track": "inbound_track" if leg is Leg.INBOUND else "outbound_track",
                        "ssrc": ssrc,
                        "remote": _address(recording.remotes.get(label)),
                        "packets_sent": stats[label].packets_sent if label in stats else 0,
                        "bytes_sent": stats[label].octets_sent if label in stats else 0,
                    }
                    for label, leg, ssrc in recording.streams
                ],
                "events": [{"event": type(e).__name__, **asdict(e)} for e in recording.events],
            }
        )
        if "error" not in summary and status != 0:
            summary["error"] = next(
                (getattr(e, "reason", "") for e in reversed(recording.events)),
                "recording did not end cleanly",
            )
        await call.close()
    return status, summary


def _address(address: tuple[str, int] | None) -> str | None:
    return None if address is None else f"{address[0]}:{address[1]}"


def main(args: argparse.Namespace) -> int:
    try:
        status, summary = asyncio.run(record(args))
    except (SiprecError, OSError) as exc:
        print(f"siprec-src record: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        for stream in summary["streams"]:
            print(
                f"stream {stream['label']} ({stream['track']}) SSRC {stream['ssrc']:#010x} -> "
                f"{stream['remote']}: {stream['packets_sent']} packets, {stream['bytes_sent']} bytes"
            )
        print(f"SRS {summary.get('srs')} Call-ID {summary.get('sip_call_id')} status {summary.get('status')}")
    if status != 0:
        print(f"siprec-src record: {summary.get('error', 'failed')}", file=sys.stderr)
    return status
