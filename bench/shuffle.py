"""Does byte-shuffling arrays before compression pay? ``python -m bench.shuffle``.

For each array: its size compressed with zstd (level 3, as servicewire
compresses), the same after byte-shuffling, and what servicewire sends when
compressing (shuffled only where :func:`servicewire.segments.shuffle_pays`
says so), with compression speed. Synthetic arrays always; real recorded data
too when matplotlib is installed (its sample data: an elevation model, an
MRI slice, a topography grid, a membrane potential, EEG, stock prices).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from servicewire import compression
from servicewire.segments import pack_segments, shuffle_pays
from servicewire.values import shuffled


def synthetic(n: int = 4_000_000) -> Iterator[tuple[str, Any]]:
    rng = np.random.default_rng(0)
    t = np.linspace(0, 400, n)
    yield "sensor f64, rounded to 1e-3", np.round(np.sin(t) + rng.normal(0, 0.01, n), 3)
    yield "simulated field f64", np.cumsum(rng.normal(0, 1e-3, n))
    yield "float32 measurement", (np.sin(t) + rng.normal(0, 0.05, n)).astype(np.float32)
    grid = np.add.outer(np.arange(2000), np.arange(2000)) * 7 % 4096
    yield "image uint16", (grid + rng.integers(0, 16, grid.shape)).astype(np.uint16)
    yield "counts int64", rng.poisson(20, n).astype(np.int64)
    yield "uniform f64 in [0, 1)", rng.random(n)
    yield "normal f64", rng.normal(size=n)


def recorded() -> Iterator[tuple[str, Any]]:
    try:
        from matplotlib import cbook
    except ImportError:
        return
    with cbook.get_sample_data("jacksboro_fault_dem.npz") as f:
        yield "elevation model f64 (real)", np.asarray(f["elevation"], dtype=np.float64)
    with cbook.get_sample_data("topobathy.npz") as f:
        yield "topography f64 (real)", np.asarray(f["topo"], dtype=np.float64)
    with cbook.get_sample_data("s1045.ima.gz") as f:
        yield "MRI slice uint16 (real)", np.frombuffer(f.read(), np.uint16)
    with cbook.get_sample_data("membrane.dat") as f:
        yield "membrane potential f32 (real)", np.frombuffer(f.read(), np.float32)
    with cbook.get_sample_data("eeg.dat") as f:
        yield "EEG int16 (real)", np.frombuffer(f.read(), np.int16)
    with cbook.get_sample_data("goog.npz") as f:
        yield "stock prices f64 (real)", np.asarray(f["price_data"]["adj_close"], np.float64)


def _zstd(data: Any) -> tuple[int, float]:
    start = time.perf_counter()
    size = sum(map(len, compression.compress([data], "zstd")))
    return size, time.perf_counter() - start


def main() -> None:
    print(
        f"{'array':32} {'MB':>6} {'zstd':>6} {'shuffled':>8} {'sent':>6}"
        f" {'zstd MB/s':>9} {'shuffled MB/s':>13}"
    )
    for name, array in (*synthetic(), *recorded()):
        array = np.ascontiguousarray(array)
        raw = memoryview(array.reshape(-1).view(np.uint8))
        plain, plain_s = _zstd(raw)
        start = time.perf_counter()
        shuffled_size, _ = _zstd(shuffled(raw, array.itemsize))
        shuffled_s = time.perf_counter() - start
        sent = sum(map(len, compression.compress(pack_segments(array, shuffle=True), "zstd")))
        chosen = "yes" if shuffle_pays(raw, array.itemsize) else "no"
        mb = len(raw) / 1e6
        print(
            f"{name:32} {mb:6.2f} {len(raw) / plain:5.2f}x {len(raw) / shuffled_size:7.2f}x"
            f" {len(raw) / sent:5.2f}x {mb / plain_s:9.0f} {mb / shuffled_s:13.0f}"
            f"  shuffled: {chosen}"
        )


if __name__ == "__main__":
    main()
