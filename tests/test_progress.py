"""Progress bars for large transfers, on stderr, only when asked."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from servicewire import Client

pytestmark = pytest.mark.django_db(transaction=True)

BIG = np.ones(2 * 2**20)  # 16 MiB: over the 8 MiB threshold
SMALL = np.ones(1000)


@pytest.fixture
def mount(live_server: Any) -> str:
    return f"{live_server.url}/services/"


def test_large_transfers_show_bars_both_ways_when_asked(
    mount: str, key: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with Client(mount, key, progress=True) as sw:
        back = sw.echo(value=BIG)
    np.testing.assert_array_equal(back, BIG)
    err = capsys.readouterr().err
    assert "'echo' up" in err and "'echo' down" in err
    assert "16.0M" in err  # the total, in binary units


def test_small_transfers_show_nothing(
    mount: str, key: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with Client(mount, key, progress=True) as sw:
        sw.echo(value=SMALL)
    assert capsys.readouterr().err == ""


def test_no_bars_unless_asked(mount: str, key: str, capsys: pytest.CaptureFixture[str]) -> None:
    with Client(mount, key) as sw:
        sw.echo(value=BIG)
    assert capsys.readouterr().err == ""


def test_the_command_line_can_force_or_silence_bars(
    mount: str,
    key: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from servicewire.cli import main

    monkeypatch.setenv("SERVICEWIRE_URL", mount)
    monkeypatch.setenv("SERVICEWIRE_KEY", key)
    # A string of 9 MiB makes a large body without numpy on the command line.
    args = ["call", "echo", f"value={'x' * 9 * 2**20}"]
    assert main(["--progress", *args]) == 0
    assert "'echo' up" in capsys.readouterr().err
    assert main(["--no-progress", *args]) == 0
    assert "'echo'" not in capsys.readouterr().err
    # Not a terminal (as under pytest): no bars by default.
    assert main(args) == 0
    assert "'echo'" not in capsys.readouterr().err
