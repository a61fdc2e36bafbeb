"""Figure 4 of the paper: valid weights of a 3x3 atrous filter vs. the atrous rate.

Sec. 3.3: "as the sampling rate becomes larger, the number of valid filter weights (i.e., the
weights that are applied to the valid feature region, instead of padded zeros) becomes smaller".
Figure 4 plots, for a 3x3 filter with "same" zero padding applied at every position of a 65x65
feature map, the fraction of positions at which exactly 1, 4 or 9 weights fall on the map. This
motivated ASPP's image-level features: at rate 64 the filter degenerates to a 1x1 filter.

``python -m deeplab.figures --figure=4`` prints the table and writes the plot.

Counting is exact and per axis: with "same" padding a tap at offset ``rate * t``
(t = -1, 0, 1) of position i lies on the map iff ``0 <= i + rate * t < size``, so the number of
valid taps along each axis is 1, 2 or 3 and the number of valid weights is the product of the
row and column counts. The 2-D histogram is therefore the product of two 1-D histograms, and
the possible counts are 1, 2, 3, 4, 6 and 9.
"""

import numpy as np

PLOTTED_COUNTS = (1, 4, 9)  # the curves the paper draws


def valid_taps_per_axis(feature_size, rate, kernel_size=3):
    """1-D histogram of valid taps: how many positions see exactly a valid taps, a = 0..K.

    Args:
      feature_size: number of positions along the axis.
      rate: atrous rate (spacing of the taps).
      kernel_size: odd number of taps K; "same" padding centres them on the position.

    Returns:
      int64 array [K + 1]; entry a counts the positions with a taps on the map.
    """
    if kernel_size % 2 != 1:
        raise ValueError(f"kernel_size must be odd for centred 'same' padding, got {kernel_size}")
    if feature_size < 1 or rate < 1:
        raise ValueError(f"need feature_size >= 1 and rate >= 1, got {feature_size}, {rate}")
    offsets = rate * (np.arange(kernel_size) - kernel_size // 2)
    taps = np.arange(feature_size)[:, None] + offsets[None, :]
    valid = ((taps >= 0) & (taps < feature_size)).sum(axis=1)
    return np.bincount(valid, minlength=kernel_size + 1).astype(np.int64)


def valid_weight_counts(feature_size=65, rates=range(1, 65), kernel_size=3):
    """Number of positions with exactly k valid weights, for every possible k and rate.

    Args:
      feature_size: side of the square feature map.
      rates: atrous rates.
      kernel_size: odd filter side K.

    Returns:
      dict k -> int64 array [len(rates)], for every k that is a product of two per-axis counts
      in 1..K (1, 2, 3, 4, 6, 9 for K = 3). For each rate the counts sum to feature_size ** 2.
    """
    rates = list(rates)
    possible = sorted({a * b for a in range(1, kernel_size + 1) for b in range(1, kernel_size + 1)})
    counts = {k: np.zeros(len(rates), np.int64) for k in possible}
    for index, rate in enumerate(rates):
        per_axis = valid_taps_per_axis(feature_size, rate, kernel_size)
        for rows in range(1, kernel_size + 1):
            for cols in range(1, kernel_size + 1):
                counts[rows * cols][index] += per_axis[rows] * per_axis[cols]
    return counts


def valid_weight_fractions(feature_size=65, rates=range(1, 65), kernel_size=3):
    """Figure 4's normalized counts: :func:`valid_weight_counts` / feature_size ** 2.

    Returns:
      dict k -> float64 array [len(rates)].
    """
    counts = valid_weight_counts(feature_size, rates, kernel_size)
    return {k: c / float(feature_size * feature_size) for k, c in counts.items()}


def format_table(fractions, rates):
    """One line per rate with the fraction of positions for each number of valid weights."""
    keys = sorted(fractions)
    lines = ["rate " + "".join(f"{f'{k} valid':>10}" for k in keys)]
    for index, rate in enumerate(rates):
        lines.append(f"{rate:>4} " + "".join(f"{fractions[k][index]:>10.4f}" for k in keys))
    return "\n".join(lines)


def plot_figure4(fractions, rates, output, feature_size=65):
    """Writes the Figure 4 curves (1, 4 and 9 valid weights vs. rate) to a PNG file."""
    # pylint: disable=import-outside-toplevel
    # pyplot is only needed to draw (it is slow to import), and only after the Agg backend
    # is chosen: the counting functions work without it.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # after the Agg backend is chosen (see above)

    figure, axes = plt.subplots(figsize=(6, 4))
    for k, marker in zip(PLOTTED_COUNTS, ("o", "s", "^")):
        label = f"{k} valid weight" + ("s" if k > 1 else "")
        axes.plot(list(rates), fractions[k], marker=marker, markersize=3, label=label)
    axes.set_xlabel("atrous rate")
    axes.set_ylabel("normalized count")
    axes.set_title(f"3x3 filter on a {feature_size}x{feature_size} feature map (Figure 4)")
    axes.set_ylim(0, 1)
    # Below the axes: inside, it would hide the 4-weight peak at rate 32 or the 1-weight rise.
    axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=3, frameon=False)
    figure.savefig(output, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)
