"""Project ids derived from display names: safe, readable and unique."""

from __future__ import annotations

import pytest

from graph_runtime.errors import UnsafePathError
from graph_runtime.takes import check_project_id, project_id_from_name


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("My Film", "my-film"),
        ("  My   Film!! ", "my-film"),
        ("Été à Noël", "ete-a-noel"),
        ("spot_01", "spot_01"),
        ("../../etc/passwd", "etc-passwd"),
        ("!!!", "project"),
        ("日本", "project"),
    ],
)
def test_names_become_safe_ids(name: str, expected: str) -> None:
    assert project_id_from_name(name) == expected


def test_taken_ids_get_the_next_free_number() -> None:
    taken = {"my-film", "my-film-2"}
    assert project_id_from_name("My Film", taken.__contains__) == "my-film-3"


def test_long_names_stay_valid_ids_with_their_suffix() -> None:
    name = "a" * 100
    first = project_id_from_name(name)
    second = project_id_from_name(name, {first}.__contains__)
    assert len(first) == 64 and len(second) == 64 and second.endswith("-2")
    assert check_project_id(second) == second
    with pytest.raises(UnsafePathError):
        check_project_id("a" * 65)
