"""``@service``: the decorator, the names, and signatures compiled once.

Decorating a function registers it under a dotted lower-case name. Its
signature is read once, at registration: each parameter gets a converter
(from its type hint, through msgspec) and a JSON Schema, so a call only runs
the converters. The decorated object still behaves as the plain function when
called from Python, and as a Django view when Django routes a request to it.

Example::

    from servicewire import service

    @service
    def add(a: int, b: int) -> int:
        "Add two integers."
        return a + b

    @service(name="science.spectrum", scopes=["science"])
    def spectrum(samples: "numpy.ndarray", window: int = 256) -> dict: ...
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import re
import sys
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, overload

import msgspec

from servicewire.errors import ValidationError

__all__ = ["Parameter", "RegistryError", "Service", "registry", "service"]

NAME_RE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$")
# Paths the mount itself answers.
RESERVED_NAMES = frozenset({"openapi.json"})
_MISSING: Any = inspect.Parameter.empty


class RegistryError(Exception):
    """A service was declared wrongly: a bad or duplicate name, a bad signature."""


def _numpy() -> Any:
    try:
        import numpy
    except ImportError:  # numpy is an optional extra
        return None
    return numpy


def _is_ndarray_type(annotation: Any) -> bool:
    np = sys.modules.get("numpy")
    if np is None:
        return False
    return annotation is np.ndarray or typing.get_origin(annotation) is np.ndarray


def _convert_hook(target: type, value: Any) -> Any:
    # msgspec calls this for the types it does not know: arrays and complex.
    if _is_ndarray_type(target):
        np = _numpy()
        if isinstance(value, np.ndarray):
            return value
        if isinstance(value, list | tuple | int | float | bool):
            try:
                return np.asarray(value)
            except ValueError as exc:
                raise ValueError(f"cannot make an array of this value: {exc}") from None
        raise ValueError(f"Expected an array, got `{type(value).__name__}`")
    if target is complex:
        if isinstance(value, complex):
            return value
        if isinstance(value, list) and len(value) == 2:
            return complex(value[0], value[1])
        if isinstance(value, int | float) and not isinstance(value, bool):
            return complex(value)
        raise ValueError(f"Expected `complex` or [real, imag], got `{type(value).__name__}`")
    if isinstance(target, type) and isinstance(value, target):
        return value
    raise NotImplementedError


def _schema_hook(target: type) -> dict[str, Any]:
    if _is_ndarray_type(target):
        return {
            "type": "array",
            "description": "numpy.ndarray: nested lists in JSON, an extension type in msgpack",
        }
    if target is complex:
        return {
            "type": "array",
            "items": {"type": "number"},
            "minItems": 2,
            "maxItems": 2,
            "description": "complex number as [real, imag]",
        }
    # Any other class is advertised by name; only instances of it are accepted.
    return {"description": f"{target.__module__}.{target.__qualname__}"}


def _resolve(annotation: Any, func: Callable[..., Any]) -> Any:
    """A type hint as an object; strings are evaluated in the function's module.

    ``numpy`` and ``np`` are always in scope so that ``"np.ndarray"`` works in a
    module that imports numpy only where it is used.
    """
    if not isinstance(annotation, str):
        return annotation
    namespace: dict[str, Any] = dict(getattr(func, "__globals__", {}))
    np = _numpy()
    if np is not None:
        namespace.setdefault("numpy", np)
        namespace.setdefault("np", np)
    try:
        resolved: Any = annotation
        # A quoted hint under `from __future__ import annotations` is a string
        # of a string: evaluate until it is an object.
        while isinstance(resolved, str):
            resolved = eval(resolved, namespace)  # noqa: S307 - the site's own source
        return resolved
    except Exception as exc:
        if np is None and ("ndarray" in annotation or "numpy" in annotation):
            raise RegistryError(
                f"{func.__qualname__}: annotation {annotation!r} needs numpy: "
                "pip install servicewire[numpy]"
            ) from exc
        raise RegistryError(
            f"{func.__qualname__}: cannot resolve annotation {annotation!r}: {exc}"
        ) from exc


@dataclass(frozen=True)
class Parameter:
    """One parameter of a service, with its compiled converter and schema."""

    name: str
    annotation: Any
    default: Any
    schema: dict[str, Any]

    @property
    def required(self) -> bool:
        return self.default is _MISSING

    @property
    def typed(self) -> bool:
        return self.annotation is not _MISSING and self.annotation is not Any

    def convert(self, value: Any, *, lax: bool) -> Any:
        """The value as the parameter's type; ``lax`` lets strings become
        dates, decimals and the like (JSON has no such types).

        Raises msgspec.ValidationError or ValueError on a wrong value.
        """
        if not self.typed:
            return value
        return msgspec.convert(value, self.annotation, strict=not lax, dec_hook=_convert_hook)


class _EveryDatabase:
    """Contains every database alias (what Django's non_atomic_requests records)."""

    def __contains__(self, alias: object) -> bool:
        return True


class Service:
    """A registered service: the function, its name, scopes and signature.

    Calling it with ordinary arguments calls the function. Calling it with a
    single Django ``HttpRequest`` (that is, routing it as a view) serves the
    request through servicewire: authentication, decoding, validation.
    """

    csrf_exempt = True  # servicewire checks CSRF itself for session callers
    # Routed as a view, the call runs outside ATOMIC_REQUESTS so that its audit
    # entry survives a rollback; the service itself still gets a transaction.
    _non_atomic_requests = _EveryDatabase()

    def __init__(
        self,
        func: Callable[..., Any],
        *,
        name: str,
        scopes: Iterable[str] = (),
        permissions: Iterable[str] = (),
    ) -> None:
        if not NAME_RE.match(name) or name in RESERVED_NAMES:
            raise RegistryError(
                f"invalid service name {name!r}: use dotted lower-case identifiers "
                "such as 'billing.invoice_total' (a leading '_' and 'openapi.json' are reserved)"
            )
        if isinstance(scopes, str) or isinstance(permissions, str):
            raise RegistryError(f"{name}: scopes and permissions must be lists, not strings")
        functools.update_wrapper(self, func)
        self.func = func
        self.name = name
        self.scopes = frozenset(scopes)
        self.permissions = frozenset(permissions)
        self.doc = inspect.cleandoc(func.__doc__ or "")
        self.is_async = inspect.iscoroutinefunction(func)
        self.parameters, self.accepts_any_keyword = _compile_parameters(func, name)
        self.returns = _return_schema(func, name)

    def __repr__(self) -> str:
        return f"<Service {self.name}>"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if len(args) == 1 and not kwargs and _is_http_request(args[0]):
            from servicewire.views import serve_service

            return serve_service(args[0], self)
        return self.func(*args, **kwargs)

    def bind(self, arguments: Mapping[Any, Any], *, lax: bool) -> dict[str, Any]:
        """Check and convert decoded arguments into keyword arguments.

        Raises ValidationError whose details name each missing, unknown or
        ill-typed argument.
        """
        problems: dict[str, str] = {}
        kwargs: dict[str, Any] = {}
        for parameter in self.parameters.values():
            if parameter.name not in arguments:
                if parameter.required:
                    problems[parameter.name] = "missing required argument"
                continue
            try:
                kwargs[parameter.name] = parameter.convert(arguments[parameter.name], lax=lax)
            except (msgspec.ValidationError, ValueError, TypeError) as exc:
                problems[parameter.name] = _describe(exc, parameter.name)
        for key in arguments:
            if not isinstance(key, str):
                problems[repr(key)[:100]] = "argument names must be strings"
            elif key not in self.parameters:
                if self.accepts_any_keyword:
                    kwargs[key] = arguments[key]
                else:
                    problems[key[:100]] = "unexpected argument"
        if problems:
            raise ValidationError(f"invalid arguments for {self.name}", details=problems)
        return kwargs

    def describe(self) -> dict[str, Any]:
        """The discovery entry: name, doc, parameters and return as JSON Schema."""
        properties = {p.name: p.schema for p in self.parameters.values()}
        required = [p.name for p in self.parameters.values() if p.required]
        parameters: dict[str, Any] = {"type": "object", "properties": properties}
        if required:
            parameters["required"] = required
        parameters["additionalProperties"] = self.accepts_any_keyword
        return {
            "name": self.name,
            "doc": self.doc,
            "parameters": parameters,
            "returns": self.returns,
            "scopes": sorted(self.scopes),
        }


def _describe(exc: Exception, name: str) -> str:
    text = str(exc)
    # msgspec says "- at `$[0]`"; name the argument instead of the root.
    return text.replace("`$", f"`{name}")


def _is_http_request(value: Any) -> bool:
    http = sys.modules.get("django.http")
    return http is not None and isinstance(value, http.HttpRequest)


def _schema_for(annotation: Any, where: str) -> dict[str, Any]:
    if annotation is _MISSING or annotation is Any:
        return {}
    try:
        (schema,), components = msgspec.json.schema_components(
            [annotation], schema_hook=_schema_hook, ref_template="#/$defs/{name}"
        )
    except (TypeError, ValueError, NotImplementedError) as exc:
        raise RegistryError(f"{where}: unsupported type hint {annotation!r}: {exc}") from exc
    if components:
        schema = {**schema, "$defs": components}
    return schema


def _compile_parameters(func: Callable[..., Any], name: str) -> tuple[dict[str, Parameter], bool]:
    signature = inspect.signature(func)
    parameters: dict[str, Parameter] = {}
    accepts_any_keyword = False
    for p in signature.parameters.values():
        if p.kind is p.VAR_KEYWORD:
            accepts_any_keyword = True
            continue
        if p.kind is p.VAR_POSITIONAL:
            continue  # nothing can reach *args by name; it stays empty
        if p.kind is p.POSITIONAL_ONLY:
            raise RegistryError(
                f"{name}: parameter {p.name!r} is positional-only, but services are "
                "called with named arguments"
            )
        annotation = _resolve(p.annotation, func)
        schema = _schema_for(annotation, f"{name}({p.name})")
        if p.default is not _MISSING:
            # A default that JSON cannot show is simply not advertised.
            with contextlib.suppress(TypeError):
                schema = {**schema, "default": msgspec.to_builtins(p.default)}
        parameters[p.name] = Parameter(p.name, annotation, p.default, schema)
    return parameters, accepts_any_keyword


def _return_schema(func: Callable[..., Any], name: str) -> dict[str, Any]:
    annotation = inspect.signature(func).return_annotation
    if annotation is None or annotation == "None":
        return {"type": "null"}
    return _schema_for(_resolve(annotation, func), f"{name}(return)")


class Registry:
    """All services of the process, by name."""

    def __init__(self) -> None:
        self._services: dict[str, Service] = {}

    def add(self, svc: Service) -> None:
        existing = self._services.get(svc.name)
        if existing is not None and existing.func is not svc.func:
            if _same_definition(existing.func, svc.func):
                # The same source registered again (a module imported twice,
                # or reloaded): keep the newer function.
                self._services[svc.name] = svc
                return
            raise RegistryError(
                f"duplicate service name {svc.name!r}: "
                f"{_where(existing.func)} and {_where(svc.func)}"
            )
        self._services[svc.name] = svc

    def get(self, name: str) -> Service | None:
        return self._services.get(name)

    def remove(self, name: str) -> None:
        self._services.pop(name, None)

    def __iter__(self) -> Iterator[Service]:
        return iter(sorted(self._services.values(), key=lambda s: s.name))

    def __len__(self) -> int:
        return len(self._services)

    def __contains__(self, name: object) -> bool:
        return name in self._services


def _where(func: Callable[..., Any]) -> str:
    return f"{func.__module__}.{func.__qualname__}"


def _same_definition(a: Callable[..., Any], b: Callable[..., Any]) -> bool:
    code_a, code_b = getattr(a, "__code__", None), getattr(b, "__code__", None)
    return (
        _where(a) == _where(b)
        and code_a is not None
        and code_b is not None
        and (code_a.co_filename, code_a.co_firstlineno)
        == (code_b.co_filename, code_b.co_firstlineno)
    )


registry = Registry()


@overload
def service(func: Callable[..., Any], /) -> Service: ...
@overload
def service(
    *, name: str | None = None, scopes: Iterable[str] = (), permissions: Iterable[str] = ()
) -> Callable[[Callable[..., Any]], Service]: ...


def service(
    func: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    scopes: Iterable[str] = (),
    permissions: Iterable[str] = (),
) -> Service | Callable[[Callable[..., Any]], Service]:
    """Register a function (sync or ``async def``) as a service.

    ``name`` defaults to the function's name; ``scopes`` lists the labels of
    which a calling client needs one (none: open to every active client);
    ``permissions`` lists Django permissions (``"app.codename"``) that the
    user behind the caller must all hold.
    """

    def register(f: Callable[..., Any]) -> Service:
        svc = Service(f, name=name or f.__name__, scopes=scopes, permissions=permissions)
        registry.add(svc)
        return svc

    if func is not None:
        return register(func)
    return register
