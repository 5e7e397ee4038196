"""The ``siprec-src`` command line (the composition root of the application)."""

from __future__ import annotations

import argparse
import sys

from siprec_src import __version__, app, config, demo, record
from siprec_src.srs import server as srs


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="siprec-src",
        description="SIPREC Session Recording Client (SRC) media engine.",
    )
    parser.add_argument("--version", action="version", version=f"siprec-src {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo.add_arguments(
        commands.add_parser(
            "demo",
            help="record a synthetic call over TLS + SRTP to the reference SRS on loopback, and check it",
        )
    )
    record.add_arguments(
        commands.add_parser(
            "record",
            help="record a synthetic two-party call to an SRS (exit 0 only when recorded and ended cleanly)",
        )
    )
    app.add_serve_arguments(
        commands.add_parser("serve", help="run the sidecar: SIP, media workers and the REST control API")
    )
    srs.add_srs_arguments(
        commands.add_parser(
            "srs", help="run the reference Session Recording Server: one WAV per stream + session.json"
        )
    )
    config.add_check_arguments(
        commands.add_parser("check-config", help="validate a sidecar config file and report every error")
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "demo":
        return demo.main(args)
    if args.command == "record":
        return record.main(args)
    if args.command == "serve":
        return app.serve_main(args)
    if args.command == "srs":
        return srs.srs_main(args)
    if args.command == "check-config":
        return config.check_main(args)
    parser.print_help(sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
