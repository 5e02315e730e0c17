"""numpy values in pickles, rebuilt from numpy's public constructors.

numpy's own unpickling helpers take the sender's ``__setstate__`` state on
trust: it can give a dtype the object flag, or change the item size of a dtype
an array already uses. :mod:`servicewire.pickling` answers numpy's globals
with its own methods, and they build dtypes and arrays through the checks
here. Object dtypes (and structured dtypes holding objects) are refused,
since they would let arbitrary objects back in.
"""

from __future__ import annotations

import math
import re
import sys
from typing import Any, Final

from servicewire.errors import BadRequest

# numpy's own dtype pickles name the kind and size only (``"f8"``, ``"V24"``);
# the byte order, fields and units come in the state.
DTYPE_SPEC_RE: Final = re.compile(r"[biufcmMSUVO]\d{1,10}")
_SAFE_KINDS: Final = frozenset("biufcmMSUV")
_DATETIME_UNIT_RE: Final = re.compile(r"generic|[YMWDhms]|[munpfa]s")
_ALIGNED_STRUCT: Final = 0x80


def numpy_module() -> Any:
    try:
        import numpy
    except ImportError:
        raise BadRequest("pickle holds numpy values, but numpy is not installed here") from None
    return numpy


def is_dtype(obj: Any) -> bool:
    np = sys.modules.get("numpy")
    return np is not None and isinstance(obj, np.dtype)


def is_numpy(obj: Any) -> bool:
    np = sys.modules.get("numpy")
    return np is not None and isinstance(obj, np.ndarray | np.generic)


def check_dtype(dtype: Any) -> None:
    if not is_dtype(dtype):
        raise BadRequest("pickle gives numpy something other than a dtype")
    if dtype.hasobject or dtype.kind not in _SAFE_KINDS:
        raise BadRequest(
            f"pickle holds a numpy array or scalar of dtype {str(dtype)[:100]}, which is not "
            "allowed: only bool, numeric, datetime, string and void dtypes without objects"
        )


def check_shape(shape: Any) -> None:
    if type(shape) is not tuple or not all(type(n) is int and n >= 0 for n in shape):
        raise BadRequest("pickle gives a numpy array a shape that is not a tuple of sizes")


def dtype_from_state(base: Any, state: Any) -> Any:
    """The dtype numpy's ``dtype.__setstate__`` would make, built from public
    constructors, which check what ``__setstate__`` takes on trust."""
    np = numpy_module()
    if type(state) is not tuple or len(state) not in (8, 9) or state[0] not in (3, 4):
        raise BadRequest("pickle gives a numpy dtype a state numpy never writes")
    byteorder, subdtype, names, fields, itemsize, _, flags = state[1:8]
    if subdtype is not None:
        if type(subdtype) is not tuple or len(subdtype) != 2:
            raise BadRequest("pickle gives a numpy dtype a malformed sub-array")
        check_dtype(subdtype[0])
        check_shape(subdtype[1])
        dtype = np.dtype((subdtype[0], subdtype[1]))
    elif names is not None:
        dtype = _structured(np, names, fields, itemsize, flags)
    elif base.kind in "mM" and len(state) == 9:
        unit = _datetime_unit(state[8])
        dtype = np.dtype(f"{base.kind}8[{unit}]" if unit else f"{base.kind}8")
    else:
        dtype = base
    if byteorder in ("<", ">") and dtype.byteorder != "|":
        dtype = dtype.newbyteorder(byteorder)
    elif byteorder not in ("<", ">", "|", "="):
        raise BadRequest("pickle gives a numpy dtype an unknown byte order")
    check_dtype(dtype)
    return dtype


def _structured(np: Any, names: Any, fields: Any, itemsize: Any, flags: Any) -> Any:
    if type(names) is not tuple or type(fields) is not dict or type(itemsize) is not int:
        raise BadRequest("pickle gives a numpy dtype malformed fields")
    formats, offsets, titles = [], [], []
    for name in names:
        field = fields.get(name) if type(name) is str else None
        if type(field) is not tuple or len(field) not in (2, 3) or type(field[1]) is not int:
            raise BadRequest("pickle gives a numpy dtype malformed fields")
        check_dtype(field[0])
        formats.append(field[0])
        offsets.append(field[1])
        titles.append(field[2] if len(field) == 3 else None)
    spec: dict[str, Any] = {
        "names": list(names),
        "formats": formats,
        "offsets": offsets,
        "itemsize": itemsize,
    }
    if any(title is not None for title in titles):
        spec["titles"] = titles
    return np.dtype(spec, align=type(flags) is int and bool(flags & _ALIGNED_STRUCT))


def _datetime_unit(metadata: Any) -> str:
    info = metadata[1] if type(metadata) is tuple and len(metadata) == 2 else None
    if type(info) is not tuple or len(info) != 4 or type(info[0]) is not bytes:
        raise BadRequest("pickle gives a numpy datetime dtype a malformed unit")
    unit, count = info[0].decode("ascii", "replace"), info[1]
    if not _DATETIME_UNIT_RE.fullmatch(unit) or type(count) is not int or not 0 < count < 2**31:
        raise BadRequest("pickle gives a numpy datetime dtype an unknown unit")
    return "" if unit == "generic" else f"{count}{unit}"


def array_from_state(state: Any) -> Any:
    """The array numpy's ``ndarray.__setstate__`` would make, as a writable copy."""
    np = numpy_module()
    if type(state) is tuple and len(state) == 5 and state[0] == 1:
        state = state[1:]
    if type(state) is not tuple or len(state) != 4:
        raise BadRequest("pickle gives a numpy array a state numpy never writes")
    shape, dtype, fortran, data = state
    check_shape(shape)
    check_dtype(dtype)
    if type(fortran) is not bool or not isinstance(data, bytes | bytearray):
        raise BadRequest("pickle gives a numpy array a state numpy never writes")
    count = math.prod(shape)
    if len(data) != count * dtype.itemsize:
        raise BadRequest("pickle gives a numpy array data of the wrong size")
    flat = np.frombuffer(data, dtype=dtype, count=count)
    return flat.reshape(shape, order="F" if fortran else "C").copy(order="K")
