"""Formatter rules against hand-checked outputs, Japanese full/half-width text included."""

import pytest

from flowline.nodes import formatter


@pytest.mark.parametrize(
    "rule, text, expected",
    [
        ("uppercase", "Hello, World ß", "HELLO, WORLD SS"),
        ("lowercase", "Hello, ÀÉ", "hello, àé"),
        ("strip", " \t\n hi there \n", "hi there"),
        ("collapse_whitespace", "a  b\t\tc\n\nd", "a b c d"),
        # Full-width ASCII and the ideographic space become ASCII; kana and kanji are untouched.
        ("full_to_half", "ＡＢＣ　１２３！？", "ABC 123!?"),
        ("full_to_half", "東京タワー　ﾃｽﾄ", "東京タワー ﾃｽﾄ"),
        ("full_to_half", "￥１００", "￥100"),  # U+FFE5 is outside U+FF01-U+FF5E: nothing else changes
        # The exact inverse: ASCII (and space) becomes full-width, nothing else.
        ("half_to_full", "ABC 123!?", "ＡＢＣ　１２３！？"),
        ("half_to_full", "ﾃｽﾄ abc", "ﾃｽﾄ　ａｂｃ"),
        # Width forms only: half-width katakana become full-width with voiced marks composed, full-width ASCII
        # becomes ASCII, while ①, ™ and ½ (which plain NFKC would rewrite) stay.
        ("normalize_width", "ｶﾞｷﾞ ﾊﾟﾝ", "ガギ パン"),
        ("normalize_width", "ＡＢＣ１２３　ﾃｽﾄ", "ABC123 テスト"),
        ("normalize_width", "① ™ ½ ＄", "① ™ ½ $"),
        ("normalize_width", "￣", "￣"),
        ("nfkc", "① ™ ½ ｶﾞ ＡＢ", "1 TM 1⁄2 ガ AB"),
    ],
)
def test_rule_output_is_as_hand_checked(rule, text, expected):
    assert formatter.apply([rule], text) == expected


def test_half_to_full_undoes_full_to_half_on_ascii():
    ascii_text = "".join(chr(c) for c in range(0x20, 0x7F))
    assert formatter.apply(["half_to_full", "full_to_half"], ascii_text) == ascii_text


def test_rules_apply_in_the_order_given():
    assert formatter.apply(["strip", "collapse_whitespace", "uppercase"], "  ａ  b  ") == "Ａ B"
    assert formatter.apply(["full_to_half", "uppercase"], "ａｂｃ") == "ABC"
    assert formatter.apply(["uppercase", "full_to_half"], "ａｂｃ") == "ABC"
    assert formatter.apply(["half_to_full", "lowercase"], "AB") == "ａｂ"


def test_no_rules_pass_text_through():
    assert formatter.apply([], "  Mixed ﾃｽﾄ  ") == "  Mixed ﾃｽﾄ  "
