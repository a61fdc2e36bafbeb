"""deeplab.evaluation.figures (Figure 4; python -m deeplab.figures): brute force over every
position and tap, hand values."""

import numpy as np
import pytest

import harness
from deeplab.evaluation import figures


def _brute_force(size, rate):
    """Histogram of valid weights of a 3x3 filter with rate ``rate``, every position and tap."""
    histogram = {}
    for row in range(size):
        for col in range(size):
            valid = 0
            for dr in (-rate, 0, rate):
                for dc in (-rate, 0, rate):
                    if 0 <= row + dr < size and 0 <= col + dc < size:
                        valid += 1
            histogram[valid] = histogram.get(valid, 0) + 1
    return histogram


@pytest.mark.parametrize("rate", [1, 12, 24, 32, 64])
def test_matches_brute_force(rate):
    counts = figures.valid_weight_counts(65, [rate])
    fractions = figures.valid_weight_fractions(65, [rate])
    assert sorted(counts) == [1, 2, 3, 4, 6, 9]
    expected = _brute_force(65, rate)
    for k in counts:
        assert counts[k][0] == expected.get(k, 0), k
        assert fractions[k][0] == pytest.approx(expected.get(k, 0) / 65**2, abs=1e-15)
    assert set(expected) <= set(counts)


def test_hand_derived_values():
    fractions = figures.valid_weight_fractions(65, [1, 32, 64])
    # Rate 1: the 63 x 63 interior has all 9 weights, the 4 corners 4, the edges 6.
    assert fractions[9][0] == pytest.approx(63 * 63 / 4225)
    assert fractions[6][0] == pytest.approx(4 * 63 / 4225)
    assert fractions[4][0] == pytest.approx(4 / 4225)
    # Rate 32: only the centre reaches both borders (row 32 +- 32 = 0, 64).
    assert fractions[9][1] == pytest.approx(1 / 4225)
    assert fractions[4][1] == pytest.approx(64 * 64 / 4225)
    # Rate 64: the filter degenerates to its centre everywhere but on the border rows/columns.
    assert fractions[1][2] == pytest.approx(63 * 63 / 4225)
    assert fractions[4][2] == pytest.approx(4 / 4225)


def test_full_sweep_sums_to_one_and_reaches_one_weight():
    fractions = figures.valid_weight_fractions()
    total = sum(fractions.values())
    np.testing.assert_allclose(total, 1.0, rtol=1e-12)
    assert fractions[9][0] > 0.9 and fractions[1][-1] > 0.9
    # 9 valid weights only while the rate is at most half the map (2 * 32 <= 64).
    assert fractions[9][31] > 0 and np.all(fractions[9][32:] == 0)


@pytest.mark.slow
def test_binary_writes_png_and_table(tmp_path):
    output = tmp_path / "fig4.png"
    env = {"MPLBACKEND": "Agg"}
    result = harness.run(
        "deeplab.figures", "--figure=4", f"--output={output}", env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert output.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert output.stat().st_size > 5000
    lines = result.stdout.splitlines()
    assert lines[0].split() == [
        "rate",
        "1",
        "valid",
        "2",
        "valid",
        "3",
        "valid",
        "4",
        "valid",
        "6",
        "valid",
        "9",
        "valid",
    ]
    row_64 = [float(v) for v in lines[64].split()]
    assert row_64[0] == 64 and row_64[1] == pytest.approx(63 * 63 / 4225, abs=1e-4)

    bad = harness.run("deeplab.figures", "--figure=3", env=env, timeout=120)
    assert bad.returncode == 2 and "deeplab.figures: error: --figure=3" in bad.stderr  # usage
