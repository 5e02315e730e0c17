"""Pickle for callers a site trusts with whole Python objects, read through an allow-list.

Pickle can rebuild any object, and rebuilding is running code: a pickle that
names ``os.system`` runs a shell. So nothing here calls :func:`pickle.loads`.
Bodies are read by :class:`RestrictedUnpickler`, which

- resolves a global only if its exact ``(module, name)`` pair is on the
  :class:`AllowList` (a name with a dot in it is refused, so no attribute
  traversal reaches past the list), and refuses everything else with
  :class:`~servicewire.errors.BadRequest` naming the global *before* it is
  imported or called;
- refuses persistent ids (``PERSID``, ``BINPERSID``) and the ``copyreg``
  extension registry (``EXT1``, ``EXT2``, ``EXT4``) outright: the registry
  maps numbers to globals, and CPython's own unpickler serves codes it has
  seen before from a process-wide cache without asking ``find_class``;
- rebuilds numpy arrays, scalars and dtypes itself, from numpy's public
  constructors, instead of handing numpy's ``__setstate__`` state the sender
  wrote. That state can give a dtype the object flag, or change the item size
  of a dtype an array already uses, and numpy trusts it. Object dtypes
  (and structured dtypes holding objects) are refused, since they would let
  arbitrary objects back in;
- never changes a global: ``BUILD``, ``APPEND(S)``, ``SETITEM(S)`` and
  ``ADDITEMS`` on a class or on an object the allow-list resolved are refused,
  so a pickle cannot set attributes of an allowed class or fill a listed
  module-level dict for every later request.

The unpickler is pickle's pure-Python one, whose opcodes can be overridden
one by one; CPython's C unpickler cannot refuse an extension code or
intercept a ``BUILD``. It is 10 to 15 times slower on pickles of many small
objects (a list of a million floats: ~0.5 s against ~0.04 s) and costs
nothing on arrays, whose data travels out of band and is never parsed (a
100 MiB array decodes in well under a millisecond). Scanning the opcodes with
``pickletools.genops`` first and then using the C unpickler would cost about
as much as this whole load, read in-band data twice, and still leave
``BUILD`` open. Send bulk data as arrays, or in msgpack.

Framing. A body is either a bare pickle stream (what ``pickle.dumps`` writes;
protocol 3 or later, since protocol 2 spells bytes and builtins with Python 2
names this list does not hold), or, when the value holds buffers (protocol 5
out-of-band data, as numpy arrays give), this frame, all integers
little-endian::

    b"SWP5"                   magic
    u32  n                    number of out-of-band buffers, at most MAX_BUFFERS
    u64  pickle_length        length of the pickle stream
    u64  length[n]            length of each buffer, in the order the stream uses them
    pickle stream             pickle_length bytes, straight after the header
    buffers                   each starts at the next multiple of 64 bytes from the
                              body's start (zero padding between), so that arrays
                              are aligned; the last one ends the body exactly

A body whose lengths do not add up to its size exactly is refused. Buffers are
handed to the unpickler as slices of the received buffer, so arrays decoded
from a ``bytearray`` body are writable views of it: no copy of the payload.

Example::

    codec = PickleCodec(allow=["myapp.models.Point"])
    body = codec.encode({"samples": numpy.arange(3.0)})
    codec.decode(body)          # {'samples': array([0., 1., 2.])}
"""

from __future__ import annotations

import collections
import datetime
import decimal
import functools
import io
import pickle
import re
import struct
import uuid
from collections.abc import Callable, Iterable
from typing import Any, ClassVar, Final

from servicewire.codecs import Body, Codec
from servicewire.errors import BadRequest
from servicewire.pickle_numpy import (
    DTYPE_SPEC_RE,
    array_from_state,
    check_dtype,
    check_shape,
    dtype_from_state,
    is_dtype,
    is_numpy,
    numpy_module,
)
from servicewire.segments import Segment

__all__ = [
    "CONTENT_TYPE",
    "DEFAULT_ALLOWED",
    "MAX_BUFFERS",
    "PICKLE",
    "AllowList",
    "PickleCodec",
    "RestrictedUnpickler",
    "parse_allow",
    "pickle_codec",
]

CONTENT_TYPE: Final = "application/x-python-pickle"
MAGIC: Final = b"SWP5"
#: Most out-of-band buffers one body may carry (one per array).
MAX_BUFFERS: Final = 65_536
_ALIGN: Final = 64
_HEADER: Final = struct.Struct("<4sIQ")


class _NumpyHook(str):
    """Names a method of the unpickler that stands in for a numpy global."""


class _NdarrayMarker:
    """Stands in for ``numpy.ndarray``: only an argument to ``_reconstruct``.

    Calling ``numpy.ndarray`` would hand back uninitialised memory.
    """

    __slots__ = ()

    def __call__(self, *args: Any) -> Any:
        raise BadRequest("pickle calls numpy.ndarray, which is not allowed")

    def __repr__(self) -> str:
        return "<numpy.ndarray, as an argument of _reconstruct only>"


_NDARRAY: Final = _NdarrayMarker()


def _bytearray(data: Any = b"") -> bytearray:
    """``builtins.bytearray`` as protocols 3 and 4 use it: from bytes only.

    ``bytearray(10**10)`` would allocate ten gigabytes from eleven bytes of pickle.
    """
    if not isinstance(data, bytes | bytearray):
        raise BadRequest("pickle calls bytearray with something other than bytes")
    return bytearray(data)


#: The globals every pickle may name: containers and scalars of the value
#: table, and what numpy's own pickles of arrays, scalars and dtypes use (both
#: numpy 1 and numpy 2 module names; servicewire's code answers them, not
#: numpy's). ``range``, ``defaultdict`` and named tuples are left out: the
#: first turns a few bytes into a huge list when passed to ``list``, the
#: second calls a factory later, the third live in user modules.
DEFAULT_ALLOWED: Final[dict[tuple[str, str], Any]] = {
    ("builtins", "dict"): dict,
    ("builtins", "list"): list,
    ("builtins", "tuple"): tuple,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "bytearray"): _bytearray,
    ("builtins", "complex"): complex,
    ("builtins", "slice"): slice,
    ("datetime", "date"): datetime.date,
    ("datetime", "time"): datetime.time,
    ("datetime", "datetime"): datetime.datetime,
    ("datetime", "timedelta"): datetime.timedelta,
    ("datetime", "timezone"): datetime.timezone,
    ("decimal", "Decimal"): decimal.Decimal,
    ("uuid", "UUID"): uuid.UUID,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("collections", "deque"): collections.deque,
    ("numpy", "dtype"): _NumpyHook("_numpy_dtype"),
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy._core.numeric", "_frombuffer"): _NumpyHook("_numpy_frombuffer"),
    ("numpy.core.numeric", "_frombuffer"): _NumpyHook("_numpy_frombuffer"),
    ("numpy._core.multiarray", "scalar"): _NumpyHook("_numpy_scalar"),
    ("numpy.core.multiarray", "scalar"): _NumpyHook("_numpy_scalar"),
    ("numpy._core.multiarray", "_reconstruct"): _NumpyHook("_numpy_reconstruct"),
    ("numpy.core.multiarray", "_reconstruct"): _NumpyHook("_numpy_reconstruct"),
}

# Types whose pickles never BUILD (UUID does, checked apart); a BUILD on one
# is a crafted pickle setting attributes on it.
_NEVER_BUILT: Final = frozenset(
    {
        type(None),
        bool,
        int,
        float,
        str,
        bytes,
        memoryview,
        pickle.PickleBuffer,
        *(obj for obj in DEFAULT_ALLOWED.values() if isinstance(obj, type)),
        bytearray,
    }
    - {uuid.UUID}
)

# Modules no site should let a pickle reach; a PICKLE_ALLOW entry naming one
# is refused at start-up. Not a defence by itself (the allow-list is): a guard
# against pasting the obvious gadgets into the list.
_NEVER_MODULES: Final = frozenset(
    {
        "builtins",
        "os",
        "posix",
        "nt",
        "subprocess",
        "sys",
        "importlib",
        "pickle",
        "_pickle",
        "copyreg",
        "marshal",
        "ctypes",
        "shutil",
        "runpy",
        "code",
        "codeop",
        "pty",
        "socket",
        "types",
        "functools",
        "operator",
        "io",
        "_io",
        "posixpath",
        "ntpath",
        "pathlib",
        "tempfile",
        "multiprocessing",
        "threading",
        "signal",
        "gc",
        "inspect",
        "webbrowser",
        "numpy",
    }
)
_ENTRY_RE: Final = re.compile(
    r"(?P<module>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)\.(?P<name>[A-Za-z_]\w*)"
)


def parse_allow(entries: Iterable[str]) -> frozenset[tuple[str, str]]:
    """The ``(module, name)`` pairs of ``"module.name"`` entries (``PICKLE_ALLOW``).

    Raises ``ValueError`` for an entry that is not a dotted name, or that
    names a module on the never-list (``os``, ``subprocess``, ``builtins``, ...).

    >>> sorted(parse_allow(["myapp.models.Point"]))
    [('myapp.models', 'Point')]
    """
    pairs = set()
    for entry in entries:
        found = _ENTRY_RE.fullmatch(entry) if isinstance(entry, str) else None
        if found is None:
            raise ValueError(
                f"PICKLE_ALLOW entry {entry!r} is not a 'module.name' pair such as "
                "'myapp.models.Point' (nested names like 'Outer.Inner' cannot be listed)"
            )
        module, name = found["module"], found["name"]
        if module.split(".", 1)[0] in _NEVER_MODULES:
            raise ValueError(
                f"PICKLE_ALLOW entry {entry!r} names a module a pickle must never reach"
            )
        pairs.add((module, name))
    return frozenset(pairs)


def _label(module: Any, name: Any) -> str:
    text = f"{module}.{name}"
    if len(text) > 200:
        text = text[:199] + "…"
    # The names come from the sender: quoted when they hold anything unusual.
    return text if text.isprintable() else repr(text)


def _refused(module: Any, name: Any) -> BadRequest:
    label = _label(module, name)
    return BadRequest(f"pickle refers to {label}, which is not allowed", details={"global": label})


class AllowList:
    """Exact ``(module, name)`` pairs a pickle may name: the defaults and ``extra``.

    ``extra`` holds ``"module.name"`` strings (see :func:`parse_allow`); those
    are imported when a pickle first names them.
    """

    def __init__(self, extra: Iterable[str] = ()) -> None:
        self.extra: Final = parse_allow(extra)

    def resolve(self, module: Any, name: Any) -> Any:
        """The object for a global, or :class:`BadRequest` if it is not listed."""
        if type(module) is not str or type(name) is not str or "." in name:
            raise _refused(module, name)
        key = (module, name)
        found = DEFAULT_ALLOWED.get(key)
        if found is not None:
            return found
        if key in self.extra:
            return _import_listed(module, name)
        raise _refused(module, name)


def _import_listed(module: str, name: str) -> Any:
    import importlib

    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        raise BadRequest(
            f"pickle refers to {module}.{name}, which is allowed but cannot be imported here"
        ) from None


class _Memo(dict[int, Any]):
    """The unpickler's memo, noting where it keeps objects a BUILD will replace.

    The dtypes and arrays the numpy hooks create are placeholders until their
    ``BUILD``, which makes a new object rather than changing this one; every
    memo slot holding the placeholder then gets the new object too.
    """

    def __init__(self) -> None:
        super().__init__()
        self.pending: dict[int, tuple[Any, list[int]]] = {}

    def __setitem__(self, key: int, value: Any) -> None:
        super().__setitem__(key, value)
        waiting = self.pending.get(id(value))
        if waiting is not None and waiting[0] is value:
            waiting[1].append(key)

    def watch(self, placeholder: Any) -> None:
        self.pending[id(placeholder)] = (placeholder, [])

    def is_pending(self, obj: Any) -> bool:
        """Whether ``obj`` is a placeholder still waiting for its BUILD."""
        waiting = self.pending.get(id(obj))
        return waiting is not None and waiting[0] is obj

    def settle(self, placeholder: Any, built: Any) -> None:
        """Put ``built`` wherever the memo holds the pending ``placeholder``."""
        _, keys = self.pending.pop(id(placeholder))
        for key in keys:
            if self.get(key) is placeholder:
                dict.__setitem__(self, key, built)


def _refuse_opcode(what: str) -> Callable[[RestrictedUnpickler], None]:
    def refuse(self: RestrictedUnpickler) -> None:
        raise BadRequest(f"pickle uses {what}, which is not allowed")

    return refuse


class RestrictedUnpickler(pickle._Unpickler):
    """Unpickles only what ``allow`` lists; see the module docstring for the rules.

    ``buffers`` are the out-of-band buffers, in the order the stream takes them.
    """

    # The pure-Python unpickler's opcode table, with the refused opcodes and
    # BUILD replaced; load() looks opcodes up in self.dispatch.
    dispatch: ClassVar[dict[int, Callable[[Any], None]]] = dict(pickle._Unpickler.dispatch)
    stack: list[Any]
    metastack: list[list[Any]]
    dispatch[pickle.PERSID[0]] = _refuse_opcode("a persistent id (PERSID)")
    dispatch[pickle.BINPERSID[0]] = _refuse_opcode("a persistent id (BINPERSID)")
    for _opcode in ("EXT1", "EXT2", "EXT4"):
        dispatch[getattr(pickle, _opcode)[0]] = _refuse_opcode(
            f"the copyreg extension registry ({_opcode})"
        )
    del _opcode

    def __init__(self, file: io.BytesIO, allow: AllowList, buffers: Iterable[Any] = ()) -> None:
        super().__init__(file, fix_imports=False, buffers=buffers)
        self._allow = allow
        self.memo: _Memo = _Memo()
        self._globals: dict[int, str] = {}

    def find_class(self, module: str, name: str) -> Any:
        """The allow-listed object for ``module.name``; never an import of anything else."""
        found = self._allow.resolve(module, name)
        if isinstance(found, _NumpyHook):
            return getattr(self, found)
        # Globals are shared by the whole process: a pickle may call them, never
        # change them (see _check_target).
        self._globals[id(found)] = _label(module, name)
        return found

    def _check_target(self, target: Any) -> None:
        """Refuse to BUILD, append to or set items of a global or a class.

        Without this, a pickle could set attributes of an allowed class, or
        fill a module-level list or dict a site listed, for every later request.
        """
        label = self._globals.get(id(target))
        if label is not None or isinstance(target, type):
            what = label or getattr(target, "__qualname__", "a class")
            raise BadRequest(f"pickle changes {what} itself, which is not allowed")

    # APPEND(S), SETITEM(S) and ADDITEMS change an object on the stack: below
    # the pushed item(s), or just below the mark.

    def load_append(self) -> None:
        """``APPEND``, unless into a global."""
        self._check_target(self.stack[-2])
        super().load_append()  # type: ignore[misc]

    def load_setitem(self) -> None:
        """``SETITEM``, unless into a global."""
        self._check_target(self.stack[-3])
        super().load_setitem()  # type: ignore[misc]

    def _load_marked(self, load: Callable[[pickle._Unpickler], None]) -> None:
        below_mark = self.metastack[-1] if self.metastack else None
        if below_mark:
            self._check_target(below_mark[-1])
        load(self)

    def load_appends(self) -> None:
        """``APPENDS``, unless into a global."""
        self._load_marked(pickle._Unpickler.load_appends)  # type: ignore[attr-defined]

    def load_setitems(self) -> None:
        """``SETITEMS``, unless into a global."""
        self._load_marked(pickle._Unpickler.load_setitems)  # type: ignore[attr-defined]

    def load_additems(self) -> None:
        """``ADDITEMS``, unless into a global."""
        self._load_marked(pickle._Unpickler.load_additems)  # type: ignore[attr-defined]

    dispatch[pickle.APPEND[0]] = load_append
    dispatch[pickle.SETITEM[0]] = load_setitem
    dispatch[pickle.APPENDS[0]] = load_appends
    dispatch[pickle.SETITEMS[0]] = load_setitems
    dispatch[pickle.ADDITEMS[0]] = load_additems

    def persistent_load(self, pid: Any) -> Any:
        """Persistent ids are refused (the opcodes already are; this is the backstop)."""
        raise BadRequest("pickle uses a persistent id, which is not allowed")

    def load(self) -> Any:
        """Unpickle the stream; BadRequest for anything not allowed."""
        value = super().load()
        if any(not is_dtype(p) for p, _ in self.memo.pending.values()):
            # An array placeholder from _reconstruct was never given its data.
            raise BadRequest("pickle leaves a numpy array without its data")
        return value

    def load_build(self) -> None:
        """``BUILD``: numpy placeholders are replaced; other numpy and built-in
        objects may not be rebuilt; UUIDs take a checked state."""
        state = self.stack.pop()
        inst = self.stack[-1]
        self._check_target(inst)
        if is_dtype(inst) or is_numpy(inst):
            if not self.memo.is_pending(inst):
                raise BadRequest(f"pickle rebuilds a {type(inst).__name__}, which is not allowed")
            built = dtype_from_state(inst, state) if is_dtype(inst) else array_from_state(state)
            self.memo.settle(inst, built)
            self.stack[-1] = built
            return
        if type(inst) is uuid.UUID:
            _check_uuid_state(state)
        elif type(inst) in _NEVER_BUILT:
            raise BadRequest(f"pickle rebuilds a {type(inst).__name__}, which is not allowed")
        self.stack.append(state)
        super().load_build()  # type: ignore[misc]

    dispatch[pickle.BUILD[0]] = load_build

    # -- numpy, answered here rather than by numpy's own unpickling helpers --

    def _numpy_dtype(self, spec: Any, align: Any = False, copy: Any = True) -> Any:
        np = numpy_module()
        if type(spec) is not str or not DTYPE_SPEC_RE.fullmatch(spec) or type(align) is not bool:
            raise BadRequest("pickle calls numpy.dtype with arguments numpy never writes")
        # A fresh object, even for a built-in type, so that the memo can tell
        # two placeholders apart; it is replaced, never changed, at its BUILD.
        dtype = np.dtype(spec, align=align, copy=True)
        check_dtype(dtype)
        self.memo.watch(dtype)
        return dtype

    def _numpy_reconstruct(self, cls: Any, shape: Any, code: Any) -> Any:
        # numpy's own pickles call _reconstruct(ndarray, (0,), b'b') and BUILD the result.
        if cls is not _NDARRAY or shape != (0,) or type(code) is not bytes:
            raise BadRequest("pickle calls numpy's _reconstruct with arguments numpy never writes")
        placeholder = numpy_module().empty((0,), dtype="u1")
        self.memo.watch(placeholder)
        return placeholder

    def _numpy_frombuffer(self, buffer: Any, dtype: Any, shape: Any, order: Any) -> Any:
        np = numpy_module()
        check_dtype(dtype)
        check_shape(shape)
        if order not in ("C", "F"):
            raise BadRequest("pickle gives a numpy array an order other than C or F")
        if not isinstance(buffer, bytes | bytearray | memoryview | pickle.PickleBuffer):
            raise BadRequest("pickle gives a numpy array data that is not a buffer")
        return np.frombuffer(buffer, dtype=dtype).reshape(shape, order=order)

    def _numpy_scalar(self, dtype: Any, data: Any) -> Any:
        np = numpy_module()
        check_dtype(dtype)
        if type(data) is not bytes or len(data) != dtype.itemsize:
            raise BadRequest("pickle gives a numpy scalar data of the wrong size")
        return np.frombuffer(data, dtype=dtype)[0]


def _check_uuid_state(state: Any) -> None:
    # uuid.UUID.__setstate__ stores whatever it is given; a UUID is an int.
    if (
        type(state) is not dict
        or type(state.get("int")) is not int
        or not 0 <= state["int"] < 2**128
        or not set(state) <= {"int", "is_safe"}
        or state.get("is_safe") not in (0, -1, None)
    ):
        raise BadRequest("pickle gives a UUID a state other than its number")


def _split(data: Body) -> tuple[memoryview, list[memoryview]]:
    """The pickle stream and the out-of-band buffers of a body, as views of it."""
    view = memoryview(data)
    if view.ndim != 1 or view.format != "B":
        view = view.cast("B")
    if not view.nbytes:
        raise BadRequest("the pickle body is empty")
    if bytes(view[:4]) != MAGIC:
        # A bare stream: the unpickler reads it, whatever protocol it claims.
        return view, []
    size = view.nbytes
    if size < _HEADER.size:
        raise BadRequest("the pickle body is shorter than its header")
    _, count, stream_length = _HEADER.unpack_from(view)
    if count > MAX_BUFFERS:
        raise BadRequest(f"a pickle body of {count} buffers exceeds the limit of {MAX_BUFFERS}")
    start = _HEADER.size + 8 * count
    if start > size:
        raise BadRequest("the pickle body is shorter than its header says")
    lengths = struct.unpack_from(f"<{count}Q", view, _HEADER.size)
    end = start + stream_length
    buffers = []
    for length in lengths:
        offset = _aligned(end)
        end = offset + length
        if end > size:
            break
        buffers.append(view[offset:end])
    if end != size or start + stream_length > size:
        raise BadRequest(
            f"the pickle body's lengths do not add up: its header accounts for {end} bytes "
            f"of {size}"
        )
    return view[start : start + stream_length], buffers


def _aligned(offset: int) -> int:
    return -(-offset // _ALIGN) * _ALIGN


def _frame(stream: bytes, buffers: list[pickle.PickleBuffer]) -> list[Segment]:
    """The frame as segments: the header and stream, then padding and a view of each buffer."""
    raws = [buffer.raw() for buffer in buffers]
    header = _HEADER.pack(MAGIC, len(raws), len(stream)) + struct.pack(
        f"<{len(raws)}Q", *(raw.nbytes for raw in raws)
    )
    parts: list[Segment] = [header + stream]
    end = len(header) + len(stream)
    for raw in raws:
        padding = _aligned(end) - end
        if padding:
            parts.append(b"\0" * padding)
        parts.append(raw)
        end += padding + raw.nbytes
    return parts


class PickleCodec(Codec):
    """Pickle protocol 5 with out-of-band buffers, read through an :class:`AllowList`.

    ``allow`` adds ``"module.name"`` globals to the defaults (a site's
    ``PICKLE_ALLOW``). Values whose globals are not on the receiver's list are
    encoded all the same, and refused by the receiver.
    """

    name = "pickle"
    content_type = CONTENT_TYPE
    media_types = frozenset({CONTENT_TYPE})

    def __init__(self, allow: Iterable[str] = ()) -> None:
        self.allow = AllowList(allow)

    def encode(self, value: Any) -> bytes:
        """Pickle ``value`` (protocol 5), framing any out-of-band buffers."""
        return b"".join(self.encode_segments(value))

    def encode_segments(self, value: Any, shuffle: bool = False) -> list[Segment]:
        """As :meth:`encode`, each out-of-band buffer a view of the value's memory."""
        buffers: list[pickle.PickleBuffer] = []
        try:
            stream = pickle.dumps(value, protocol=5, buffer_callback=buffers.append)
            if len(buffers) > MAX_BUFFERS:
                buffers = []
                stream = pickle.dumps(value, protocol=5)
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            raise TypeError(f"cannot encode as pickle: {exc}") from None
        return _frame(stream, buffers) if buffers else [stream]

    def _load(self, data: Body) -> Any:
        stream, buffers = _split(data)
        return RestrictedUnpickler(io.BytesIO(stream), self.allow, buffers).load()


#: The pickle codec with the default allow-list only.
PICKLE: Final[PickleCodec] = PickleCodec()


@functools.lru_cache(maxsize=16)
def pickle_codec(allow: tuple[str, ...] = ()) -> PickleCodec:
    """The pickle codec for a site's ``PICKLE_ALLOW`` (one instance per list)."""
    return PickleCodec(allow) if allow else PICKLE
