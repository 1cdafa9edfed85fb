"""A lookup of the routes a path can reach, in front of the router's linear match.

FastAPI tries every route of every included router in order (twice in the router that matches:
once to find it, once to dispatch), so a request to a router included late pays a regular
expression per route of all the routers before it. The index, built from the route table, maps
the first two segments of a path (`/v1/projects/...` -> `("v1", "projects")`) to the routes
that could match a path starting with them, in their original order, and runs FastAPI's own
matching over that shorter list: a copy of the app's router whose `routes` are those candidates,
each included router narrowed the same way. A route is a candidate unless its path provably
cannot match (a different static segment, a different number of segments); a route whose shape
the index cannot read (no path template, a custom converter) is a candidate everywhere.

So the first full match, and the first partial one (a 405), are the ones the whole table would
give. Everything else goes to the unnarrowed router, unchanged: a path no candidate matches
(its trailing-slash redirect, its 404), a key no route starts with, lifespan, and any table
that has low-priority (frontend) routes. A table changed after the index was built (a route
added at run time) is seen by its version and rebuilt before the next request is routed.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Iterable
from typing import Any

import fastapi.routing as fastapi_routing
from fastapi import FastAPI
from fastapi.routing import APIRoute, APIRouter
from starlette._utils import get_route_path
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger(__name__)

Key = tuple[str, ...]

# Converters whose value never holds a "/": the parameter stays inside its segment.
_SEGMENT_CONVERTERS = frozenset({"", "str", "int", "float", "uuid"})
_KEY_SEGMENTS = 2


def path_key(route_path: str) -> Key:
    """The first two segments of a path: "/v1/projects/x" -> ("v1", "projects")."""
    return tuple(route_path.split("/", _KEY_SEGMENTS + 1)[1 : _KEY_SEGMENTS + 1])


class _Shape:
    """What the index knows of one route's path template (None: nothing, it may match any)."""

    def __init__(self, path_format: str | None) -> None:
        self.segments: list[str | None] | None = None  # None entry: any one segment
        self.rest_from: int | None = None  # from this segment on, anything (a path parameter)
        self.count = 0
        if not path_format or not path_format.startswith("/"):
            return
        segments = path_format.split("/")[1:]
        self.count = len(segments)
        parsed: list[str | None] = []
        for index, segment in enumerate(segments[:_KEY_SEGMENTS]):
            if "{" not in segment:
                parsed.append(segment)
                continue
            if not _params_stay_in_segment(segment):
                self.rest_from = index
                break
            parsed.append(None)
        self.segments = parsed

    def static_key(self) -> Key | None:
        """The key every path this route matches has, when its first segments are all static."""
        if self.segments is None or self.rest_from is not None:
            return None
        if any(s is None for s in self.segments):
            return None
        return tuple(s for s in self.segments if s is not None)

    def may_match(self, key: Key) -> bool:
        if self.segments is None:
            return True
        for index, segment in enumerate(self.segments):
            if index >= len(key):
                return False  # the path has fewer segments than the template's static start
            if segment is not None and key[index] != segment:
                return False
        if self.rest_from is not None:
            return True
        # No path parameter among the first segments: the path has exactly as many of the
        # first segments as the template.
        return len(key) == min(self.count, _KEY_SEGMENTS)


def _params_stay_in_segment(segment: str) -> bool:
    rest = segment
    while "{" in rest:
        _, _, tail = rest.partition("{")
        param, closed, rest = tail.partition("}")
        if not closed:
            return False
        _, _, converter = param.partition(":")
        if converter not in _SEGMENT_CONVERTERS:
            return False
    return True


def _included_router_type() -> type[Any] | None:
    """FastAPI's included-router route, when it has the cache the index narrows (else None,
    and the index stays empty: every request takes the whole table)."""
    included = getattr(fastapi_routing, "_IncludedRouter", None)
    if not isinstance(included, type) or not dataclasses.is_dataclass(included):
        return None
    fields = {f.name for f in dataclasses.fields(included)}
    if not {"_effective_candidates", "_effective_candidates_version"} <= fields:
        return None
    return included if hasattr(included, "effective_candidates") else None


_INCLUDED = _included_router_type()


def _leaf_shape(candidate: Any) -> _Shape:
    starlette_route = getattr(candidate, "starlette_route", None)
    if starlette_route is not None:
        return _Shape(getattr(starlette_route, "path_format", None))
    original = getattr(candidate, "original_route", None)
    if isinstance(original, APIRoute):
        return _Shape(getattr(candidate, "path_format", None))
    if original is not None:
        return _Shape(None)  # a frontend group or a route type the index does not read
    return _Shape(getattr(candidate, "path_format", None))


class _Narrowing:
    """Candidates of one key: top-level routes and, inside included routers, their routes."""

    def __init__(self, key: Key) -> None:
        self.key = key

    def routes(self, routes: Iterable[BaseRoute]) -> list[BaseRoute]:
        kept: list[BaseRoute] = []
        for route in routes:
            narrowed = self._route(route)
            if narrowed is not None:
                kept.append(narrowed)
        return kept

    def _route(self, route: Any) -> Any | None:
        if _INCLUDED is not None and isinstance(route, _INCLUDED):
            return self._included(route)
        return route if _leaf_shape(route).may_match(self.key) else None

    def _included(self, included: Any) -> Any | None:
        candidates = included.effective_candidates()
        kept = [c for c in (self._route(c) for c in candidates) if c is not None]
        if not kept:
            return None
        unchanged = len(kept) == len(candidates)
        if unchanged and all(a is b for a, b in zip(kept, candidates, strict=True)):
            return included
        narrowed = copy.copy(included)
        # Read by effective_candidates() while the router's routes version is unchanged; once
        # it changes, the copy recomputes its full list (correct, no longer narrowed).
        narrowed._effective_candidates = kept
        narrowed._effective_candidates_version = included._effective_candidates_version
        return narrowed


class RouteIndex:
    """The router's entry point with the index in front (see the module docstring)."""

    def __init__(self, router: APIRouter, inner: ASGIApp) -> None:
        self.router = router
        self.inner = inner
        self._buckets: dict[Key, APIRouter] = {}
        self._built_for: tuple[int, tuple[int, ...]] | None = None
        # The router and every router included in it, as of the last build.
        self._routers: tuple[APIRouter, ...] = (router,)

    def _version(self) -> tuple[int, tuple[int, ...]]:
        # FastAPI's own version of the table (the sum of its routers' own counters, as its
        # _get_routes_version adds them, without walking every route of every router on each
        # request; a router included anywhere bumps its parent's counter), and the top-level
        # routes as they stand (a route appended, removed or moved without a version bump).
        return sum(r._routes_version for r in self._routers), tuple(map(id, self.router.routes))

    def _collect_routers(self) -> tuple[APIRouter, ...]:
        found: dict[int, APIRouter] = {}
        pending = [self.router]
        while pending:
            router = pending.pop()
            if id(router) in found:
                continue
            found[id(router)] = router
            if _INCLUDED is not None:
                pending += [r.original_router for r in router.routes if isinstance(r, _INCLUDED)]
        return tuple(found.values())

    def rebuild(self) -> None:
        self._routers = self._collect_routers()
        version = self._version()
        self._buckets = self._build()
        self._built_for = version

    def _build(self) -> dict[Key, APIRouter]:
        router = self.router
        if _INCLUDED is None or any(True for _ in router._iter_low_priority_routes()):
            return {}
        keys: set[Key] = set()
        self._collect_keys(router.routes, keys)
        buckets: dict[Key, APIRouter] = {}
        for key in keys:
            bucket = copy.copy(router)
            bucket.routes = _Narrowing(key).routes(router.routes)
            # No candidate matched: the whole router decides (redirect, 404), as without index.
            bucket.redirect_slashes = False
            bucket.default = router.app
            buckets[key] = bucket
        return buckets

    def _collect_keys(self, routes: Iterable[Any], keys: set[Key]) -> None:
        for route in routes:
            if _INCLUDED is not None and isinstance(route, _INCLUDED):
                self._collect_keys(route.effective_candidates(), keys)
                continue
            key = _leaf_shape(route).static_key()
            if key:
                keys.add(key)

    def candidates(self, path: str) -> list[BaseRoute] | None:
        """The routes a path is matched against (None: the whole table); for tests."""
        bucket = self._buckets.get(path_key(path))
        return None if bucket is None else bucket.routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.inner(scope, receive, send)
            return
        if self._built_for != self._version():
            self.rebuild()
        bucket = self._buckets.get(path_key(get_route_path(scope)))
        if bucket is None:
            await self.inner(scope, receive, send)
            return
        # url_for and the like read the app's router, never the narrowed copy.
        if "router" not in scope:
            scope["router"] = self.router
        await bucket.app(scope, receive, send)


def install_route_index(app: FastAPI) -> RouteIndex | None:
    """Put the index in front of the app's router; None when the router has a middleware stack
    of its own (whose layers the index would skip)."""
    router = app.router
    if router.middleware_stack != router.app:
        log.warning("route index not installed: the router has middleware of its own")
        return None
    index = RouteIndex(router, router.middleware_stack)
    index.rebuild()
    router.middleware_stack = index
    return index
