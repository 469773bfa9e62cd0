"""Identifiers inside text, under canonical keys (docs/flows.md, "What is recorded from a value").

An IBAN written ``DE44 5001 0517 5407 3249 31`` in a mail and ``de44500105175407324931``
in an action argument are one identifier: both give ``iban:DE44500105175407324931``.
The keys are what provenance is recorded and looked up under, so the same value
carries the same labels however it was formatted.

One RE2 pattern (no capture groups, so RE2's DFA alone answers), searched forward
through the text, proposes candidates; each is then checked here with O(1) context
and checksums (mod 97, Luhn). A candidate that fails its check is split into the
plain tokens it holds, so a broken IBAN or a file name can still yield an ``id``;
at most a bounded stretch of it is searched again. Everything is linear in the text.

Policy choices the specification leaves open:

- **domain**: bare ``name.tld`` words count only with a curated generic TLD or a
  two-letter country TLD, minus country TLDs that are everyday file extensions or
  attribute names in code (``md``, ``py``, ``rs``, ``sh``, ``pl``, ``id``, ...). A
  country TLD needs a label of two or more characters before it, not all digits.
  A word is not a bare domain after ``@``, ``/`` or ``\\``, before ``(`` (a method
  call: ``log.info(``), or when its TLD is title-case (``end.It`` is a missing space).
  Hosts of URLs and emails are always domains, whatever their TLD.
- **phone**: ``+`` and 8-15 digits, the digits kept with the ``+``; a ``(0)`` trunk
  after the country code is dropped (``+49 (0)151 ...`` = ``+49 151 ...``). Without
  ``+``: 10-15 digits in two or more groups of two or more digits, one kind of
  separator (space, dot or dash; the area code may be in parentheses), the whole
  run of such groups; a leading ``00`` is read as ``+``. IPv4 addresses and numbers
  grouped in thousands are not phones.
- **id**: ISO timestamps (``2024-01-15T10``) are not ids.
- **iban**: only country codes of the SWIFT IBAN registry, with their lengths.
- **email** and **url**: the host is IDNA-encoded in their keys too, so
  ``bücher.de`` and ``xn--bcher-kva.de`` meet; an IP-literal host is its own domain.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from math import isfinite
from typing import Any, Final

from warden._re import compile_regex

__all__ = [
    "Identifier",
    "destination_forms",
    "exact_key",
    "extract",
    "iban_ok",
    "keys_of",
    "luhn_ok",
    "number_key",
]


@dataclass(frozen=True, slots=True)
class Identifier:
    """One identifier found in a text: its kind, canonical key and span."""

    kind: str
    """``email``, ``iban``, ``card``, ``phone``, ``url``, ``domain``, ``path`` or ``id``."""
    key: str
    """The canonical key, prefixed with the kind: ``iban:DE44500105175407324931``."""
    start: int
    end: int


# --- the one pattern ---------------------------------------------------------------------------

# Letters (and combining marks) as code point ranges, not \p{L}: the property classes
# make a program a hundred times larger and each match several times slower. The ranges
# leave out the punctuation, symbol and emoji blocks, so quotes and dashes still end
# tokens; what they let through is checked again here with str.isalpha().
_LM: Final = (
    r"A-Za-z\x{C0}-\x{D6}\x{D8}-\x{F6}\x{F8}-\x{1FFF}\x{2C00}-\x{2DFF}\x{2E80}-\x{2FFF}"
    r"\x{3040}-\x{D7FF}\x{F900}-\x{FDFF}\x{FE70}-\x{FEFE}\x{FF21}-\x{FF3A}\x{FF41}-\x{FF5A}"
    r"\x{FF66}-\x{FFDC}\x{10000}-\x{1EFFF}\x{20000}-\x{3FFFF}"
)
_L: Final = f"[{_LM}]"
_TC: Final = rf"[{_LM}0-9_\-]"  # a token character: letters, digits, _ and -
_LABEL: Final = rf"[{_LM}0-9_]{_TC}*"
_HOST: Final = rf"(?:{_LABEL}\.)+{_L}{_TC}+"  # the TLD candidate runs to the end of its token
_SEG: Final = rf"[{_LM}0-9_.~%+=,@\-]+"
_URL: Final = r"(?i:https?)://[^\s\p{Z}\p{Cc}<>\"`{}|\\^]+"
_EMAIL: Final = rf"[{_LM}0-9_.%+\-]+@{_HOST}"
_BRANCHES: Final = (
    # url: to the first space or character never left raw in a URL; trimmed here
    _URL,
    _EMAIL,
    # path: /a/b, ~/a, C:\a (the slash not right after a word character: no 12/05/2024)
    rf"\B/{_SEG}(?:/{_SEG})+/?",
    rf"\B~/{_SEG}(?:/{_SEG})*/?",
    rf"\b[A-Za-z]:[\\/]{_SEG}(?:[\\/]{_SEG})*[\\/]?",
    # iban: groups of four as people write them, then the rest of the token
    rf"[A-Za-z]{{2}}[0-9]{{2}}(?: ?[A-Za-z0-9]{{4}}){{2,7}}(?: ?[A-Za-z0-9]{{1,4}})?{_TC}*",
    # bare domain (and dotted tokens, split again when the TLD is not one)
    _HOST,
    # id: a token with a letter and a digit
    rf"(?:_{_TC}*)?(?:{_L}{_TC}*[0-9]|[0-9]{_TC}*{_L}){_TC}*",
    # numbers: digit groups with phone and card separators, or 8 digits or more (a lone
    # shorter number can be nothing: not matching it spares a search per price or year)
    r"\+?\(?[0-9]+(?:(?:[ .\-]|[ .\-]?\( ?|\) ?[ .\-]?)[0-9]+)+|\+?[0-9]{8,}",
)
_RX: Final[Any] = compile_regex("|".join(_BRANCHES))
"""No capture groups: RE2's DFA finds the span alone; the kind is read off the text."""
_HOST_RX: Final[Any] = compile_regex(rf"^{_HOST}\.?$")
_URL_RX: Final[Any] = compile_regex(f"^{_URL}$")
_EMAIL_RX: Final[Any] = compile_regex(rf"^{_EMAIL}\.?$")

# --- tables ----------------------------------------------------------------------------------


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_IBAN_LENGTHS: Final[dict[str, int]] = {
    # SWIFT IBAN registry (release of 2024), country code -> IBAN length.
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22,
    "BH": 22, "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24,
    "DE": 22, "DJ": 27, "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18,
    "FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27,
    "GT": 28, "HN": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26,
    "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20,
    "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MN": 20,
    "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23, "PK": 24,
    "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24,
    "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25,
    "SV": 28, "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
    "YE": 30,
}  # fmt: skip
_IBAN_LETTERS: Final = str.maketrans({chr(c): str(c - 55) for c in range(65, 91)})
_IBAN_COUNTRY_DIGITS: Final = {cc: cc.translate(_IBAN_LETTERS) for cc in _IBAN_LENGTHS}

_GENERIC_TLDS: Final = _words(
    """com org net edu gov mil int info biz xyz dev app cloud tech online site shop blog
    club live pro top icu vip art agency digital solutions global ltd llc inc bank finance
    capital insurance health law legal consulting software codes zone space fun world today
    works guru ninja academy careers jobs travel museum aero coop tel mobi asia wiki website
    example"""
)
_COUNTRY_TLDS: Final = _words(
    """ac ad ae af ag ai al am ao aq ar as at au aw az ba bb bd be bf bg bh bi bj bm bn bo
    br bs bt bw by ca cd cf cg ch ci ck cl cm cn co cr cu cv cw cx cy cz de dj dk dm do dz
    ec ee eg er es et eu fi fj fk fm fo fr ga gd ge gf gg gh gi gl gm gn gp gq gr gs gt gu
    gw gy hk hm hn hr ht hu ie il im in io iq ir is it je jm jo jp ke kg kh ki km kn kp kr
    kw ky kz la lb lc li lk lr ls lt lu lv ly ma mc me mg mh mn mo mp mq mr ms mt mu mv mw
    mx my mz na nc ne nf ng ni nl no np nr nu nz om pa pe pf pg ph pk pm pn pr pt pw qa re
    ro ru rw sa sb sd se sg si sk sl sm sn sr ss st su sv sx sy sz tc td tg th tj tk tl tm
    tn to tr tt tv tw tz ua ug uk us uy uz va vc ve vg vi vn vu wf ws ye yt za zm zw"""
)
"""Two-letter TLDs a bare word may end in. Left out, as file extensions or attribute names
far more often than domains: ax bz cc id md mk ml mm pl ps py rs sc sh so tf."""

_DIGITS: Final = "0123456789"
_TRIGGERS: Final = frozenset(_DIGITS + "@/\\")
_PRECHECK_MAX: Final = 512
_NUM_CHARS: Final = _DIGITS + " .-+()"
_NON_DIGIT_TO_SPACE: Final = str.maketrans(dict.fromkeys(" .-+()", " "))
_URL_TRAILING: Final = ".,;:!?'\"*"
_DEFAULT_PORT: Final = {"http": ":80", "https": ":443"}
_SURROGATES: Final = dict.fromkeys(range(0xD800, 0xE000), "\ufffd")

_Found = list[tuple[str, int, int]]


# --- public API ------------------------------------------------------------------------------


def extract(text: str) -> list[Identifier]:
    """Every identifier in ``text``, in order of start; spans index ``text`` as given.

    Callers pass NFKC-normalised text (fullwidth digits and no-break spaces become
    ASCII); nothing here shifts offsets. A lone surrogate is read as U+FFFD (RE2
    takes only valid UTF-8), which keeps every span. Identifiers do not overlap,
    except the ``domain`` of an email or URL, which lies inside it.
    """
    found = _scan(text)
    out = [Identifier(key[: key.index(":")], key, s, e) for key, s, e in found]
    out.sort(key=_start)
    return out


def keys_of(text: str) -> list[str]:
    """The canonical keys ``extract`` finds, without duplicates, in order."""
    found = _scan(text)
    if not found:
        return []
    if len(found) == 1:
        return [found[0][0]]
    return list(dict.fromkeys(key for key, _, _ in found))


def exact_key(value: str) -> str | None:
    """The exact key of a string: NFKC, case-folded, white space collapsed; None under 4 chars."""
    text = " ".join(unicodedata.normalize("NFKC", value).casefold().split())
    if len(text) < 4:
        return None
    return "v:" + text


def number_key(value: int | float) -> str | None:
    """The exact key of a number: None for bools, NaN, infinities and under 6 integer digits.

    An integral float has the key of the int (``1234567.0`` = ``1234567``), so a
    number matches the same digits written as text.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, float):
        if not isfinite(value):
            return None
        if value.is_integer():
            value = int(value)
        elif abs(value) < 100_000:
            return None
        else:
            return "v:" + repr(value)
    n = int(value)
    if -100_000 < n < 100_000:
        return None
    try:
        return "v:" + str(n)
    except ValueError:  # past the int-to-str digit limit: convert without it
        from decimal import Decimal

        return "v:" + str(Decimal(n))


def destination_forms(value: str) -> tuple[str, ...]:
    """The forms an egress allowlist matches a destination by (docs/flows.md, "Egress allowlists").

    The stripped text (lower-cased when it is an email, a URL or a host name), and
    for an email its domain, for a URL its host: lower-case, IDNA, no port, no
    trailing dot. Only a value that is one address or one URL as a whole gets the
    extra form: ``Bob <bob@example.com>`` is matched by its text alone, so a display
    name cannot smuggle an allowed address past the list.
    """
    text = value.strip()
    if _is_whole(_EMAIL_RX, text):
        lowered = text.lower()
        domain = _host_key(lowered[lowered.rindex("@") + 1 :])
        return _dedup(lowered, domain)
    if _is_whole(_URL_RX, text):
        host = _url_host(text)
        return _dedup(text.lower(), host) if host else (text.lower(),)
    if _is_whole(_HOST_RX, text):
        return _dedup(text.lower(), _host_key(text))
    return (text,)


def iban_ok(s: str) -> bool:
    """True for a valid IBAN: upper-case, no spaces, registry length, ISO 7064 mod 97-10."""
    n = len(s)
    if n < 15 or n > 34 or not s.isascii() or not s.isalnum() or not s.isupper():
        return False
    if _IBAN_LENGTHS.get(s[:2]) != n:
        return False
    check = s[2:4]
    if not check.isdigit() or not "02" <= check <= "98":
        return False
    bban = s[4:]
    if not bban.isdigit():
        bban = bban.translate(_IBAN_LETTERS)
    return int(bban + _IBAN_COUNTRY_DIGITS[s[:2]] + check) % 97 == 1


def luhn_ok(digits: str) -> bool:
    """True when ``digits`` (ASCII digits only) passes the Luhn check."""
    if not digits or not digits.isascii() or not digits.isdigit():
        return False
    odd = sum(map(int, digits[-1::-2]))
    even = sum(_LUHN_DOUBLE[c] for c in digits[-2::-2])
    return (odd + even) % 10 == 0


_LUHN_DOUBLE: Final = {str(d): (2 * d) - 9 if d > 4 else 2 * d for d in range(10)}


# --- scanning --------------------------------------------------------------------------------


def _start(ident: Identifier) -> int:
    return ident.start


def _may_hold(text: str) -> bool:
    """False when ``text`` cannot hold an identifier (cheap; short texts only)."""
    if not _TRIGGERS.isdisjoint(text):
        return True
    # Only a bare domain is left: a dot before two letters.
    i = text.find(".")
    n = 0
    while i != -1:
        if text[i + 1 : i + 3].isalpha():
            return True
        n += 1
        if n > 8:
            return True
        i = text.find(".", i + 1)
    return False


def _scan(text: str) -> _Found:
    """``(key, start, end)`` of every identifier, in order (the domain after its email/URL)."""
    if len(text) < 3 or (len(text) <= _PRECHECK_MAX and not _may_hold(text)):
        return []
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.translate(_SURROGATES)
        data = text.encode("utf-8")
    out: _Found = []
    search = _RX.search
    n = len(text)
    if len(data) == n:  # ASCII: byte offsets are character offsets
        pos = 0
        while True:
            m = search(data, pos)
            if m is None:
                return out
            s, e = m.span()
            pos = _handle(text, s, e, out)
            # Spare the last search (the costliest step) when the rest holds nothing.
            if n - pos < 3 or (n - pos <= _PRECHECK_MAX and not _may_hold(text[pos:])):
                return out
    # Byte offsets from RE2, converted incrementally (every conversion moves forward).
    pos_b = anchor_b = anchor_c = 0
    while True:
        m = search(data, pos_b)
        if m is None:
            return out
        bs, be = m.span()
        s = anchor_c + len(data[anchor_b:bs].decode("utf-8"))
        e = s + len(data[bs:be].decode("utf-8"))
        anchor_b, anchor_c = bs, s
        resume = _handle(text, s, e, out)
        pos_b = bs + len(text[s:resume].encode("utf-8"))


def _handle(text: str, s: int, e: int, out: _Found) -> int:
    """Classify the candidate ``text[s:e]``, record what it holds; return where to go on."""
    c = text[s]
    # Only the path and URL branches match a ':', so a colon inside the match decides.
    if c in "/~" or text[s + 1 : min(s + 2, e)] == ":":
        return _path(text, s, e, out)
    if c in "hH" and (text.startswith("://", s + 4, e) or text.startswith("://", s + 5, e)):
        return _url(text, s, e, out)
    t = text[s:e]
    if "@" in t:
        return _email(text, s, e, t, out)
    if not t.rstrip(_NUM_CHARS):
        _number(text, s, e, t, out)
        return e
    if "." in t:
        _domain(text, s, e, t, out)
        return e
    if " " in t:
        return _spaced_iban(s, e, t, out)
    _token(text, s, e, out)
    return e


def _path(text: str, s: int, e: int, out: _Found) -> int:
    t = text[s:e].rstrip(".,")
    if t[-1:] in ("/", "\\"):
        t = t[:-1]
    seps = t.count("/") + t.count("\\")
    if seps < (2 if t[0] == "/" else 1):
        return s + 1
    out.append(("path:" + t.replace("\\", "/"), s, s + len(t)))
    return s + len(t)


def _url(text: str, s: int, e: int, out: _Found) -> int:
    u = text[s:e]
    # Sentence punctuation after a URL is not part of it, nor is a closing bracket that
    # closes none the URL opened: (see https://en.wikipedia.org/wiki/Foo_(bar)).
    unclosed = {")": u.count(")") - u.count("("), "]": u.count("]") - u.count("[")}
    end = len(u)
    while end:
        ch = u[end - 1]
        if ch in _URL_TRAILING:
            end -= 1
        elif ch in unclosed and unclosed[ch] > 0:
            unclosed[ch] -= 1
            end -= 1
        else:
            break
    u = u[:end]
    parts = _url_parts(u)
    sep = u.index("://") + 3
    if parts is None:
        return s + sep
    key, host, host_at, host_len = parts
    out.append(("url:" + key, s, s + len(u)))
    out.append(("domain:" + host, s + host_at, s + host_at + host_len))
    return s + len(u)


def _url_parts(u: str) -> tuple[str, str, int, int] | None:
    """(canonical URL, host key, host offset, host length) of ``u``, or None without a host."""
    sep = u.index("://")
    scheme = u[:sep].lower()
    rest = u[sep + 3 :]
    end = len(rest)
    for ch in "/?#":
        i = rest.find(ch, 0, end)
        if i != -1:
            end = i
    authority, tail = rest[:end], rest[end:]
    at = authority.rfind("@")
    userinfo, hostport = authority[: at + 1], authority[at + 1 :]
    if hostport.startswith("["):
        close = hostport.find("]")
        split = len(hostport) if close == -1 else close + 1
        host, port = hostport[:split], hostport[split:]
    else:
        colon = hostport.find(":")
        host, port = (hostport, "") if colon == -1 else (hostport[:colon], hostport[colon:])
    written = host.rstrip(".")
    if not written:
        return None
    if port in (":", _DEFAULT_PORT.get(scheme)):
        port = ""
    hkey = _host_key(written)
    tail = tail.split("#", 1)[0]
    q = tail.find("?")
    path, query = (tail, "") if q == -1 else (tail[:q], tail[q:])
    if path.endswith("/"):
        path = path[:-1]
    key = f"{scheme}://{userinfo}{hkey}{port}{path}{query}"
    return key, hkey, sep + 3 + at + 1, len(written)


def _url_host(u: str) -> str | None:
    """The host key of a whole-value URL, or None (a backslash makes hosts ambiguous)."""
    if "\\" in u:
        return None
    parts = _url_parts(u)
    return None if parts is None else parts[1]


def _host_key(host: str) -> str:
    """A host name lower-cased, IDNA-encoded (when not ASCII), without its trailing dot."""
    host = host.rstrip(".").lower()
    if host.isascii():
        return host
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError:
        return host


def _email(text: str, s: int, e: int, t: str, out: _Found) -> int:
    at = t.index("@")
    local = t[:at].lstrip(".")
    domain = t[at + 1 :]
    tld = domain[domain.rfind(".") + 1 :]
    if not local or not (tld.isalpha() or tld[:4].lower() == "xn--") or not _labels_ok(domain):
        return s + at + 1
    start = s + at - len(local)
    host = _host_key(domain)
    out.append((f"email:{local.lower()}@{host}", start, e))
    out.append(("domain:" + host, s + at + 1, e))
    return e


def _labels_ok(host: str) -> bool:
    return not any(lab[:1] == "-" or lab[-1:] == "-" for lab in host.split("."))


def _domain(text: str, s: int, e: int, t: str, out: _Found) -> None:
    stripped = t.rstrip("-")
    e2 = s + len(stripped)
    dot = stripped.rfind(".")
    tld = stripped[dot + 1 :]
    low = tld.lower()
    ok = False
    if low in _GENERIC_TLDS:
        ok = True
    elif low in _COUNTRY_TLDS:
        before = stripped[stripped.rfind(".", 0, dot) + 1 : dot]
        ok = len(before) >= 2 and not before.isdigit()
    if (
        ok
        and not (tld[0].isupper() and not tld.isupper())
        and (s == 0 or text[s - 1] not in "@/\\")
        and text[e2 : e2 + 1] != "("
        and _labels_ok(stripped)
    ):
        out.append(("domain:" + _host_key(stripped), s, e2))
        return
    # Not a domain: its dot-separated tokens may still be ids (report2024.pdf).
    start = s
    for label in t.split("."):
        end = start + len(label)
        if len(label) >= 6:
            _token(text, start, end, out)
        start = end + 1


def _spaced_iban(s: int, e: int, t: str, out: _Found) -> int:
    """An IBAN written in groups: the groups that make up its country's length, if valid."""
    length = _IBAN_LENGTHS.get(t[:2].upper())
    if length is not None:
        cut = size = 0
        for group in t[:64].split(" "):  # 34 characters and the spaces between them
            size += len(group)
            cut += len(group)
            if size >= length:
                break
            cut += 1
        if size == length:
            compact = t[:cut].replace(" ", "").upper()
            if iban_ok(compact):
                out.append(("iban:" + compact, s, s + cut))
                return s + cut
    return s + 4  # the first group is never anything else; the rest is scanned again


def _token(text: str, s: int, e: int, out: _Found) -> None:
    """One token of letters, digits, ``_`` and ``-``: an IBAN, a card or an id."""
    t = text[s:e]
    if t[-1] == "-":
        t = t.rstrip("-")
        e = s + len(t)
    n = len(t)
    if n < 6 or n > 64:
        return
    if t.isdigit():
        if 13 <= n <= 19 and luhn_ok(t):
            out.append(("card:" + t, s, e))
        elif 8 <= n <= 34 and t.isascii():
            out.append(("id:" + t, s, e))
        return
    if n >= 15 and t[:2].isalpha() and t[2:4].isdigit():
        upper = t.upper()
        if iban_ok(upper):
            out.append(("iban:" + upper, s, e))
            return
    if _is_timestamp(t) or t.isalpha():
        return
    has_digit = False
    has_letter = False
    for ch in t:
        if ch.isdigit():
            has_digit = True
        elif ch.isalpha():
            has_letter = True
    if has_digit and has_letter:
        out.append(("id:" + t.upper(), s, e))


def _is_timestamp(t: str) -> bool:
    """``2024-01-15T10...`` or ``20240115T103000Z``: a time, not an id."""
    if len(t) >= 13 and t[4] == "-" and t[7] == "-" and t[10] in "Tt":
        return (t[:4] + t[5:7] + t[8:10]).isdigit()
    if len(t) >= 15 and t[8] in "Tt":
        return t[:8].isdigit() and t[9:15].isdigit()
    return False


# --- numbers: cards, phones, digit ids ---------------------------------------------------------


def _number(text: str, s: int, e: int, t: str, out: _Found) -> None:
    if t.isdigit():
        n = len(t)
        if 13 <= n <= 19 and luhn_ok(t):
            out.append(("card:" + t, s, e))
        elif 8 <= n <= 34 and text[e : e + 1] != "_" and text[s - 1 : s] != "_":
            out.append(("id:" + t, s, e))
        return
    groups: list[tuple[int, int]] = []
    at = 0
    for piece in t.translate(_NON_DIGIT_TO_SPACE).split(" "):
        if piece:
            groups.append((at, at + len(piece)))
        at += len(piece) + 1
    if not groups:
        return
    seps = [t[groups[k][1] : groups[k + 1][0]] for k in range(len(groups) - 1)]
    prefix = t[: groups[0][0]]
    _Numbers(text, s, t, groups, seps, prefix, out).run()


class _Numbers:
    """Walks the digit groups of one number run, taking phones, cards and digit ids."""

    __slots__ = ("groups", "out", "prefix", "s", "seps", "t", "text")

    def __init__(
        self,
        text: str,
        s: int,
        t: str,
        groups: list[tuple[int, int]],
        seps: list[str],
        prefix: str,
        out: _Found,
    ) -> None:
        self.text, self.s, self.t = text, s, t
        self.groups, self.seps, self.prefix, self.out = groups, seps, prefix, out

    def before(self, i: int) -> str:
        return self.seps[i - 1] if i > 0 else self.prefix

    def after(self, j: int) -> str:
        return self.seps[j] if j < len(self.seps) else ""

    def digits(self, i: int) -> str:
        a, b = self.groups[i]
        return self.t[a:b]

    def run(self) -> None:
        i = 0
        n = len(self.groups)
        while i < n:
            j = -1
            if i == 0 and self.prefix.startswith("+"):
                j = self.plus_phone()
            if j < 0:
                j = self.card(i)
            if j < 0 and not (i == 0 and self.prefix.startswith("+")):
                j = self.phone(i)
            if j < 0:
                self.digit_id(i)
                j = i
            i = j + 1

    def emit(self, key: str, i: int, j: int, start: int | None = None) -> None:
        a = self.groups[i][0] if start is None else start
        self.out.append((key, self.s + a, self.s + self.groups[j][1]))

    def plus_phone(self) -> int:
        """``+`` and 8-15 digits from the first group on; a ``(0)`` trunk is not counted."""
        kept: list[str] = []
        total = 0
        best, key = -1, ""
        for k in range(len(self.groups)):
            d = self.digits(k)
            trunk = d == "0" and k > 0 and self.before(k).endswith("(") and self.after(k)[:1] == ")"
            if not trunk:
                if total + len(d) > 15:
                    break
                total += len(d)
                kept.append(d)
            if total >= 8:
                best, key = k, "".join(kept)
        if best < 0:
            return -1
        self.emit("phone:+" + key, 0, best, start=0)
        return best

    def card(self, i: int) -> int:
        """13-19 digits in groups joined by one kind of single space or dash, Luhn-valid."""
        d = self.digits(i)
        if i == 0 and self.prefix.startswith("+"):
            return -1
        if self.before(i)[-1:] in ("-", "."):
            return -1
        if 13 <= len(d) <= 19:
            ok = self.after(i)[:1] not in ("-", ".") and luhn_ok(d)
            if ok:
                self.emit("card:" + d, i, i)
                return i
            return -1
        if len(d) != 4 or self.after(i) not in (" ", "-"):
            return -1
        kind = self.after(i)
        ends: list[tuple[int, str]] = []
        parts = [d]
        total = 4
        j = i
        while j + 1 < len(self.groups) and self.seps[j] == kind:
            nxt = self.digits(j + 1)
            if not 3 <= len(nxt) <= 6 or total + len(nxt) > 19:
                break
            j += 1
            total += len(nxt)
            parts.append(nxt)
            if total >= 13:
                ends.append((j, "".join(parts)))
        for j, number in reversed(ends):
            if self.after(j)[:1] in ("-", "."):
                continue  # part of a longer number
            if luhn_ok(number):
                self.emit("card:" + number, i, j)
                return j
        return -1

    def phone(self, i: int) -> int:
        """10-15 digits in 2+ groups of 2+ digits, one separator kind, the whole run."""
        first = self.digits(i)
        if not 2 <= len(first) <= 5:
            return -1
        before = self.before(i)
        if before.rstrip("( ")[-1:] in ("-", ".") or (len(before) == 1 and before == self.after(i)):
            return -1  # inside a longer run of groups (a card failing Luhn, say)
        paren = before.endswith(("(", "( "))
        kind = ""
        total = len(first)
        parts = [first]
        j = i
        while j + 1 < len(self.groups):
            sep = self.seps[j]
            if "(" in sep:
                break
            if ")" in sep:
                if not (paren and j == i):
                    break
            elif len(sep) != 1 or (kind and sep != kind):
                break
            else:
                kind = sep
            nxt = self.digits(j + 1)
            if len(nxt) < 2:
                break
            j += 1
            total += len(nxt)
            if total > 15:
                return -1
            parts.append(nxt)
        after = self.after(j)
        if j == i or not 10 <= total <= 15 or (kind and after == kind) or after[:1] in ("-", "."):
            return -1  # too short or long, or the run goes on in groups a phone does not have
        sizes = [len(p) for p in parts]
        if kind in (" ", ".") and sizes[0] <= 3 and all(x == 3 for x in sizes[1:]):
            return -1  # 123 456 789 012: grouped in thousands
        if kind == "." and len(parts) == 4 and all(int(p) <= 255 for p in parts):
            return -1  # an IPv4 address
        number = "".join(parts)
        key = "+" + number[2:] if number.startswith("00") else number
        start = self.t.rfind("(", 0, self.groups[i][0]) if paren else None
        self.emit("phone:" + key, i, j, start=start)
        return j

    def digit_id(self, i: int) -> None:
        d = self.digits(i)
        if not 8 <= len(d) <= 34:
            return
        if any(ch in self.before(i) + self.after(i) for ch in "-."):
            return  # a decimal or a dashed number, not a token of its own
        end = self.s + self.groups[i][1]
        if self.text[end : end + 1] == "_" or (i == 0 and self.text[self.s - 1 : self.s] == "_"):
            return
        self.emit("id:" + d, i, i)


def _is_whole(rx: Any, text: str) -> bool:
    try:
        return rx.search(text) is not None
    except UnicodeEncodeError:
        return False


def _dedup(*forms: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(forms))
