"""A small path router: templates of path segments to handlers, by method.

Why not klein: the API is a dozen fixed routes, and every response needs the same
treatment (JSON errors, CORS, cancellation on hang-up) that a plain ``twisted.web``
resource gives in one place; a router of thirty lines keeps the dependency list short.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from qgate.protocols.http.errors import HTTPError

C = TypeVar("C")


@dataclass(frozen=True, slots=True)
class Response:
    """What a handler answers: a status, an optional JSON document (or raw ``body``
    bytes, such as an Avro container file), extra headers."""

    status: int
    document: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    #: Content type of ``document`` or ``body`` when it is sent (Zaqar's JSON by default).
    content_type: str = "application/json; charset=UTF-8"
    body: bytes | None = None


Handler = Callable[[C], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class Route(Generic[C]):
    #: Literal segments, or ``{name}`` for a parameter.
    template: tuple[str, ...]
    handlers: Mapping[str, Handler[C]]
    #: Media types a method's handler answers besides JSON (``Accept`` may ask for them).
    media: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: The template as a path (``/v2/queues/{queue}``): the route's label in metrics.
    path: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", "/" + "/".join(self.template))

    def match(self, segments: Sequence[str]) -> dict[str, str] | None:
        if len(segments) != len(self.template):
            return None
        params: dict[str, str] = {}
        for want, got in zip(self.template, segments):
            if want.startswith("{"):
                params[want[1:-1]] = got
            elif want != got:
                return None
        return params

    @property
    def methods(self) -> list[str]:
        allowed = set(self.handlers) | {"OPTIONS"}
        if "GET" in allowed:
            allowed.add("HEAD")
        return sorted(allowed)


#: A route's literal segments (index, text), last first, and its parameters (index, name).
_Compiled = tuple[tuple[tuple[int, str], ...], tuple[tuple[int, str], ...], "Route[C]"]


class Router(Generic[C]):
    def __init__(self) -> None:
        self._routes: list[Route[C]] = []
        # By segment count, in the order added: find() compares only routes of the path's
        # length, and the last literal segment first (the one that tells siblings apart:
        # .../messages, .../claims), instead of calling match() on every route.
        self._by_length: dict[int, list[_Compiled[C]]] = {}

    def add(
        self,
        path: str,
        *,
        media: Mapping[str, Sequence[str]] | None = None,
        **handlers: Handler[C],
    ) -> None:
        """Route ``path`` (``/v2/queues/{queue}``) to a handler per method (``GET=...``);
        ``media``: what a method answers besides JSON (``{"GET": ["avro/binary"]}``)."""
        template = tuple(s for s in path.split("/") if s)
        extra = {m.upper(): tuple(types) for m, types in (media or {}).items()}
        route = Route(template, {m.upper(): h for m, h in handlers.items()}, extra)
        self._routes.append(route)
        literals = tuple((i, s) for i, s in enumerate(template) if not s.startswith("{"))
        params = tuple((i, s[1:-1]) for i, s in enumerate(template) if s.startswith("{"))
        self._by_length.setdefault(len(template), []).append((literals[::-1], params, route))

    @property
    def routes(self) -> tuple[Route[C], ...]:
        """Every route, in the order they are matched."""
        return tuple(self._routes)

    def find(self, segments: Sequence[str]) -> tuple[Route[C], dict[str, str]]:
        """The route of a path and its parameters (the first added that matches, as
        ``Route.match`` would say); 404 when no route matches."""
        for literals, params, route in self._by_length.get(len(segments), ()):
            for i, want in literals:
                if segments[i] != want:
                    break
            else:
                return route, {name: segments[i] for i, name in params}
        raise HTTPError(404, "Not found", "The requested resource could not be found.")

    def template_of(self, segments: Sequence[str]) -> str:
        """The template of the route a path takes (``/v2/queues/{queue}``), or
        ``unmatched``: a label of bounded values for metrics."""
        try:
            route, _ = self.find(segments)
        except HTTPError:
            return "unmatched"
        return route.path

    @staticmethod
    def label(route: Route[C] | None) -> str:
        """``template_of`` for a route already found (None: ``unmatched``)."""
        return "unmatched" if route is None else route.path

    @staticmethod
    def handler(route: Route[C], method: str) -> Handler[C]:
        """The handler of ``method`` (HEAD falls back to GET); 405 with ``Allow`` if none."""
        found = route.handlers.get(method)
        if found is None and method == "HEAD":
            found = route.handlers.get("GET")
        if found is None:
            raise HTTPError(
                405,
                "Method not allowed",
                f"The method {method} is not allowed for this resource.",
                {"Allow": ", ".join(route.methods)},
            )
        return found
