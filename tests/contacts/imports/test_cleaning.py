"""The column cleaner gives what the value cleaner gives, cell by cell, fast path or not."""

import random

import pytest
from django.core.exceptions import ValidationError
from django.core.validators import validate_email

from contacts.imports.cleaning import column_cleaner, value_cleaner
from contacts.imports.parsing import _EMAIL_FAST, IMPORT_FIELDS

CELLS = {
    "email": [
        "ann@example.com",
        "  Bob@Example.COM ",
        "",
        "   ",
        "not an email",
        "user@bücher.example",  # not the fast pattern: validate_email decides
        "a" * 250 + "@example.com",
        "carol@example.com",
    ],
    "first_name": ["Ann", "  Bob  ", "", "   ", "x" * 101, "Nul\x00l", "Zoë", "x" * 100],
    "lifecycle_stage": ["Lead", "lead", "Marketing Qualified Lead", "", "  ", "MQL?", "Customer"],
    "unsubscribed": ["yes", "No", "", "TRUE", "x", "maybe", " y "],
    "hubspot_record_id": ["0012", "", "abc", "7"],
    "hubspot_marketing": ["Marketing contact", "", "Non-marketing contact", "sometimes"],
    "hubspot_created_at": ["2024-03-01 10:00", "", "yesterday"],
}


def one_by_one(name, cells):
    values, errors = [], []
    clean = value_cleaner(IMPORT_FIELDS[name])
    for at, raw in enumerate(cells):
        value, message = clean(raw)
        values.append(value)
        if message is not None:
            errors.append((at, message))
    return values, errors


@pytest.mark.parametrize("name", sorted(CELLS))
def test_a_column_is_cleaned_as_its_cells_are(name):
    cells = CELLS[name]
    assert column_cleaner(IMPORT_FIELDS[name])(cells) == one_by_one(name, cells)


@pytest.mark.parametrize("name", ["email", "first_name", "lifecycle_stage"])
def test_a_column_without_a_bad_cell_is_cleaned_the_same(name):
    clean = value_cleaner(IMPORT_FIELDS[name])
    good = [raw for raw in CELLS[name] if clean(raw)[1] is None]
    values, errors = column_cleaner(IMPORT_FIELDS[name])(good)
    assert errors == []
    assert (values, errors) == one_by_one(name, good)


def test_a_choice_spelling_is_read_the_same_in_every_batch():
    column = column_cleaner(IMPORT_FIELDS["lifecycle_stage"])
    for _ in range(2):  # the first batch teaches the cleaner the spelling
        assert column(["Marketing Qualified Lead", "customer", "Bogus"]) == (
            ["mql", "customer", None],
            [(2, one_by_one("lifecycle_stage", ["Bogus"])[1][0][1])],
        )


ALPHABET = ["a", "B", "z", "0", ".", "@", "-", "_", " ", "\t", "\u00a0", "\u2003", "\x1c"]
ALPHABET += ["\x01", "\x1f", "\x00", "İ", "Σ", "é", "\n", "x" * 120]


GOOD = {
    "email": ["ann@example.com", "Carol@Example.ORG", "d.e-f_g@sub.example.co"],
    "first_name": ["Ann", "Zoë", "O'Neil", "Mary Ann"],
    "phone": ["+1 555 0100", "020 7946 0018"],
}


@pytest.mark.parametrize("name", sorted(GOOD))
def test_random_columns_are_cleaned_as_their_cells_are(name):
    rng = random.Random(20261206)
    for _ in range(500):
        cells = [
            "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 6)))
            if rng.random() < 0.1
            else rng.choice(GOOD[name])
            for _ in range(rng.randint(1, 8))
        ]
        assert column_cleaner(IMPORT_FIELDS[name])(cells) == one_by_one(name, cells), cells


@pytest.mark.parametrize(
    "name, cells",
    [
        ("email", ["ann@example.com", "b" * 250 + "@example.com"]),  # well formed, too long
        ("email", ["ann@example.com", "bob@example.com\x01carol@example.com"]),
        # Joined a value a line, this one would read as two good addresses.
        ("email", ["ann@example.com", "bob@example.com\ncarol@example.com"]),
        ("email", ["ann@example.com", "bob@example.com\r\ncarol@example.com", "dan@x.io"]),
        ("first_name", ["Ann", "x" * 101]),
        ("first_name", ["Ann", "Bob\x00"]),
        ("first_name", ["Ann", "Bob "]),
        ("first_name", ["Ann", "\u2003Bob"]),
        ("first_name", ["Ann", ""]),
    ],
)
def test_a_cell_that_only_looks_clean_in_the_joined_column_is_caught(name, cells):
    assert column_cleaner(IMPORT_FIELDS[name])(cells) == one_by_one(name, cells)


def _valid(address: str) -> bool:
    try:
        validate_email(address)
    except ValidationError:
        return False
    return True


LABEL = "b" * 63


@pytest.mark.parametrize(
    "address",
    [
        f"a@{LABEL}.com",
        f"a@{LABEL}b.com",
        f"a@example.{'c' * 63}",
        f"a@example.{'c' * 64}",
        "a@-b.com",
        "a@b-.com",
        "a@b--c.com",
        "a@b.co-",
        "a@b.c",
        "a@b.c.d",
        "a..b@c.com",
        "a.@c.com",
        ".a@c.com",
        "a@b..com",
        "a@b.com.",
        "a@@b.com",
        "a-b_c@d-e.f-g.hi",
        "a@b.c0m",
        "a@b.-ab",
        "a@b.ab-",
        "a@b.a-b",
        "a@b.xn--p1ai",
        "a@b.xn--",
        "a@b.xn--p1ai-",
        f"a@b.xn--{'a' * 59}",
        f"a@b.xn--{'a' * 60}",
    ],
)
def test_the_fast_email_pattern_takes_an_edge_address_as_the_validator_does(address):
    assert bool(_EMAIL_FAST.fullmatch(address)) == _valid(address)


def test_the_fast_email_pattern_takes_the_addresses_the_validator_takes():
    """Over short strings of the characters that decide a plain address (the pattern is
    written possessively, and must match exactly what Django's validator matches)."""
    rng = random.Random(20261206)
    for _ in range(20_000):
        address = "".join(rng.choice("ab0-._@xn") for _ in range(rng.randint(3, 12)))
        assert bool(_EMAIL_FAST.fullmatch(address)) == _valid(address), address
