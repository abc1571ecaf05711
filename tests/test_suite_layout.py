"""The suite's own layout: what breaks collection on a clean clone, caught before CI does.

Test folders have no `__init__.py` (pytest's default "prepend" import mode), so every test module and conftest is
imported under its bare file name: two files of one name collide.
"""

from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def test_one_conftest_so_from_conftest_import_finds_it():
    conftests = sorted(str(p.relative_to(TESTS)) for p in TESTS.rglob("conftest.py"))
    assert conftests == ["conftest.py"]


def test_no_two_test_modules_share_a_name():
    names = Counter(p.name for p in TESTS.rglob("test_*.py"))
    assert [name for name, count in names.items() if count > 1] == []
