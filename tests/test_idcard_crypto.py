"""ID-card numbers and personal-data encryption."""

from datetime import date

import pytest
from cryptography.exceptions import InvalidTag

from wxbackend.errors import InvalidInput
from wxbackend.fieldcrypto import FieldCipher, mask_id_card, mask_phone
from wxbackend.idcard import check_digit, make_id_card, parse_id_card

TODAY = date(2026, 12, 3)


def test_published_example_number_is_valid():
    # The example of GB 11643-1999: check digit X.
    card = parse_id_card("11010519491231002x", today=TODAY)
    assert card.number == "11010519491231002X"
    assert card.birth_date == date(1949, 12, 31)
    assert card.gender == "女"


@pytest.mark.parametrize("raw, code", [
    ("11010519491231002", "id_card_format"),
    ("1101051949123100211", "id_card_format"),
    ("11010519491231002A", "id_card_format"),
    ("110105194913310021", "id_card_birth_date"),
    ("110105219912310021", "id_card_birth_date"),
    ("110105194912310021", "id_card_check_digit"),
])
def test_invalid_numbers_are_refused_with_a_reason(raw, code):
    with pytest.raises(InvalidInput) as caught:
        parse_id_card(raw, today=TODAY)
    assert caught.value.code == code


def test_generated_numbers_round_trip():
    for i, gender in enumerate(["男", "女"] * 50):
        number = make_id_card("350203", date(1970 + i % 30, 1 + i % 12, 1 + i % 28), i, gender)
        card = parse_id_card(number, today=TODAY)
        assert card.gender == gender
        assert number[-1] == check_digit(number[:17])


def test_cipher_round_trip_and_purpose_binding():
    cipher = FieldCipher(b"k" * 32)
    token = cipher.encrypt("350203198503140011", purpose="id_card")
    assert b"350203" not in bytes(token)
    assert cipher.decrypt(token, purpose="id_card") == "350203198503140011"
    with pytest.raises(InvalidTag):
        cipher.decrypt(token, purpose="phone")
    assert cipher.encrypt("x", purpose="id_card") != cipher.encrypt("x", purpose="id_card")


def test_blind_index_is_stable_keyed_and_purpose_specific():
    a, b = FieldCipher(b"a" * 32), FieldCipher(b"b" * 32)
    assert a.blind_index("13812345678", "phone") == a.blind_index("13812345678", "phone")
    assert a.blind_index("13812345678", "phone") != b.blind_index("13812345678", "phone")
    assert a.blind_index("13812345678", "phone") != a.blind_index("13812345678", "id_card")


def test_masks():
    assert mask_id_card("350203198503140011") == "3502**********0011"
    assert mask_phone("13812345678") == "*******5678"
