"""Secrets stay in: attribute names that look like credentials are refused, and free text is scrubbed.

Applied to everything before it is encoded for the wire: span attributes (ours and other instrumentation's),
event attributes, status messages, exception messages and stack traces, metric label values. The marker
never repeats any part of the secret. Rules are extendable: extra secret words, extra patterns and exact
values (an exchange's API key) via ``init(secret_keys=..., secret_patterns=..., secret_values=...)``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

MARKER: Final = "[REDACTED]"

#: A name is secret when one of its words (split at ``_ . - :`` and camelCase) is one of these ...
SECRET_WORDS: Final = frozenset({
    "key", "secret", "secrets", "password", "passwd", "pwd", "pass", "passphrase", "token", "tokens", "auth",
    "authorization", "credential", "credentials", "signature", "sig", "signed", "hmac", "jwt", "bearer",
    "session", "sessionid", "cookie", "cookies", "apikey", "privatekey", "secretkey", "accesskey", "otp",
    "mnemonic", "seed", "seedphrase", "pin", "private", "totp", "nonce",
})
#: ... or when its letters, run together, contain one of these.
SECRET_FRAGMENTS: Final = (
    "apikey", "apisecret", "secretkey", "accesskey", "privatekey", "password", "passwd", "passphrase", "secret",
    "token", "credential", "signature", "authorization", "cookie", "sessionid", "bearer", "privkey",
)
_WORD_SPLIT: Final = re.compile(r"[^A-Za-z0-9]+|(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")

_PEM: Final = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|$)",
                         re.DOTALL)
_URL_USERINFO: Final = re.compile(r"(?<=://)[^/\s@'\"]+@")
_AUTH_SCHEME: Final = re.compile(r"(?i)\b(basic|bearer|digest|token|apikey|hmac|negotiate)(\s+)[A-Za-z0-9._~+/=-]{4,}")
#: ``name=value`` / ``name: value``: the name is matched as a whole run of name characters (then trimmed to its last
#: 64 characters from the first letter) and the value only after a secret name. A name bounded to 64 characters
#: inside one expression for the whole pair let the search backtrack through 64 characters at every position of
#: a long word (1.1-2.4 ms for one 512-character string), and matching every value made a long chain of ordinary
#: pairs quadratic; both are linear now.
_NAME_SEP: Final = re.compile(r"""(?<![A-Za-z0-9_.\-])(?P<key>[A-Za-z0-9_.\-]+)["']?\s*[=:]\s*""")
_VALUE: Final = re.compile(r""""[^"]*"|'[^']*'|[^\s&"',;}\]\)]+""")
_NAME_START: Final = re.compile(r"[A-Za-z]")
_MAX_NAME: Final = 64
#: Whether ``_AUTH_SCHEME`` can match at all: its scheme words alone (same case folding), one quick search.
_AUTH_HINT: Final = re.compile(r"(?i)basic|bearer|digest|token|apikey|hmac|negotiate")
_JWT: Final = re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
_AWS_KEY: Final = re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")
_LONG_TOKEN: Final = re.compile(r"(?<![A-Za-z0-9+_-])[A-Za-z0-9+_-]{36,}={0,2}(?![A-Za-z0-9+=_-])")
_UUID: Final = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_CACHE_LIMIT: Final = 4096
#: Texts up to this long are cached: every string the trading side keeps (``_values.MAX_STRING``), so a value that
#: repeats (20,000 references to one 512-character string in an attribute) is scrubbed once.
_CACHE_MAX_CHARS: Final = 512


class Redactor:
    """The secret rules of one process; cheap on repeated values (results are cached, bounded)."""

    def __init__(self, extra_words: Iterable[str] = (), patterns: Iterable[str] = (),
                 values: Iterable[str] = ()) -> None:
        extra = tuple(w.lower() for w in extra_words)
        self._words = SECRET_WORDS | frozenset(extra)
        self._fragments = SECRET_FRAGMENTS + tuple(w.replace("_", "").replace("-", "").replace(".", "")
                                                   for w in extra if len(w) >= 4)
        self._patterns = tuple(re.compile(p) for p in patterns)
        self._values: tuple[str, ...] = ()
        self.add_values(values)
        self._keys: dict[str, bool] = {}
        self._texts: dict[str, str] = {}

    def add_values(self, values: Iterable[str]) -> None:
        """Redact these exact strings wherever they appear (e.g. an exchange's API key and secret)."""
        merged = set(self._values) | {v for v in values if isinstance(v, str) and len(v) >= 4}
        if len(merged) == len(self._values):
            return
        self._values = tuple(sorted(merged, key=len, reverse=True))
        self._texts = {}

    def is_secret_key(self, key: str) -> bool:
        """True for attribute or parameter names that look like credentials."""
        known = self._keys.get(key)
        if known is not None:
            return known
        words = [w.lower() for w in _WORD_SPLIT.split(key) if w]
        joined = "".join(words)
        secret = any(w in self._words for w in words) or any(f in joined for f in self._fragments)
        if len(self._keys) > _CACHE_LIMIT:
            self._keys.clear()
        self._keys[key] = secret
        return secret

    def text(self, text: str) -> str:
        """``text`` with every secret-looking part replaced by the marker."""
        known = self._texts.get(text)
        if known is not None:
            return known
        out = self._scrub(text)
        if len(text) <= _CACHE_MAX_CHARS:
            if len(self._texts) > _CACHE_LIMIT:
                self._texts.clear()
            self._texts[text] = out
        return out

    def scrub(self, text: str) -> str:
        """:meth:`text` without its cache: for values that never repeat (order ids), which would only churn it."""
        return self._scrub(text)

    def _scrub(self, text: str) -> str:
        """Linear in the text: each rule runs only when the text holds what the rule needs to match."""
        for value in self._values:
            if value in text:
                text = text.replace(value, MARKER)
        if "PRIVATE KEY" in text:
            text = _PEM.sub(MARKER, text)
        if "://" in text and "@" in text:
            text = _URL_USERINFO.sub(MARKER + "@", text)
        if _AUTH_HINT.search(text):
            text = _AUTH_SCHEME.sub(lambda m: f"{m.group(1)}{m.group(2)}{MARKER}", text)
        if "=" in text or ":" in text:
            text = self._pairs(text)
        if "eyJ" in text:
            text = _JWT.sub(MARKER, text)
        if "AKIA" in text or "ASIA" in text:
            text = _AWS_KEY.sub(MARKER, text)
        if len(text) >= 36:
            text = _LONG_TOKEN.sub(_long_token, text)
        for pattern in self._patterns:
            text = pattern.sub(MARKER, text)
        return text

    def _pairs(self, text: str) -> str:
        """``name=value`` / ``name: value`` with a secret name: the value goes. A pair whose name is not secret
        is stepped over by its name only, so ``rule:secret_key=X`` or ``reason=signature=X`` are still seen."""
        if len(text) > 64 and not self._may_name_a_secret(text):
            return text
        out: list[str] = []
        pos = 0
        while True:
            pair = _NAME_SEP.search(text, pos)
            if pair is None:
                out.append(text[pos:])
                return "".join(out)
            at = pair.end()
            value = _VALUE.match(text, at) if self._secret_name(pair.group("key")) else None
            if value is None or value.group().strip("\"'") == MARKER:
                out.append(text[pos:at])
                pos = at
                continue
            quote = text[at] if text[at] in ("'", '"') else ""
            out.append(text[pos:at] + f"{quote}{MARKER}{quote}")
            pos = value.end()

    def _secret_name(self, run: str) -> bool:
        """The name a pair search finds before a separator: the run's last 64 characters, from their first letter."""
        tail = run[-_MAX_NAME:]
        first = _NAME_START.search(tail)
        return first is not None and self.is_secret_key(tail[first.start():])

    def _may_name_a_secret(self, text: str) -> bool:
        """False when no name in ``text`` can be secret (no secret word or fragment occurs in it at all): a long
        text of many ordinary pairs then costs a few substring searches instead of one step per pair."""
        lower = text.lower()
        if any(word in lower for word in self._words):
            return True
        squeezed = lower.replace("_", "").replace(".", "").replace("-", "")
        return any(fragment in squeezed for fragment in self._fragments)


def _long_token(match: re.Match[str]) -> str:
    """A long random-looking token is redacted; an identifier is not: a canonical UUID (an instance id, a client
    order id, freqtrade's dry-run order ids) is judged by what is left around it. A secret that happens to be a
    UUID (some venues' API keys) is redacted as an exact value: the integrations register the keys they see."""
    token = match.group(0)
    if "-" in token:
        rest = _UUID.sub("", token)
        if rest != token:
            long_and_mixed = len(rest) >= 36 and any(c.isdigit() for c in rest) and any(c.isalpha() for c in rest)
            return MARKER if long_and_mixed else token
    has_digit = any(c.isdigit() for c in token)
    has_alpha = any(c.isalpha() for c in token)
    return MARKER if has_digit and has_alpha else token
