"""IBANs (issue 15, item 20): masked in any case, with any separators, glued to other
characters, in every field and object key; a look-alike failing mod-97 is left alone."""

from __future__ import annotations

import json
import textwrap
import time

import pytest

from ringfence.events import validate_event
from ringfence.events.iban import iban_valid, mask_ibans
from ringfence.events.pan import is_card_number, looks_like_pan
from ringfence.events.sensitive import mask_strings
from ringfence.testing import event

GB = "GB82WEST12345698765432"
MASKED_GB = "GB****************5432"


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        (GB, MASKED_GB),
        (GB.lower(), "gb****************5432"),
        ("GB82 WEST 1234 5698 7654 32", MASKED_GB),
        ("GB82  WEST  1234  5698  7654  32", MASKED_GB),  # double spaces
        ("GB82-WEST-1234-5698-7654-32", MASKED_GB),
        ("GB82\u00a0WEST\u00a01234\u00a05698\u00a07654\u00a032", MASKED_GB),
        ("GB82\u2013WEST\u20131234\u20135698\u20137654\u201332", MASKED_GB),  # en dashes
        (f"acct_{GB}_x", f"acct_{MASKED_GB}_x"),
        (f"payto{GB}now", f"payto{MASKED_GB}now"),
        (f"to {GB}, then DE89 3704 0044 0532 0130 00.", f"to {MASKED_GB}, then DE****************3000."),
        ("FR1420041010050500013M02606", "FR*********************2606"),
        ("NO9386011117947", "NO*********7947"),  # the shortest
        ("GB82.WEST.1234.5698.7654.32", MASKED_GB),  # dots
        ("".join(chr(ord(ch) + 0xFEE0) for ch in GB), MASKED_GB),  # full-width letters and digits
        ("\uff47\uff42" + GB[2:].lower(), "gb****************5432"),  # full-width, lowercase
        ("to \uff27\uff22\uff18\uff12\u3000WEST 1234 5698 7654 32 \u2714", f"to {MASKED_GB} \u2714"),
    ],
)
def test_ibans_are_masked_in_every_form(text: str, masked: str) -> None:
    assert mask_ibans(text) == masked


@pytest.mark.parametrize(
    "text",
    [
        "GB82WEST12345698765433",  # the check digits do not match
        "GB82WEST1234569876543",  # one character short for GB
        "ZZ82WEST12345698765432",  # no such country
        "AB12CDEF34567890",  # a product code
        "cus_AB12_1234567890123",
    ],
)
def test_look_alikes_are_left_alone(text: str) -> None:
    assert mask_ibans(text) == text


def test_the_check_is_iso_13616_mod_97() -> None:
    assert iban_valid(GB)
    assert iban_valid(GB.lower())
    assert not iban_valid(GB[:-1] + "3")


def test_object_keys_are_masked_too() -> None:
    assert mask_strings({GB.lower(): {"note": f"x-{GB}"}}) == {"gb****************5432": {"note": f"x-{MASKED_GB}"}}


def test_ibans_in_envelope_ids_and_data_are_masked_before_storage() -> None:
    raw = event(
        "transfer.initiated",
        customer_id=f"cust-{GB.lower()}",
        event_id=f"evt_{GB}",
        channel="GB82 WEST 1234 5698 7654 32",
    )
    raw["account_id"] = "gb82-west-1234-5698-7654-32"
    ev = validate_event(json.dumps(raw).encode(), time.time())
    stored = json.dumps([ev.event_id, ev.customer_id, ev.account_id, ev.data])
    assert "12345698765432" not in stored
    assert ev.event_id == f"evt_{MASKED_GB}"
    assert ev.customer_id == "cust-gb****************5432"
    assert ev.account_id == "gb****************5432"
    assert ev.data["channel"] == MASKED_GB


def iban(country: str, bban: str) -> str:
    """The IBAN of ``bban`` in ``country``, with its check digits."""
    number = int("".join(str(int(ch, 36)) for ch in bban + country + "00"))
    return f"{country}{98 - number % 97:02d}{bban}"


def test_a_spaced_iban_is_masked_not_rejected_as_a_card_number() -> None:
    bban = next(b for n in range(1000) if is_card_number((b := f"5001051706484{n:03d}00")[:16]))
    spaced = " ".join(textwrap.wrap(iban("DE", bban), 4))  # "DE.. 5001 0517 0648 4..." holds a 4-4-4-4 card
    assert looks_like_pan(spaced.split(" ", 1)[1])
    ev = validate_event(json.dumps(event("transfer.initiated", channel=spaced)).encode(), time.time())
    assert ev.data["channel"] == mask_ibans(iban("DE", bban))


# A real IBAN (DE89 3704 0044 0532 0130 00) spelt by an identifier's hex digits, and random
# UUIDs whose digits happen to pass an IBAN's check (about one in 760 does)
DE = "DE89370400440532013000"


@pytest.mark.parametrize(
    "identifier",
    [
        "de893704-0044-0532-0130-00aabbccddee",
        "2be893f4-56b3-4574-9617-2adf654d479a",
        "721AC1AD-09E7-4660-A888-44B63605C5CD",
        "{65e92f10-6de6-4910-ac83-870407bbf495}",
        "urn:uuid:65e92f10-6de6-4910-ac83-870407bbf495",
        "ab" + DE + "0" * 40,  # a SHA-256 in hex
        "0x" + DE + "f" * 10,  # an MD5, 0x and all
    ],
)
def test_an_identifier_by_shape_is_no_iban_and_an_event_keeps_it_as_sent(identifier: str) -> None:
    assert mask_ibans(identifier) == identifier
    assert mask_strings({"ref": identifier}) == {"ref": identifier}
    stored = validate_event(json.dumps(event(event_id=identifier)).encode(), time.time())
    assert stored.event_id == identifier


def test_an_iban_beside_an_identifier_or_in_text_shaped_almost_like_one_is_still_masked() -> None:
    uuid = "2be893f4-56b3-4574-9617-2adf654d479a"
    assert mask_ibans(f"{uuid} {GB}") == f"{uuid} {MASKED_GB}"
    assert mask_ibans(f"{GB}/{uuid}") == f"{MASKED_GB}/{uuid}"
    # glued to a letter, or a hex run of no standard length, it is text, and scanned as text
    # (a Belgian account number has digits only: its hex letters make this no IBAN; an IBAN of a
    # country with letters, glued the same way, is masked)
    assert mask_ibans("x" + uuid) == "x" + uuid
    assert mask_ibans("x" + GB + uuid) == "x" + MASKED_GB + uuid
    assert mask_ibans("ab" + DE + "0" * 39) != "ab" + DE + "0" * 39
    assert mask_ibans("de893704-0044-0532-0130-00aabbccdde") != "de893704-0044-0532-0130-00aabbccdde"


@pytest.mark.parametrize(
    "text",
    [
        "\uff33\uff25" + "4550000000058398257466" + "0" * 10,  # full-width SE glued to 32 digits
        "\u0405\u0415" + "4550000000058398257466" + "0" * 10,  # Cyrillic look-alikes of SE
        "\uff32\uff35" + "0204452560040702810412345678901a",  # full-width RU
        "SE4550000000058398257466" + "0" * 10,
    ],
)
def test_a_run_glued_to_a_letter_as_the_search_reads_it_is_no_identifier(text: str) -> None:
    """An identifier must stand apart in the reading too, not only in the text as sent: a
    look-alike or full-width letter before a run of hex digits makes it text, and its IBAN is masked."""
    masked = mask_ibans(text)
    assert masked != text
    assert "*" * 10 in masked
