"""A rule pack is stored and shown to every ``rules:read`` key: no card number, NUL or lone
surrogate may sit in any of its keys, values or comments (issue 16, item 2)."""

from __future__ import annotations

import pytest

from ringfence.engine import default_pack_text
from ringfence.engine.pack import load_pack, load_pack_file
from ringfence.errors import RulePackError


def test_the_packaged_default_pack_still_loads() -> None:
    assert load_pack_file(None).detection_ids


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        ('version: "1"\ndescription: "a\\0b"\n', "description", "U+0000"),
        ('version: "1"\nlists:\n  "a\\0b": [x]\n', "lists.a\x00b", "U+0000"),
        ('version: "1"\nlists:\n  x: [4111111111111111]\n', "lists.x[0]", "card number"),
        ('version: "1"\nlists:\n  x: ["4111 1111 1111 1111"]\n', "lists.x[0]", "card number"),
        ('version: "1"  # 4111-1111-1111-1111\n', "line 1", "card number"),
    ],
)
def test_a_sensitive_scalar_or_comment_is_refused_naming_where(text: str, where: str, message: str) -> None:
    with pytest.raises(RulePackError) as raised:
        load_pack(text)
    assert raised.value.where == where
    assert message in str(raised.value)


def test_a_lone_surrogate_is_refused() -> None:
    with pytest.raises(RulePackError):
        load_pack('version: "1"\ndescription: "a\\ud800b"\n')


def test_card_like_digits_split_over_list_values_are_not_a_card() -> None:
    """Merchant category codes side by side are four codes, not one number."""
    mccs = '  mccs: ["5411", "5812", "5814", "5999", "4111", "1111"]\n'
    text = default_pack_text().replace("\nlists:\n", "\nlists:\n" + mccs, 1)
    assert "mccs" in load_pack(text).lists


def test_the_error_never_holds_the_card_number_even_in_a_key_or_a_yaml_error() -> None:
    for text in ('version: "1"\nlists:\n  x4111111111111111: [a]\n', "version: [4111111111111111\n"):
        with pytest.raises(RulePackError) as raised:
            load_pack(text)
        assert "4111" not in str(raised.value)
        assert "4111" not in raised.value.where


def test_a_pack_read_back_from_the_store_is_not_refused_again() -> None:
    # stored before the check existed: a restart must not stop on it (it is replaced by a PUT)
    text = default_pack_text().replace("description: ", "description: card 4111 1111 1111 1111 ", 1)
    with pytest.raises(RulePackError):
        load_pack(text)
    assert load_pack(text, stored=True).version
