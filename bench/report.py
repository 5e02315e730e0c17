"""The tables of a run, as aligned text and as markdown, and the JSON record.

Every ratio is taken inside one run: the machines are noisy, so a figure only
means something next to the peers measured beside it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

MB = 1_000_000
Row = dict[str, Any]
Table = tuple[str, list[str], list[list[str]]]


def _ratio(value: float | None, reference: float | None) -> str:
    if not value or not reference:
        return "-"
    return f"{value / reference:.2f}x"


def _times_payload(peak: int | None, payload: int) -> str:
    if peak is None:
        return "-"
    return f"{peak / MB:,.0f} MB ({peak / payload:.2f}x)"


def _best(row: Row | None) -> float | None:
    """MB/s of the row's fastest transfer: what its code path does when the
    machine is not in its slow mode (bench/README, fresh memory)."""
    if row is None or not row.get("seconds"):
        return None
    return float(row["n"] * 8 / min(row["seconds"]) / MB)


def _find(rows: Iterable[Row], peer: str) -> Row | None:
    return next((row for row in rows if row["peer"] == peer and "failed" not in row), None)


def _call_table(title: str, rows: list[Row]) -> Table:
    original = _find(rows, "original")
    ninja = _find(rows, "ninja")
    reference = original["calls_per_s"] if original else None
    body = []
    for row in rows:
        if "failed" in row:
            body.append([row["label"], "FAILED", "", "", "", "", ""])
            continue
        body.append([
            row["label"],
            f"{row['calls_per_s']:,.0f}",
            f"{row['p50_ms']:.2f}",
            f"{row['p99_ms']:.2f}",
            str(row["errors"]),
            _ratio(row["calls_per_s"], reference),
            _ratio(row["calls_per_s"], ninja["calls_per_s"] if ninja else None),
        ])  # fmt: skip
    header = ["peer", "calls/s", "p50 ms", "p99 ms", "errors", "x original", "x ninja"]
    return title, header, body


def _transfer_table(title: str, rows: list[Row]) -> Table:
    refs = {name: _find(rows, name) for name in ("original", "socket", "flight")}
    speed = {name: (row["mb_per_s"] if row else None) for name, row in refs.items()}
    best_socket = _best(refs["socket"])
    body = []
    for row in rows:
        payload = row["n"] * 8
        if "cannot" in row:
            body.append([row["label"], "cannot", "", "", "", "", "", ""])
        elif "failed" in row:
            body.append([row["label"], "FAILED", "", "", "", "", "", ""])
        else:
            best = _best(row)
            body.append([
                row["label"],
                f"{row['mb_per_s']:,.0f}",
                f"{best:,.0f} ({_ratio(best, best_socket)})" if best else "-",
                _ratio(row["mb_per_s"], speed["original"]),
                _ratio(row["mb_per_s"], speed["socket"]),
                _ratio(row["mb_per_s"], speed["flight"]),
                _times_payload(row.get("client_peak"), payload),
                _times_payload(row.get("server_peak"), payload),
            ])  # fmt: skip
    header = [
        "peer", "MB/s", "best MB/s (x socket's best)", "x original", "x socket", "x flight",
        "client peak", "server peak",
    ]  # fmt: skip
    return title, header, body


def _asgi_table(rows: list[Row]) -> Table | None:
    """servicewire under uvicorn (async services, AsyncClient) next to gunicorn, per figure."""
    body = []
    for workload in ("W1", "W2", "W3", "W4"):
        chosen = [row for row in rows if row["workload"] == workload]
        for n in sorted({row.get("n", 0) for row in chosen}):
            group = [row for row in chosen if row.get("n", 0) == n]
            sync, asgi = _find(group, "servicewire"), _find(group, "servicewire-asgi")
            if sync is None or asgi is None:
                continue
            if "calls_per_s" in sync:
                what, unit, key = f"{workload} calls/s", "", "calls_per_s"
                p99 = f"p99 {sync['p99_ms']:.2f} / {asgi['p99_ms']:.2f} ms"
            else:
                kind = "download" if workload == "W3" else "upload"
                what, unit, key = f"{workload} {kind} {n * 8 / MB:,.0f} MB", " MB/s", "mb_per_s"
                payload = n * 8
                p99 = (
                    f"best transfer ASGI / WSGI {_ratio(_best(asgi), _best(sync))}; server peak"
                    f" {_times_payload(sync.get('server_peak'), payload)}"
                    f" / {_times_payload(asgi.get('server_peak'), payload)}"
                )
            body.append([
                what,
                f"{sync[key]:,.0f}{unit}",
                f"{asgi[key]:,.0f}{unit}",
                _ratio(asgi[key], sync[key]),
                p99,
            ])  # fmt: skip
    if not body:
        return None
    title = (
        "servicewire under ASGI (uvicorn, async services, AsyncClient) "
        "vs WSGI (gunicorn, sync services, Client), both key+audit"
    )
    return title, ["figure", "WSGI", "ASGI", "ASGI / WSGI", "WSGI / ASGI detail"], body


def tables(rows: list[Row]) -> list[Table]:
    """The run's tables in reading order."""
    found: list[Table] = []
    titles = {
        "W1": "W1: one client, sequential add() on a kept-alive connection",
        "W2": "W2: {clients} concurrent clients, each its own connection",
    }
    for workload in ("W1", "W2"):
        chosen = [row for row in rows if row["workload"] == workload]
        if chosen:
            title = titles[workload].format(clients=chosen[0].get("clients", ""))
            found.append(_call_table(title, chosen))
    names = {"W3": "download", "W4": "upload", "W5": "1 GB"}
    for workload in ("W3", "W4", "W5"):
        chosen = [row for row in rows if row["workload"] == workload]
        for kind in ("download", "upload"):
            for n in sorted({row["n"] for row in chosen if row["kind"] == kind}):
                group = [row for row in chosen if row["kind"] == kind and row["n"] == n]
                title = f"{workload}: {kind} a float64 array of {n * 8 / MB:,.0f} MB"
                if workload == "W5":
                    title += f" ({names[workload]} class)"
                found.append(_transfer_table(title, group))
    asgi = _asgi_table(rows)
    if asgi is not None:
        found.append(asgi)
    return found


def notes(rows: list[Row]) -> list[str]:
    """What the tables abbreviate: each failure's message, each "cannot"'s reason."""
    found = []
    for row in rows:
        size = f" {row['n'] * 8 / MB:,.0f} MB {row['kind']}" if "n" in row else ""
        if "failed" in row:
            found.append(f"FAILED {row['workload']} {row['label']}{size}: {row['failed']}")
    cannot = sorted({row["label"] for row in rows if "cannot" in row})
    if cannot:
        reason = next(row["cannot"] for row in rows if "cannot" in row)
        found.append(f"cannot (W5): {', '.join(cannot)}: {reason}")
    return found


def _render(
    table: Table, line: Callable[[list[str], list[int]], str], rule: Callable[[list[int]], str]
) -> str:
    title, header, body = table
    widths = [max(len(cells[i]) for cells in [header, *body]) for i in range(len(header))]
    return "\n".join(
        [title, "", line(header, widths), rule(widths), *(line(c, widths) for c in body)]
    )


def text(all_tables: list[Table]) -> str:
    """Aligned plain-text tables for the terminal."""

    def line(cells: list[str], widths: list[int]) -> str:
        return "  ".join(
            cell.ljust(width) for cell, width in zip(cells, widths, strict=True)
        ).rstrip()

    def rule(widths: list[int]) -> str:
        return "  ".join("-" * width for width in widths)

    return "\n\n".join(_render(table, line, rule) for table in all_tables)


def text_notes(rows: list[Row]) -> str:
    """The notes, one per line, for the terminal."""
    return "\n".join(notes(rows))


def markdown(all_tables: list[Table], rows: list[Row], facts: dict[str, Any]) -> str:
    """The same tables as markdown, headed by the machine they ran on."""

    def line(cells: list[str], widths: list[int]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    def rule(widths: list[int]) -> str:
        return "|" + "|".join(" --- " for _ in widths) + "|"

    machine = ", ".join(f"{key}: {value}" for key, value in facts.items())
    parts = [f"Machine and run: {machine}"]
    parts += ["### " + _render(table, line, rule) for table in all_tables]
    parts += ["- " + note for note in notes(rows)]
    return "\n\n".join(parts) + "\n"


def save(folder: Path, rows: list[Row], facts: dict[str, Any]) -> tuple[Path, Path]:
    """Write ``latest.json`` and ``latest.md`` into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    json_path, md_path = folder / "latest.json", folder / "latest.md"
    json_path.write_text(json.dumps({"machine": facts, "results": rows}, indent=2) + "\n")
    md_path.write_text(markdown(tables(rows), rows, facts))
    return json_path, md_path
