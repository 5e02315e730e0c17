"""The ``servicewire`` command: call services, list them, run the demo site.

Usage::

    servicewire [--url URL] [--key KEY] [--codec {msgpack,json}] [--[no-]progress] COMMAND ...

    servicewire call add a=1 b=2          # prints 3
    servicewire call greet name=bob       # values parse as JSON, else as strings
    servicewire call add a=1 b=2 --json   # the result as JSON
    servicewire services                  # what this caller may call
    servicewire demo                      # the bundled example site (needs Django and numpy)
    servicewire keygen ~/.servicewire.pem # a signing key; prints its public key last

``--url`` defaults to ``$SERVICEWIRE_URL`` and ``--key`` to ``$SERVICEWIRE_KEY``;
prefer the environment variable for the key, since command lines end up in
shell history and process listings.

Exit codes:

- 0: success.
- 1: the call failed: the server answered with an error, or could not be
  reached (the error is printed to stderr); or the demo could not start; or
  ``keygen`` could not write its file (it never replaces one without ``--force``).
- 2: bad usage: unknown options, a malformed ``k=v`` argument, no URL.
"""

from __future__ import annotations

import argparse
import json
import os
import pprint
import sys
from collections.abc import Sequence
from typing import Any

from servicewire import codecs, errors
from servicewire.client import Client

__all__ = ["main", "parse_argument"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def parse_argument(text: str) -> tuple[str, Any]:
    """Split ``name=value``; the value is JSON where it parses, else a string.

    ``a=1`` gives 1, ``name=bob`` gives ``"bob"``, ``xs=[1,2]`` a list and
    ``s='"1"'`` the string ``"1"``.
    """
    name, sep, raw = text.partition("=")
    if not sep or not name.isidentifier():
        raise argparse.ArgumentTypeError(f"expected name=value, got {text!r}")
    try:
        value: Any = json.loads(raw)
    except ValueError:
        value = raw
    return name, value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="servicewire",
        description="Call servicewire services from the command line.",
    )
    parser.add_argument(
        "--url",
        default=os.environ.get("SERVICEWIRE_URL"),
        help="base URL of the services (default: $SERVICEWIRE_URL)",
    )
    parser.add_argument(
        "--key",
        default=os.environ.get("SERVICEWIRE_KEY"),
        help="API key (default: $SERVICEWIRE_KEY; prefer the variable, "
        "a key on the command line lands in shell history)",
    )
    parser.add_argument(
        "--codec", choices=["msgpack", "json"], default="msgpack", help="wire codec"
    )
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bars for transfers of 8 MiB or more "
        "(default: on when stderr is a terminal and tqdm is installed)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    call = commands.add_parser("call", help="call a service: call NAME k=v ...")
    call.add_argument("name", help="the service name, e.g. science.spectrum")
    call.add_argument(
        "arguments",
        nargs="*",
        type=parse_argument,
        metavar="k=v",
        help="keyword arguments; values are JSON where they parse, else strings",
    )
    call.add_argument("--json", action="store_true", help="print the result as JSON")

    commands.add_parser("services", help="list the services this caller may call")
    commands.add_parser("demo", help="run the bundled demo site (needs Django and numpy)")
    keygen = commands.add_parser(
        "keygen",
        help="write a new ed25519 signing key file (mode 0600); print its public key last",
    )
    keygen.add_argument("path", metavar="PATH", help="where to write the private key")
    keygen.add_argument("--force", action="store_true", help="replace an existing file")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    parser = _parser()
    try:
        options = parser.parse_args(argv)
    except SystemExit as exit:
        # argparse exits on bad usage and --help; a returned code keeps main()
        # callable from tests and other programs.
        return int(exit.code or 0)
    if options.command == "demo":
        return _demo()
    if options.command == "keygen":
        return _keygen(options.path, force=options.force)
    try:
        client = Client(
            options.url, options.key, codec=options.codec, progress=_progress(options.progress)
        )
    except ValueError as exc:
        print(f"servicewire: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        with client:
            if options.command == "services":
                print(services_table(client.services()))
                return EXIT_OK
            arguments = dict(options.arguments)
            if len(arguments) != len(options.arguments):
                print("servicewire: error: an argument is given twice", file=sys.stderr)
                return EXIT_USAGE
            result = client.call(options.name, **arguments)
    except errors.ServiceError as error:
        _print_error(error)
        return EXIT_FAILED
    except ValueError as exc:  # an invalid service name
        print(f"servicewire: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(format_json(result) if options.json else format_value(result))
    return EXIT_OK


def _print_error(error: errors.ServiceError) -> None:
    print(f"error: {error.type} ({error.status}): {error.message}", file=sys.stderr)
    if error.details is not None:
        print("details: " + pprint.pformat(error.details, sort_dicts=False), file=sys.stderr)
    request_id = getattr(error, "request_id", None)
    if request_id:
        print(f"request id: {request_id}", file=sys.stderr)


def _keygen(path: str, *, force: bool) -> int:
    # Imported only here: signing needs the 'signing' extra, the rest does not.
    try:
        from servicewire import signing

        key = signing.generate_private_key()
        signing.write_private_key(path, key, force=force)
    except ImportError as exc:
        print(f"servicewire: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except FileExistsError:
        print(f"servicewire: error: {path} exists; use --force to replace it", file=sys.stderr)
        return EXIT_FAILED
    except OSError as exc:
        print(f"servicewire: error: cannot write {path}: {exc.strerror}", file=sys.stderr)
        return EXIT_FAILED
    print(f"Wrote the private key to {path} (mode 0600). Keep it there: it never leaves")
    print("this machine. Register the public key below with the site's operator:")
    print("  manage.py servicewire key create NAME --public-key <the line below>")
    print("then call with SERVICEWIRE_KEY_ID=<the key id> and SERVICEWIRE_SIGNING_KEY=" + path)
    # Alone on the last line, so that a script can take it with `tail -n 1`.
    print(signing.public_key_text(key))
    return EXIT_OK


def _progress(asked: bool | None) -> bool:
    if asked is not None:
        return asked
    try:
        import tqdm  # noqa: F401
    except ImportError:
        return False
    return sys.stderr.isatty()


def _demo() -> int:
    try:
        # Imported only here: the demo needs Django and numpy, the rest does not.
        from servicewire.demo.run import main as run_demo
    except ImportError as exc:
        print(
            f"servicewire: error: the demo needs Django and numpy ({exc}); "
            "install them with: pip install 'servicewire[django,numpy]'",
            file=sys.stderr,
        )
        return EXIT_FAILED
    code = run_demo()
    return code if isinstance(code, int) else EXIT_OK


def format_value(value: Any) -> str:
    """A readable rendering: strings as-is, arrays with a summary line, the rest pprinted."""
    if isinstance(value, str):
        return value
    numpy = sys.modules.get("numpy")  # an ndarray result means numpy is loaded
    if numpy is not None and isinstance(value, numpy.ndarray):
        summary = f"ndarray dtype={value.dtype} shape={value.shape}"
        return f"{summary}\n{value!r}"
    return pprint.pformat(value, sort_dicts=False)


def format_json(value: Any) -> str:
    """The value as indented JSON, rich values mapped as the JSON codec maps them."""
    natural = json.loads(codecs.JSON.encode(value))
    return json.dumps(natural, indent=2, ensure_ascii=False)


def services_table(services: list[dict[str, Any]]) -> str:
    """The discovery listing as aligned columns: name, parameters, returns, doc."""
    if not services:
        return "(no services)"
    rows = [("NAME", "PARAMETERS", "RETURNS", "DOC")]
    for service in services:
        doc = (service.get("doc") or "").strip()
        rows.append(
            (
                str(service.get("name", "")),
                _parameters_summary(service.get("parameters") or {}),
                _schema_summary(service.get("returns") or {}),
                doc.splitlines()[0] if doc else "",
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(3)]
    lines = []
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        lines.append("  ".join([*cells, row[3]]).rstrip())
    return "\n".join(lines)


def _parameters_summary(schema: dict[str, Any]) -> str:
    """``a: integer, window: integer = 256`` from an object schema."""
    properties = schema.get("properties") or {}
    parts = []
    for name, property_schema in properties.items():
        part = f"{name}: {_schema_summary(property_schema)}"
        if isinstance(property_schema, dict) and "default" in property_schema:
            part += f" = {json.dumps(property_schema['default'])}"
        parts.append(part)
    return ", ".join(parts)


def _schema_summary(schema: Any) -> str:
    """A one-word-ish type name for a JSON Schema."""
    if not isinstance(schema, dict) or not schema:
        return "any"
    if "$ref" in schema:
        return str(schema["$ref"]).rsplit("/", 1)[-1]
    for combinator in ("anyOf", "oneOf"):
        if combinator in schema:
            return " | ".join(_schema_summary(option) for option in schema[combinator])
    kind = schema.get("type")
    if isinstance(kind, list):
        return " | ".join(str(option) for option in kind)
    if kind == "array":
        if "prefixItems" in schema:  # a tuple: one schema per position
            return "[" + ", ".join(_schema_summary(item) for item in schema["prefixItems"]) + "]"
        container = "set" if schema.get("uniqueItems") else "array"
        items = schema.get("items")
        return f"{container}[{_schema_summary(items)}]" if isinstance(items, dict) else container
    if kind == "string" and "format" in schema:
        return str(schema["format"])  # date, uuid, decimal: what the user passes
    if kind is not None:
        return str(kind)
    return str(schema.get("title", "any"))
