"""Secrets never leave the process: the API key of `--api-key-env`, the password of a URL
(`http://user:pass@host/v1`), a key in a URL's query (`?api_key=…`) and the engine's own
`--api-key` are registered here by VALUE the moment gpucert reads them, and every writer (the
log, metrics.json, the card, metrics.prom, JUnit, candidate baselines, history, the CLI's
stdout) passes its text through `redact`/`redact_obj`.

Why by value and at every writer, not only at the log formatter: a server echoes the key back
where nobody wrote a format string for it — in a 401's JSON body, a stream's error event, a
model id of /v1/models — and that text travels as a request error into notes, messages, the
card and pytest's own failure report.

Each secret is also registered in the forms it takes on the way out (URL-encoded, JSON- and
HTML-escaped, the base64 of a URL's `user:password` in a Basic header), so an escaped copy is
caught too. Scopes (`push_scope`/`pop_scope`) keep one pytest session's secrets from leaking
into the next one in the same process (pytester runs sessions in-process).
"""

from __future__ import annotations

import base64
import html
import json
import logging
import re
import urllib.parse
from typing import Any

MASK = "***"
# shorter values would mask ordinary text ("key" in every sentence); such a key is no secret
# anyway, and the caller says it is not redacted (see `register`)
MIN_LENGTH = 4
# query parameters and flags whose value is a credential
SECRET_NAME = re.compile(r"(api[-_]?key|key$|token|secret|password|passwd|auth|signature|sig$)", re.IGNORECASE)

_scopes: list[set[str]] = [set()]
_pattern: re.Pattern | None = None  # every registered form, longest first; None: rebuild


def _forms(value: str) -> set[str]:
    """The value as it may appear after escaping on the way to a file or a terminal."""
    forms = {value, urllib.parse.quote(value, safe=""), urllib.parse.quote(value), urllib.parse.quote_plus(value),
             json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1],
             html.escape(value), html.escape(value, quote=False)}
    return {form for form in forms if len(form) >= MIN_LENGTH}


def register(value: str | None) -> bool:
    """Hold `value` as a secret of this scope; False when it is too short to redact by value."""
    global _pattern
    if not value:
        return True
    if len(value) < MIN_LENGTH:
        return False
    new = _forms(value) - _scopes[-1]
    if new:
        _scopes[-1].update(new)
        _pattern = None
    return True


def register_url(url: str | None) -> str | None:
    """Register a URL's password (and its Basic-auth form) and its credential query values;
    returns the URL as it may be shown (`display_url`)."""
    if not url:
        return url
    parts = urllib.parse.urlsplit(url)
    if parts.password is not None:
        register(urllib.parse.unquote(parts.password))
        register(parts.password)
        register(basic_credentials(url))
    elif parts.username:  # `https://TOKEN@host`: a lone user name is the credential
        register(urllib.parse.unquote(parts.username))
        register(parts.username)
    for name, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True):
        if SECRET_NAME.search(name):
            register(value)
    return display_url(url)


def basic_credentials(url: str) -> str | None:
    """The base64 `user:password` of a URL's userinfo (an `Authorization: Basic` value), or None."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None and not parts.username:
        return None
    userinfo = f"{urllib.parse.unquote(parts.username or '')}:{urllib.parse.unquote(parts.password or '')}"
    return base64.b64encode(userinfo.encode()).decode()


def without_credentials(url: str) -> str:
    """The URL to connect to: its userinfo goes into a header, never onto the wire as a host."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def display_url(url: str) -> str:
    """The URL without its secrets, as stable text (a password, a lone user name and credential
    query values become ***): what configurations, notes and messages show."""
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.partition(':')[0]}:{MASK}@{host}" if parts.password is not None else f"{MASK}@{host}"
    query = parts.query
    if query:
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
        query = "&".join(f"{urllib.parse.quote_plus(k)}={MASK if SECRET_NAME.search(k) else urllib.parse.quote_plus(v)}"
                         for k, v in pairs)
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def active() -> bool:
    return any(_scopes)


def _compiled() -> re.Pattern | None:
    global _pattern
    if _pattern is None:
        values = sorted(set().union(*_scopes), key=len, reverse=True)
        _pattern = re.compile("|".join(map(re.escape, values))) if values else None
    return _pattern


def redact(text: str) -> str:
    """`text` with every registered secret (in any of its forms) replaced by ***."""
    pattern = _compiled()
    if pattern is None or not isinstance(text, str):
        return text
    return pattern.sub(MASK, text)


def redact_obj(obj: Any) -> Any:
    """A JSON-like document (dicts, lists, tuples, strings; keys too) with every secret redacted;
    a new object where anything changed, the same one otherwise."""
    if _compiled() is None:
        return obj
    if isinstance(obj, str):
        return redact(obj)
    if isinstance(obj, dict):
        return {redact_obj(k): redact_obj(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [redact_obj(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(redact_obj(v) for v in obj)
    return obj


def push_scope() -> int:
    """A new scope for one session's secrets; returns its depth for `pop_scope`."""
    global _pattern
    _scopes.append(set())
    _pattern = None
    return len(_scopes) - 1


def pop_scope(depth: int) -> None:
    """Forget the secrets of the scope `push_scope` returned `depth` for (and any opened after it)."""
    global _pattern
    del _scopes[max(depth, 1):]
    _pattern = None


class RedactingFilter(logging.Filter):
    """On a handler: the record's message, exception text and stack carry no secret when any
    handler after it formats them (the record is redacted in place, once)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _compiled() is None:
            return True
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True
