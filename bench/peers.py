"""The client side of every peer, each with its natural client code.

Every peer offers the same three operations: ``add(a, b)``, ``download(n)``
returning a float64 ndarray, and ``upload(array)`` returning the bytes the
server received. HTTP peers use one ``httpx.Client`` each (one kept-alive
connection per client; servicewire's own ``Client`` is httpx inside too).
"""

from __future__ import annotations

import asyncio
import json
import pickle
import socket
import struct
from typing import Any, ClassVar

import httpx
import numpy as np

from servicewire import AsyncClient, Client

_TIMEOUT = 300.0


class Peer:
    """One way to call the three operations. ``bulk``: can move arrays at all;
    ``huge``: can move a 1 GB array (JSON cannot, in any sane time or memory)."""

    name: ClassVar[str]
    label: ClassVar[str]
    small = True
    bulk = True
    huge = False

    def __init__(self, urls: dict[str, Any]) -> None:
        self.urls = urls

    def add(self, a: int, b: int) -> int:
        raise NotImplementedError

    def download(self, n: int) -> np.ndarray:
        raise NotImplementedError

    def upload(self, data: np.ndarray) -> int:
        raise NotImplementedError

    def close(self) -> None:
        """Release the connection."""


class Servicewire(Peer):
    """servicewire as deployed: bearer key, audit trail, msgpack."""

    name, label, huge = "servicewire", "servicewire (key+audit)", True
    path = "/services/"

    def __init__(self, urls: dict[str, Any]) -> None:
        super().__init__(urls)
        self.client = self.connect(urls)

    def connect(self, urls: dict[str, Any]) -> Client:
        """The client, with this row's credential."""
        return Client(urls["site"] + self.path, key=urls["key"], timeout=_TIMEOUT)

    def add(self, a: int, b: int) -> int:
        return self.client.call("add", a=a, b=b)  # type: ignore[no-any-return]

    def download(self, n: int) -> np.ndarray:
        return self.client.call("download", n=n)  # type: ignore[no-any-return]

    def upload(self, data: np.ndarray) -> int:
        return self.client.call("upload", data=data)  # type: ignore[no-any-return]

    def close(self) -> None:
        self.client.close()


class ServicewireToken(Servicewire):
    """servicewire with a token: one login with the key, then ``Bearer swt...``."""

    name, label, bulk, huge = "servicewire-token", "servicewire (token+audit)", False, False

    def connect(self, urls: dict[str, Any]) -> Client:
        return Client(urls["site"] + self.path, key=urls["key"], use_tokens=True, timeout=_TIMEOUT)


class ServicewireSigned(Servicewire):
    """servicewire with every request signed by an ed25519 key (RFC 9421)."""

    name, label, bulk, huge = "servicewire-signed", "servicewire (signature+audit)", False, False

    def connect(self, urls: dict[str, Any]) -> Client:
        return Client(
            urls["site"] + self.path,
            key_id=urls["key_id"],
            signing_key=urls["signing_key"],
            timeout=_TIMEOUT,
        )


class ServicewireBare(Servicewire):
    """The same client against the bench-only view without auth and audit."""

    name, label = "servicewire-bare", "servicewire (no auth/audit)"
    path = "/bare/"

    def connect(self, urls: dict[str, Any]) -> Client:
        return Client(urls["site"] + self.path, timeout=_TIMEOUT)


class AsyncPeer(Peer):
    """A peer whose client is asynchronous: every instance in a process shares
    one event loop, so that W2 runs its clients as tasks on it, as an asyncio
    program does (the synchronous peers' clients are threads)."""

    _shared_loop: ClassVar[asyncio.AbstractEventLoop | None] = None

    def __init__(self, urls: dict[str, Any]) -> None:
        super().__init__(urls)
        if AsyncPeer._shared_loop is None:
            AsyncPeer._shared_loop = asyncio.new_event_loop()
        self.loop = AsyncPeer._shared_loop

    async def add_async(self, a: int, b: int) -> int:
        raise NotImplementedError

    def add(self, a: int, b: int) -> int:
        return self.loop.run_until_complete(self.add_async(a, b))


class ServicewireAsgi(AsyncPeer):
    """servicewire as deployed, under uvicorn: ``async def`` services, AsyncClient."""

    name, label, huge = "servicewire-asgi", "servicewire ASGI (key+audit, AsyncClient)", True

    def __init__(self, urls: dict[str, Any]) -> None:
        super().__init__(urls)
        self.client = AsyncClient(urls["asgi"] + "/services/", key=urls["key"], timeout=_TIMEOUT)

    async def add_async(self, a: int, b: int) -> int:
        return await self.client.call("async_add", a=a, b=b)  # type: ignore[no-any-return]

    def download(self, n: int) -> np.ndarray:
        return self.loop.run_until_complete(self.client.call("async_download", n=n))  # type: ignore[no-any-return]

    def upload(self, data: np.ndarray) -> int:
        return self.loop.run_until_complete(self.client.call("async_upload", data=data))  # type: ignore[no-any-return]

    def close(self) -> None:
        # The shared loop itself ends with the process.
        self.loop.run_until_complete(self.client.close())


class _Http(Peer):
    prefix: ClassVar[str]

    def __init__(self, urls: dict[str, Any]) -> None:
        super().__init__(urls)
        self.http = httpx.Client(base_url=urls["site"] + self.prefix, timeout=_TIMEOUT)

    def close(self) -> None:
        self.http.close()


class Original(_Http):
    """The original pattern: pickle both ways, the secret User-Agent."""

    name, label, huge, prefix = "original", "original pattern (pickle 5)", True, "/original/"

    def _call(self, op: str, **kwargs: Any) -> Any:
        body = pickle.dumps(kwargs, protocol=5)
        response = self.http.post(op, content=body, headers={"User-Agent": "Python-services/2.7"})
        response.raise_for_status()
        return pickle.loads(response.content)

    def add(self, a: int, b: int) -> int:
        return self._call("add", a=a, b=b)  # type: ignore[no-any-return]

    def download(self, n: int) -> np.ndarray:
        return self._call("download", n=n)  # type: ignore[no-any-return]

    def upload(self, data: np.ndarray) -> int:
        return self._call("upload", data=data)  # type: ignore[no-any-return]


class _JsonRest(_Http):
    """JSON in, JSON out, with httpx's own (stdlib) JSON, as a REST client does."""

    def _call(self, op: str, payload: dict[str, Any]) -> Any:
        response = self.http.post(op, json=payload)
        response.raise_for_status()
        return response.json()

    def add(self, a: int, b: int) -> int:
        return self._call("add", {"a": a, "b": b})  # type: ignore[no-any-return]

    def download(self, n: int) -> np.ndarray:
        return np.array(self._call("download", {"n": n}), dtype=np.float64)

    def upload(self, data: np.ndarray) -> int:
        return self._call("upload", {"data": data.tolist()})  # type: ignore[no-any-return]


class Ninja(_JsonRest):
    name, label, prefix = "ninja", "django-ninja", "/ninja/"


class Drf(_JsonRest):
    name, label, prefix = "drf", "Django REST framework", "/drf/"


class Orjson(_JsonRest):
    """A plain view with orjson; the client uses orjson too, numpy aware."""

    name, label, prefix = "orjson", "plain view + orjson", "/orjson/"

    def _call(self, op: str, payload: dict[str, Any]) -> Any:
        import orjson

        body = orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)
        response = self.http.post(op, content=body, headers={"Content-Type": "application/json"})
        response.raise_for_status()
        return orjson.loads(response.content)

    def upload(self, data: np.ndarray) -> int:
        return self._call("upload", {"data": data})  # type: ignore[no-any-return]


class ModernRpc(_JsonRest):
    """JSON-RPC 2.0: every call is an envelope posted to one entry point."""

    name, label, prefix = "modernrpc", "django-modern-rpc (JSON-RPC)", "/rpc/"

    def __init__(self, urls: dict[str, Any]) -> None:
        super().__init__(urls)
        self.next_id = 0

    def _call(self, op: str, payload: dict[str, Any]) -> Any:
        self.next_id += 1
        envelope = {"jsonrpc": "2.0", "id": self.next_id, "method": op, "params": payload}
        response = self.http.post(
            "", content=json.dumps(envelope), headers={"Content-Type": "application/json"}
        )
        response.raise_for_status()
        answer = response.json()
        if "error" in answer:
            raise RuntimeError(f"JSON-RPC error: {answer['error']}")
        return answer["result"]


class Flight(Peer):
    """Apache Arrow Flight over gRPC: ``do_get``/``do_put`` of one float64 column."""

    name, label, small, huge = "flight", "Arrow Flight", False, True

    def __init__(self, urls: dict[str, Any]) -> None:
        super().__init__(urls)
        import pyarrow.flight as flight

        self.flight = flight
        self.client = flight.connect(f"grpc://127.0.0.1:{urls['flight']}")

    def download(self, n: int) -> np.ndarray:
        column = self.client.do_get(self.flight.Ticket(str(n).encode())).read_all().column(0)
        if column.num_chunks == 1:
            return column.chunk(0).to_numpy()  # type: ignore[no-any-return]
        return column.to_numpy()  # type: ignore[no-any-return]

    def upload(self, data: np.ndarray) -> int:
        import pyarrow as pa

        table = pa.table({"data": pa.array(data)})
        descriptor = self.flight.FlightDescriptor.for_path("upload")
        writer, reader = self.client.do_put(descriptor, table.schema)
        writer.write_table(table)
        writer.done_writing()
        answer = reader.read()
        writer.close()
        return int(answer.to_pybytes()) if answer is not None else 0

    def close(self) -> None:
        self.client.close()


class RawSocket(Peer):
    """Bytes over one loopback TCP connection into a preallocated buffer."""

    name, label, small, huge = "socket", "loopback socket (limit)", False, True

    def __init__(self, urls: dict[str, Any]) -> None:
        super().__init__(urls)
        self.conn = socket.create_connection(("127.0.0.1", urls["socket"]))
        self.buffer = np.empty(0)

    def download(self, n: int) -> np.ndarray:
        if self.buffer.size != n:
            self.buffer = np.empty(n)
        self.conn.sendall(struct.pack("!cQ", b"G", n * 8))
        view = memoryview(self.buffer).cast("B")
        filled = 0
        while filled < len(view):
            got = self.conn.recv_into(view[filled:])
            if not got:
                raise ConnectionError("the socket server closed the connection")
            filled += got
        return self.buffer

    def upload(self, data: np.ndarray) -> int:
        self.conn.sendall(struct.pack("!cQ", b"P", data.nbytes))
        self.conn.sendall(memoryview(data).cast("B"))
        answer = b""
        while len(answer) < 8:
            answer += self.conn.recv(8 - len(answer))
        return int(struct.unpack("!Q", answer)[0])

    def close(self) -> None:
        self.conn.close()


class Memcpy(Peer):
    """No network at all: numpy copies the array once."""

    name, label, small, huge = "memcpy", "memcpy (numpy copy)", False, True

    def __init__(self, urls: dict[str, Any]) -> None:
        super().__init__(urls)
        self.source = np.empty(0)

    def prepare(self, n: int) -> None:
        """Create the source array outside the timing."""
        self.source = np.arange(n, dtype=np.float64)

    def download(self, n: int) -> np.ndarray:
        return self.source.copy()

    def upload(self, data: np.ndarray) -> int:
        return int(data.copy().nbytes)


HTTP_PEERS: tuple[type[Peer], ...] = (
    Servicewire,
    ServicewireAsgi,
    ServicewireToken,
    ServicewireSigned,
    ServicewireBare,
    Original,
    Orjson,
    Ninja,
    Drf,
    ModernRpc,
)
ALL_PEERS: tuple[type[Peer], ...] = (*HTTP_PEERS, Flight, RawSocket, Memcpy)
BY_NAME: dict[str, type[Peer]] = {peer.name: peer for peer in ALL_PEERS}
