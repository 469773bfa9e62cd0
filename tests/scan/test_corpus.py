"""Precision and recall of ``scan_content`` over the labelled corpus in tests/corpus/scan/.

Three categories, each scored over the whole corpus:

- **injection**, per item: the scan must mark some span as injected exactly when the
  item is labelled ``injected``. A flagged item whose spans miss its ``span`` text, or
  touch its ``outside`` text, counts as a false positive *and* a false negative (the
  right text was not marked, other text was).
- **secret**, per item: some secret found exactly when the item is labelled ``secret``.
- **pii**, per (item, kind): each of email, phone, card, iban found exactly when listed.

The floors are what docs/scanners.md states, a little under the measured figures so
that adding a hard item does not fail the build, and high enough that a regression in
one rule does. Run this file directly to print the table and every miss::

    .venv/bin/python tests/scan/test_corpus.py
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from warden.scan import PII_KINDS, ContentScan, scan_content

CORPUS = Path(__file__).parents[1] / "corpus" / "scan"
DOMAINS = ("mail", "chat", "web", "file", "calendar", "travel", "code", "ticket")
FLOORS = {
    "injection": (0.95, 0.90),
    "secret": (0.95, 0.95),
    "pii": (0.95, 0.95),
}
"""Category: (precision floor, recall floor)."""


def expand(text: str) -> str:
    """Apply the corpus markers (tests/corpus/scan/README.md)."""
    text = text.replace("«»", "").replace("«ZW»", "\u200b")
    text = re.sub(
        r"«TAGS:(.*?)»", lambda m: "".join(chr(0xE0000 + ord(c)) for c in m.group(1)), text
    )
    text = re.sub(r"«VS:(.*?)»", lambda m: _selectors(m.group(1).encode()), text)
    return re.sub(r"«B64:(.*?)»", lambda m: base64.b64encode(m.group(1).encode()).decode(), text)


def _selectors(data: bytes) -> str:
    return "".join(chr(0xFE00 + b) if b < 16 else chr(0xE0100 + b - 16) for b in data)


def load() -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for path in sorted(CORPUS.glob("*.yaml")):
        for item in yaml.safe_load(path.read_text(encoding="utf-8"))["items"]:
            item["text"] = expand(item["text"])
            item["file"] = path.name
            items.append(item)
    return items


ITEMS = load()


@dataclass
class Score:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    misses: list[str] = field(default_factory=list)

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0


def _covers(scan: ContentScan, needle: str) -> bool:
    i = scan.text.find(needle)
    assert i >= 0, f"`{needle}` is not in the text"
    return any(s <= i and i + len(needle) <= e for s, e in scan.injected)


def _touches(scan: ContentScan, needle: str) -> bool:
    i = scan.text.find(needle)
    assert i >= 0, f"`{needle}` is not in the text"
    return any(s < i + len(needle) and i < e for s, e in scan.injected)


def score(items: list[Mapping[str, Any]]) -> dict[str, Score]:
    scores = {k: Score() for k in FLOORS}
    for item in items:
        scan = scan_content(item["text"])
        want = item["expect"]
        inj = scores["injection"]
        got = bool(scan.injected)
        if got and want["injected"]:
            wrong = ("span" in item and not _covers(scan, item["span"])) or (
                "outside" in item and _touches(scan, item["outside"])
            )
            if wrong:
                inj.fp += 1
                inj.fn += 1
                inj.misses.append(f"{item['id']}: injected span wrong {list(scan.injected)}")
            else:
                inj.tp += 1
        elif got:
            inj.fp += 1
            inj.misses.append(f"{item['id']}: false positive {_rules(scan)}")
        elif want["injected"]:
            inj.fn += 1
            inj.misses.append(f"{item['id']}: missed")
        sec = scores["secret"]
        got = bool(scan.secrets)
        if got and want["secret"]:
            sec.tp += 1
        elif got:
            sec.fp += 1
            sec.misses.append(f"{item['id']}: false positive {[r for _, _, r in scan.secrets]}")
        elif want["secret"]:
            sec.fn += 1
            sec.misses.append(f"{item['id']}: missed")
        pii = scores["pii"]
        found = {i.kind for i in scan.pii}
        expected = set(want["pii"])
        pii.tp += len(found & expected)
        pii.fp += len(found - expected)
        pii.fn += len(expected - found)
        if found != expected:
            pii.misses.append(
                f"{item['id']}: extra {sorted(found - expected)}, missed {sorted(expected - found)}"
            )
    return scores


def _rules(scan: ContentScan) -> list[str]:
    return sorted({f.message.rsplit("(", 1)[-1].rstrip(")") for f in scan.findings})


SCORES = score(ITEMS)
HELDOUT = [i for i in ITEMS if i["file"] == "heldout.yaml"]


# --------------------------------------------------------------------------- the corpus itself


def test_corpus_is_well_formed() -> None:
    ids = [i["id"] for i in ITEMS]
    assert len(ids) == len(set(ids)), "duplicate ids"
    assert len(ITEMS) >= 150
    for item in ITEMS:
        assert item["domain"] in DOMAINS, item["id"]
        assert set(item["expect"]) == {"injected", "secret", "pii"}, item["id"]
        assert set(item["expect"]["pii"]) <= PII_KINDS, item["id"]
        assert item.get("note"), item["id"]


def test_corpus_covers_every_domain_both_ways() -> None:
    for domain in DOMAINS:
        labels = {i["expect"]["injected"] for i in ITEMS if i["domain"] == domain}
        assert labels == {True, False}, domain


# --------------------------------------------------------------------------- the figures


@pytest.mark.parametrize("category", sorted(FLOORS))
def test_precision_and_recall_floors(category: str, record_property: Any) -> None:
    s = SCORES[category]
    floor_p, floor_r = FLOORS[category]
    record_property(f"{category}_precision", round(s.precision, 3))
    record_property(f"{category}_recall", round(s.recall, 3))
    detail = "\n".join(s.misses)
    assert s.precision >= floor_p, f"{category} precision {s.precision:.3f}\n{detail}"
    assert s.recall >= floor_r, f"{category} recall {s.recall:.3f}\n{detail}"


def table(scores: Mapping[str, Score]) -> list[str]:
    lines = ["| category | precision | recall | TP | FP | FN |", "|---|---:|---:|---:|---:|---:|"]
    for name, s in scores.items():
        lines.append(f"| {name} | {s.precision:.3f} | {s.recall:.3f} | {s.tp} | {s.fp} | {s.fn} |")
    return lines


if __name__ == "__main__":
    injected = sum(1 for i in ITEMS if i["expect"]["injected"])
    print(f"{len(ITEMS)} items, {injected} injected, {len(ITEMS) - injected} not")
    for domain in DOMAINS:
        n = [i for i in ITEMS if i["domain"] == domain]
        k = sum(1 for i in n if i["expect"]["injected"])
        print(f"  {domain}: {len(n)} ({k} injected)")
    print("all items:")
    print("\n".join(table(SCORES)))
    development = [i for i in ITEMS if i["file"] != "heldout.yaml"]
    print(f"development ({len(development)} items):")
    print("\n".join(table(score(development))))
    print(f"held out ({len(HELDOUT)} items):")
    print("\n".join(table(score(HELDOUT))))
    for name, s in SCORES.items():
        for miss in s.misses:
            print(f"{name}: {miss}")
