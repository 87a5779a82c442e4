"""The phone inventory of the embedded corpus."""

from __future__ import annotations

from ssl_speech.data.synthetic import PHONES


def test_inventory_has_the_required_classes() -> None:
    from ssl_speech.data.synthetic.inventory import INVENTORY

    assert len(PHONES) >= 30 and PHONES[0] == "sil" and len(set(PHONES)) == len(PHONES)
    kinds = {p.kind for p in INVENTORY}
    assert {"vowel", "diphthong", "nasal", "fricative", "stop", "approximant"} <= kinds
    assert all(p.offglide is not None for p in INVENTORY if p.kind == "diphthong")
    fricatives = [p for p in INVENTORY if p.kind == "fricative"]
    stops = [p for p in INVENTORY if p.kind == "stop"]
    for group in (fricatives, stops):
        assert {p.voiced for p in group} == {True, False}
    assert len({p.place for p in stops}) >= 3
