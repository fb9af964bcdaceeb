"""ASGI middleware of the server: a body-size limit, and the Host, other-site and header rules."""

from __future__ import annotations

from fastapi.responses import JSONResponse


def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """The answer to every refusal: {"error": message}, with `status`."""
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class BodyLimit:
    """ASGI middleware: a request body over `limit` bytes gets a 413, whether its size is
    declared (Content-Length) or not (chunked transfer): the body is counted as it arrives, and
    whatever the app answers after the limit was passed is replaced by the 413."""

    def __init__(self, app, limit: int, message: str) -> None:
        self.app, self.limit, self.message = app, limit, message

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.limit:
            return await error(413, self.message)(scope, receive, send)
        seen, over = 0, False

        async def counted():
            nonlocal seen, over
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    over = True
                    return {"type": "http.disconnect"}  # stop reading; the app fails and we answer
            return message

        async def guarded(message) -> None:
            if not over:
                return await send(message)
            if message["type"] == "http.response.start":
                await error(413, self.message)(scope, receive, send)

        await self.app(scope, counted, guarded)


CSP = ("default-src 'self'; img-src 'self' data: blob:; object-src 'none'; base-uri 'none'; "
       "form-action 'self'; frame-ancestors 'none'")  # fmt: skip
LOOPBACK = ("127.0.0.1", "localhost", "::1")


class Guard:
    """ASGI middleware: a Host header outside `allowed_hosts` (None: any) gets a 400, so that a web
    page cannot reach a server on this machine through a name of its own (DNS rebinding); a
    request that changes something sent from another site (Sec-Fetch-Site) gets a 403; every
    answer says not to sniff, frame or refer, and the API's answers (patient data) not to store."""

    def __init__(self, app, allowed_hosts: list[str] | None) -> None:
        self.app, self.allowed = app, None if allowed_hosts is None else {_hostname(h) for h in allowed_hosts}

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        host = _hostname(headers.get("host", ""))
        if self.allowed is not None and host not in self.allowed:
            return await error(400, f"Host {host!r} is not served here (served as "
                               f"{', '.join(sorted(self.allowed))}; `tumorseg serve --allowed-host NAME` "
                               "adds a name)")(scope, receive, send)  # fmt: skip
        # not Origin: with Referrer-Policy no-referrer (below) a browser sends `Origin: null` for this
        # server's own page too, so it cannot tell the page from another site's
        other_site = headers.get("sec-fetch-site") in ("cross-site", "same-site")  # the browser says so
        if other_site and scope["method"] not in ("GET", "HEAD", "OPTIONS"):
            return await error(403, "refused: sent by a page of another site; upload from this server's own "
                               "page, or from a script or curl")(scope, receive, send)  # fmt: skip
        private = scope["path"].startswith("/api/")

        async def with_headers(message) -> None:
            if message["type"] == "http.response.start":
                have = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
                         (b"referrer-policy", b"no-referrer"), (b"content-security-policy", CSP.encode())]  # fmt: skip
                if private and b"cache-control" not in have:
                    extra.append((b"cache-control", b"no-store"))
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, with_headers)


def served_names(host: str, allowed: list[str]) -> list[str]:
    """The Host names a server bound to `host` answers: the loopback names and the address itself
    when bound to loopback, with the `allowed` ones; [] (any name) when bound wider with none."""
    loopback = _hostname(host) in LOOPBACK or host.startswith("127.")
    if not (loopback or allowed):
        return []
    return sorted({*map(_hostname, allowed), *LOOPBACK, *([_hostname(host)] if loopback else [])})


def _hostname(host: str) -> str:
    """`[::1]:8000` -> `::1`, `Example.org:80` -> `example.org`, `::1` -> `::1`; anything after the
    name other than `:PORT` keeps the whole text (`[::1]evil.com`), which then matches no name."""
    host = host.strip().lower()
    if host.startswith("[") and "]" in host:
        name, rest = host[1:].split("]", 1)
        return name if not rest or (rest[0] == ":" and rest[1:].isascii() and rest[1:].isdigit()) else host
    if host.count(":") == 1:
        name, port = host.split(":")
        return name if port.isascii() and port.isdigit() else host
    return host
