"""Identifiers and their canonical keys (docs/flows.md, "What is recorded from a value")."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from warden.scan import identifiers
from warden.scan.identifiers import (
    Identifier,
    destination_forms,
    exact_key,
    extract,
    iban_ok,
    keys_of,
    luhn_ok,
    number_key,
)

IBANS = [
    "DE89370400440532013000",
    "GB82WEST12345698765432",
    "FR1420041010050500013M02606",
    "NL91ABNA0417164300",
    "DE44500105175407324931",
    "AT611904300234573201",
    "BE68539007547034",
    "NO9386011117947",
    "CH9300762011623852957",
    "ES9121000418450200051332",
    "IT60X0542811101000000123456",
    "MT84MALT011000012345MTLCAST001S",
]
CARDS = ["4111111111111111", "5500000000000004", "378282246310005", "6011111111111117"]


def found(text: str) -> list[tuple[str, str]]:
    """(key, the text it was found as) for every identifier in ``text``."""
    return [(i.key, text[i.start : i.end]) for i in extract(text)]


def kinds(text: str) -> set[str]:
    return {i.kind for i in extract(text)}


# --- each kind, in the sentences it comes in --------------------------------------------------


@pytest.mark.parametrize(
    ("text", "want"),
    [
        (
            "Hi Martha, please transfer the deposit to DE44 5001 0517 5407 3249 31 by Friday.",
            [("iban:DE44500105175407324931", "DE44 5001 0517 5407 3249 31")],
        ),
        (
            "IBAN: de89370400440532013000 (Commerzbank)",
            [("iban:DE89370400440532013000", "de89370400440532013000")],
        ),
        (
            "Reply to Bob.Smith@Example.COM, thanks!",
            [
                ("email:bob.smith@example.com", "Bob.Smith@Example.COM"),
                ("domain:example.com", "Example.COM"),
            ],
        ),
        (
            "Card on file: 4111 1111 1111 1111, exp 12/26.",
            [("card:4111111111111111", "4111 1111 1111 1111")],
        ),
        ("Amex 3782 822463 10005 ok", [("card:378282246310005", "3782 822463 10005")]),
        ("pay with 5500-0000-0000-0004", [("card:5500000000000004", "5500-0000-0000-0004")]),
        (
            "Call me on +49 151 2345 6789 tonight",
            [("phone:+4915123456789", "+49 151 2345 6789")],
        ),
        ("Office: (555) 123-4567.", [("phone:5551234567", "(555) 123-4567")]),
        ("Tel. 030 1234 5678, Fax", [("phone:03012345678", "030 1234 5678")]),
        ("Praxis (030) 12345678.", [("phone:03012345678", "(030) 12345678")]),
        ("mobile 06 12 34 56 78", [("phone:0612345678", "06 12 34 56 78")]),
        (
            "Docs at https://Docs.Example.org:443/start/?lang=en#intro.",
            [
                (
                    "url:https://docs.example.org/start?lang=en",
                    "https://Docs.Example.org:443/start/?lang=en#intro",
                ),
                ("domain:docs.example.org", "Docs.Example.org"),
            ],
        ),
        (
            "(see https://en.wikipedia.org/wiki/Foo_(bar))",
            [
                (
                    "url:https://en.wikipedia.org/wiki/Foo_(bar)",
                    "https://en.wikipedia.org/wiki/Foo_(bar)",
                ),
                ("domain:en.wikipedia.org", "en.wikipedia.org"),
            ],
        ),
        ("Mirror on www.example.org today", [("domain:www.example.org", "www.example.org")]),
        ("Our shop: bücher.de", [("domain:xn--bcher-kva.de", "bücher.de")]),
        (
            "saved to /home/bob/reports/q3.pdf.",
            [("path:/home/bob/reports/q3.pdf", "/home/bob/reports/q3.pdf")],
        ),
        ("open ~/notes/todo.txt", [("path:~/notes/todo.txt", "~/notes/todo.txt")]),
        ("copy C:\\Users\\bob\\x.doc now", [("path:C:/Users/bob/x.doc", "C:\\Users\\bob\\x.doc")]),
        ("order INV-2024-0042 shipped", [("id:INV-2024-0042", "INV-2024-0042")]),
        ("account acct_93KQ2 closed", [("id:ACCT_93KQ2", "acct_93KQ2")]),
        ("Account no. 12345678 at the branch", [("id:12345678", "12345678")]),
        (
            "doc 1BxiMVs0XRA5nFMdKvBdBZjgmUUqptlbs74OgvE2upms shared",
            [
                (
                    "id:1BXIMVS0XRA5NFMDKVBDBZJGMUUQPTLBS74OGVE2UPMS",
                    "1BxiMVs0XRA5nFMdKvBdBZjgmUUqptlbs74OgvE2upms",
                )
            ],
        ),
        (
            "trace 550e8400-e29b-41d4-a716-446655440000",
            [("id:550E8400-E29B-41D4-A716-446655440000", "550e8400-e29b-41d4-a716-446655440000")],
        ),
    ],
)
def test_each_kind_in_a_sentence(text: str, want: list[tuple[str, str]]) -> None:
    assert found(text) == want


def test_a_mail_body() -> None:
    body = (
        "From: Martha Landlord <martha@landlords.example>\n"
        "Subject: rent for December (invoice INV-2024-0042)\n\n"
        "Hi! The rent of 1,450.00 EUR is due on 2024-12-01. My new account is\n"
        "GB82 WEST 1234 5698 7654 32; the old one (NL91ABNA0417164300) is closed.\n"
        "Questions? Call +44 20 7946 0958 or see https://landlords.example/faq.\n"
    )
    assert keys_of(body) == [
        "email:martha@landlords.example",
        "domain:landlords.example",
        "id:INV-2024-0042",
        "iban:GB82WEST12345698765432",
        "iban:NL91ABNA0417164300",
        "phone:+442079460958",
        "url:https://landlords.example/faq",
    ]


def test_spans_index_non_ascii_text() -> None:
    text = "Überweisung für Ünal → DE89 3704 0044 0532 0130 00 und ünal@bücher.de ✓"
    got = extract(text)
    assert [i.kind for i in got] == ["iban", "email", "domain"]
    assert text[got[0].start : got[0].end] == "DE89 3704 0044 0532 0130 00"
    assert got[1].key == "email:ünal@xn--bcher-kva.de"
    assert text[got[1].start : got[1].end] == "ünal@bücher.de"
    assert text[got[2].start : got[2].end] == "bücher.de"


def test_email_and_url_carry_their_domain_inside_their_span() -> None:
    text = "write to ann@corp.example or https://api.corp.example/v1"
    email, d1, url, d2 = extract(text)
    assert (email.kind, d1.kind, url.kind, d2.kind) == ("email", "domain", "url", "domain")
    assert email.start < d1.start and d1.end == email.end
    assert text[d1.start : d1.end] == "corp.example"
    assert url.start < d2.start < d2.end < url.end
    assert d2.key == "domain:api.corp.example"


# --- checksums --------------------------------------------------------------------------------


@pytest.mark.parametrize("iban", IBANS)
def test_iban_known_answers_and_corruptions(iban: str) -> None:
    assert iban_ok(iban)
    assert keys_of(f"to {iban} please") == [f"iban:{iban}"]
    # a changed digit, two swapped characters, a wrong length: each caught
    i = next(k for k in range(len(iban) - 1, 3, -1) if iban[k].isdigit())
    changed = iban[:i] + str((int(iban[i]) + 1) % 10) + iban[i + 1 :]
    swapped = next(
        iban[:k] + iban[k + 1] + iban[k] + iban[k + 2 :]
        for k in range(4, len(iban) - 1)
        if iban[k] != iban[k + 1]
    )
    for bad in (changed, swapped, iban + "0", iban[:-1]):
        assert not iban_ok(bad)
        assert not any(k.startswith("iban:") for k in keys_of(f"to {bad} please"))


def test_iban_ok_needs_upper_case_no_spaces_and_a_registry_country() -> None:
    assert not iban_ok("de89370400440532013000")
    assert not iban_ok("DE89 3704 0044 0532 0130 00")
    assert not iban_ok("")
    assert not iban_ok("DE89370400440532013000\u0301")
    # ZZ is in no registry, though its mod 97 checks out
    bban = "370400440532013000"
    check = 98 - int(bban + "353500") % 97
    assert not iban_ok(f"ZZ{check:02d}{bban}")
    # check digits 00, 01 and 99 are never issued: 99 passes mod 97 where 02 is right
    bban = next(f"{n:018d}" for n in range(10**17, 10**18) if int(f"{n:018d}131400") % 97 == 96)
    assert iban_ok(f"DE02{bban}")
    assert int(f"{bban}131499") % 97 == 1
    assert not iban_ok(f"DE99{bban}")


@pytest.mark.parametrize("card", CARDS)
def test_cards_known_answers_and_corruptions(card: str) -> None:
    assert luhn_ok(card)
    assert keys_of(f"card {card} on file") == [f"card:{card}"]
    bad = card[:-1] + str((int(card[-1]) + 1) % 10)
    assert not luhn_ok(bad)
    assert not any(k.startswith("card:") for k in keys_of(f"card {bad} on file"))


def test_a_card_is_not_cut_out_of_a_longer_number() -> None:
    assert "card:4111111111111111" not in keys_of("ref 41111111111111112024")
    assert not any(k.startswith("card:") for k in keys_of("ref 4111-1111-1111-1111-2024"))
    # a Luhn-invalid grouping is not reread as a phone from its second group
    assert keys_of("card 4111 1111 1111 1112 declined") == []


def test_luhn_ok_rejects_what_is_not_digits() -> None:
    assert not luhn_ok("")
    assert not luhn_ok("4111 1111 1111 1111")
    assert not luhn_ok("٤١١١١١١١١١١١١١١١")  # Arabic-Indic digits


# --- the same identifier however it is written ------------------------------------------------


@pytest.mark.parametrize(
    "variants",
    [
        [
            "DE44500105175407324931",
            "DE44 5001 0517 5407 3249 31",
            "de44 5001 0517 5407 3249 31",
            "de44500105175407324931",
            "DE44 500105175407324931",
        ],
        [
            "+49 151 23456789",
            "+49 151 2345 6789",
            "+49-151-23456789",
            "+4915123456789",
            "+49 (0) 151 23456789",
            "+49.151.2345.6789",
            "0049 151 23456789",
        ],
        ["bob@example.com", "Bob@Example.COM", "BOB@EXAMPLE.COM"],
        [
            "https://example.com/a/b?q=1",
            "HTTPS://Example.COM/a/b?q=1",
            "https://example.com:443/a/b/?q=1",
            "https://example.com/a/b?q=1#section-2",
            "https://example.com./a/b?q=1",
        ],
        ["4111 1111 1111 1111", "4111-1111-1111-1111", "4111111111111111"],
        ["INV-2024-0042", "inv-2024-0042"],
        ["/srv/data/x", "/srv/data/x/"],
    ],
)
def test_formatting_variants_share_a_key(variants: list[str]) -> None:
    keys = [keys_of(f"see {v}, thanks")[0] for v in variants]
    assert len(set(keys)) == 1, keys


def test_url_keeps_path_and_query_as_written() -> None:
    assert keys_of("https://x.example/A/B?Q=Z")[0] == "url:https://x.example/A/B?Q=Z"
    assert keys_of("http://x.example:8080/")[0] == "url:http://x.example:8080"
    assert keys_of("http://x.example:443/")[0] == "url:http://x.example:443"
    assert keys_of("see https://x.example/a.")[0] == "url:https://x.example/a"


# --- what is not an identifier ----------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "The meeting is moved to the afternoon.",
        "e.g. this, i.e. that, etc.",
        "Mr. Smith and Dr. Who met at 10:30 on 2024-01-15.",
        "see README.md and setup.py, then main.rs or build.sh",
        "version 1.2.3 (build 10.0.19041) costs $1,299.00 or 3.50 EUR",
        "on 12/05/2024 at 09:45, and/or 1/2 cup",
        "Total: 1 234 567 EUR, 12.345.678.901 units",
        "server 192.168.100.200 and 198.51.100.142",
        "It ended.It was late.So we left",
        "log.info(msg) and user.id = 3",
        "created 2024-01-15T10:30:00Z",
        "a.io and 10.am",
        "@handle.com posted",
    ],
)
def test_no_identifier_in(text: str) -> None:
    assert found(text) == []


def test_dates_and_times_are_not_phones() -> None:
    for text in ("2024-01-15", "15.01.2024 10.30", "2024-01-15 2024-01-16", "10:30:00"):
        assert "phone" not in kinds(text), text


def test_short_tokens_are_not_ids() -> None:
    assert keys_of("take 2 x AB12C and v1") == []
    assert keys_of("python3 and sha256") == ["id:PYTHON3", "id:SHA256"]


def test_an_iban_is_not_also_an_id_or_a_phone() -> None:
    assert kinds("to DE89 3704 0044 0532 0130 00 now") == {"iban"}
    assert kinds("to DE89370400440532013000 now") == {"iban"}


def test_a_file_name_is_not_a_domain_but_may_hold_an_id() -> None:
    assert found("attached report2024.pdf") == [("id:REPORT2024", "report2024")]


# --- exact keys -------------------------------------------------------------------------------


def test_exact_key() -> None:
    assert exact_key("  Quarterly \t Report\nQ3 ") == "v:quarterly report q3"
    assert exact_key("\uff21\uff22\uff23\uff24") == "v:abcd"  # NFKC: fullwidth
    assert exact_key("Straße") == "v:strasse"  # case-folded
    assert exact_key("yes") is None
    assert exact_key("  y  e ") is None  # "y e" is 3 characters
    assert exact_key("four") == "v:four"


def test_number_key() -> None:
    assert number_key(3) is None
    assert number_key(2024) is None
    assert number_key(99_999) is None
    assert number_key(100_000) == "v:100000"
    assert number_key(-1_234_567) == "v:-1234567"
    assert number_key(1_234_567.0) == "v:1234567"
    assert number_key(1_234_567.5) == "v:1234567.5"
    assert number_key(12_345.5) is None
    assert number_key(True) is None
    assert number_key(math.nan) is None
    assert number_key(math.inf) is None
    assert number_key(1e22) == "v:" + "1" + "0" * 22
    assert number_key(10**5000) == "v:1" + "0" * 5000  # past Python's int-to-str limit
    # a number and the same digits as text meet under one key
    assert number_key(1_234_567) == exact_key("1234567")


# --- egress destinations ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "want"),
    [
        ("Bob@Example.COM", ("bob@example.com", "example.com")),
        ("  ann@corp.example ", ("ann@corp.example", "corp.example")),
        (
            "https://API.Partner.example:8443/v1/x",
            ("https://api.partner.example:8443/v1/x", "api.partner.example"),
        ),
        ("https://api.partner.example./", ("https://api.partner.example./", "api.partner.example")),
        ("https://bücher.de/x", ("https://bücher.de/x", "xn--bcher-kva.de")),
        (
            "https://partner.example@evil.example/",
            ("https://partner.example@evil.example/", "evil.example"),
        ),
        ("API.Partner.Example", ("api.partner.example",)),
        ("#Team-General", ("#Team-General",)),
        ("Bob <bob@corp.example>", ("Bob <bob@corp.example>",)),
        ("https://evil.example\\@corp.example/", ("https://evil.example\\@corp.example/",)),
    ],
)
def test_destination_forms(value: str, want: tuple[str, ...]) -> None:
    assert destination_forms(value) == want


# --- properties -------------------------------------------------------------------------------

FRAGMENTS = [
    *IBANS,
    "DE44 5001 0517 5407 3249 31",
    "gb82 west 1234 5698 7654 32",
    "DE89 3704 0044 0532 0130 01",
    *CARDS,
    "4111 1111 1111 1111",
    "3782 822463 10005",
    "+49 151 2345 6789",
    "(555) 123-4567",
    "ann@corp.example",
    "Bob.Smith@Example.COM",
    "https://example.com/a_(b)?q=1#x",
    "http://[::1]:8080/x",
    "www.example.org",
    "bücher.de",
    "/home/bob/x.txt",
    "~/a",
    "C:\\a\\b",
    "INV-2024-0042",
    "acct_93KQ2",
    "12345678",
    "2024-01-15",
    "10:30",
    "1.2.3",
    "e.g.",
    "README.md",
    "Ünal",
    "(",
    ")",
    "@",
    "/",
    "\\",
    ".",
    "-",
    "_",
    "+",
    "“",
    "—",
    "😀",
]
texts = st.one_of(
    st.text(max_size=200),
    st.lists(
        st.one_of(st.sampled_from(FRAGMENTS), st.text(alphabet="aZ09 .-_@/\\:+()~ü\n", max_size=6)),
        max_size=25,
    ).map("".join),
    st.lists(st.sampled_from(FRAGMENTS), max_size=12).map(" ".join),
)


def _relates(ident: Identifier, text: str) -> bool:
    """The key says what the span holds (a weaker form for hosts that IDNA rewrote)."""
    written = text[ident.start : ident.end]
    body = ident.key[len(ident.kind) + 1 :]
    digits = "".join(c for c in written if c.isdigit())
    match ident.kind:
        case "iban":
            return body == written.replace(" ", "").upper()
        case "card":
            return body == digits
        case "phone":
            b = body.lstrip("+")
            trunk = any(digits[:k] + digits[k + 1 :] == b for k, c in enumerate(digits) if c == "0")
            return b == digits or digits == "00" + b or trunk
        case "email":
            return "@" in written and (body == written.lower() or not written.isascii())
        case "url":
            return body.startswith(written[: written.index("://") + 3].lower())
        case "domain":
            return body == written.lower().rstrip(".") or not written.isascii()
        case "path":
            return body == written.replace("\\", "/")
        case "id":
            return body == written.upper()
    return False


def _check(text: str) -> None:
    got = extract(text)
    assert [i.start for i in got] == sorted(i.start for i in got)
    outer = [i for i in got if i.kind in ("email", "url")]
    primary = []
    for i in got:
        assert 0 <= i.start < i.end <= len(text)
        assert i.key.startswith(i.kind + ":")
        assert _relates(i, text), (i, text[i.start : i.end])
        inner = i.kind == "domain" and any(o.start <= i.start and i.end <= o.end for o in outer)
        if not inner:
            primary.append(i)
    for a, b in itertools.pairwise(primary):
        assert a.end <= b.start, (a, b)
    assert keys_of(text) == list(dict.fromkeys(i.key for i in got))


@given(texts)
@settings(max_examples=400)
def test_extract_properties(text: str) -> None:
    _check(text)


@given(st.data())
def test_any_valid_iban_is_found_however_written(data: st.DataObject) -> None:
    cc = data.draw(st.sampled_from(sorted(identifiers._IBAN_LENGTHS)), label="country")
    size = identifiers._IBAN_LENGTHS[cc] - 4
    alnum = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    bban = data.draw(st.text(alphabet=alnum, min_size=size, max_size=size), label="bban")
    numeric = (bban + cc).translate(identifiers._IBAN_LETTERS)
    iban = f"{cc}{98 - int(numeric + '00') % 97:02d}{bban}"
    assert iban_ok(iban)
    written = iban
    if data.draw(st.booleans(), label="grouped"):
        written = " ".join(iban[k : k + 4] for k in range(0, len(iban), 4))
    if data.draw(st.booleans(), label="lower"):
        written = written.lower()
    text = f"Please pay 1,450 EUR to {written} by Friday."
    assert f"iban:{iban}" in keys_of(text)
    _check(text)


@given(st.lists(st.integers(0, 9), min_size=11, max_size=17), st.sampled_from(["", " ", "-"]))
def test_any_luhn_valid_card_is_found(body: list[int], sep: str) -> None:
    digits = "".join(map(str, [4, *body]))
    check = next(d for d in "0123456789" if luhn_ok(digits + d))
    card = digits + check
    assume(not sep or len(card) % 4 not in (1, 2))  # a last group of 1-2 digits: no card grouping
    written = sep.join(card[k : k + 4] for k in range(0, len(card), 4)) if sep else card
    assert f"card:{card}" in keys_of(f"charged to {written} today")


def _luhn_reference(digits: str) -> bool:
    total = 0
    for k, c in enumerate(reversed(digits)):
        d = int(c) * (2 if k % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


@given(st.text(alphabet="0123456789", min_size=1, max_size=25))
def test_luhn_matches_a_reference(digits: str) -> None:
    assert luhn_ok(digits) == _luhn_reference(digits)


def test_lone_surrogates_are_read_as_replacement_characters() -> None:
    text = "\ud800 pay DE89370400440532013000 \udfff to ann@corp.example"
    fixed = text.replace("\ud800", "\ufffd").replace("\udfff", "\ufffd")
    assert extract(text) == extract(fixed)
    assert keys_of(text)[0] == "iban:DE89370400440532013000"
    assert exact_key("\ud800abc") is not None


# --- hostile input: linear time (measured in benchmarks, never asserted here) -------------------


@pytest.mark.parametrize(
    "text",
    [
        "1 " * 500_000,
        "4111 " * 200_000,
        "DE89 " * 200_000,
        "a@b.co " * 140_000,
        "http://a" + ")" * 1_000_000,
        "http://a.example" + ".)" * 500_000,
        "/a" * 500_000,
        "ab." * 330_000,
        "a1" * 500_000,
        "ü.ü1 " * 200_000,
        "+1 (0) " * 140_000,
    ],
    ids=lambda t: repr(t[:12]),
)
def test_a_megabyte_of_hostile_text_completes(text: str) -> None:
    got = extract(text)
    assert all(0 <= i.start < i.end <= len(text) for i in got)


def test_public_names() -> None:
    assert sorted(identifiers.__all__) == sorted(
        [
            "Identifier",
            "destination_forms",
            "exact_key",
            "extract",
            "iban_ok",
            "keys_of",
            "luhn_ok",
            "number_key",
        ]
    )
