"""The precision comparison's verdict on two settings' seeds: difference, standard error, exact permutation test."""

import sys

from conftest import REPO

sys.path.insert(0, str(REPO / "scripts"))
from compare_precision import seed_difference  # noqa: E402


def test_separated_seeds_get_the_smallest_p_their_count_allows():
    # 3 + 3 seeds split 20 ways; only the split as labelled and its mirror are as far apart: p = 2 / 20
    line = seed_difference(("fp32", [1.0, 2.0, 3.0]), ("bf16", [4.0, 5.0, 6.0]))
    assert "bf16 - fp32 = +3.0000 ± 0.8165" in line and "p = 0.100 (20 splits)" in line


def test_interleaved_seeds_are_within_noise():
    line = seed_difference(("fp32", [1.0, 4.0, 5.0]), ("bf16", [2.0, 3.0, 6.0]))
    assert "bf16 - fp32 = +0.3333" in line and "p = 1.000" in line
