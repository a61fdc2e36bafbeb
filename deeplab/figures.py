"""Reproduces Figure 4 of the paper: valid weights of a 3x3 atrous filter vs. the atrous rate.

Sec. 3.3: "as the sampling rate becomes larger, the number of valid filter weights (i.e., the
weights that are applied to the valid feature region, instead of padded zeros) becomes smaller".
Figure 4 plots, for a 3x3 filter with "same" zero padding applied at every position of a 65x65
feature map, the fraction of positions at which exactly 1, 4 or 9 weights fall on the map. This
motivated ASPP's image-level features: at rate 64 the filter degenerates to a 1x1 filter.

    python -m deeplab.figures --figure=4 --output=fig4.png

Counting is exact and per axis: with "same" padding a tap at offset ``rate * t``
(t = -1, 0, 1) of position i lies on the map iff ``0 <= i + rate * t < size``, so the number of
valid taps along each axis is 1, 2 or 3 and the number of valid weights is the product of the
row and column counts. The 2-D histogram is therefore the product of two 1-D histograms, and
the possible counts are 1, 2, 3, 4, 6 and 9. The counting and the plot are in
:mod:`deeplab.evaluation.figures`.
"""

from absl import flags

from deeplab import _console
from deeplab.common.errors import ConfigError
from deeplab.common.errors import UserError
from deeplab.evaluation import figures

FLAGS = flags.FLAGS
flags.DEFINE_integer("figure", None, "Which figure of the paper to reproduce (only 4).")
flags.DEFINE_string("output", "fig4.png", "Where to write the plot (PNG).")
flags.DEFINE_integer("feature_size", 65, "Side of the square feature map (65 in the paper).")
flags.DEFINE_integer("max_rate", 64, "Largest atrous rate to plot (rates 1..max_rate).")


def main(args):
    del args
    if FLAGS.figure != 4:
        raise ConfigError(
            f"--figure={FLAGS.figure}: only Figure 4 can be reproduced; pass --figure=4"
        )
    if FLAGS.feature_size < 1 or FLAGS.max_rate < 1:
        raise ConfigError("--feature_size and --max_rate must be >= 1")
    rates = range(1, FLAGS.max_rate + 1)
    fractions = figures.valid_weight_fractions(FLAGS.feature_size, rates)
    print(figures.format_table(fractions, rates))
    try:
        figures.plot_figure4(fractions, rates, FLAGS.output, FLAGS.feature_size)
    except OSError as error:
        raise UserError(f"--output={FLAGS.output}: cannot write the plot ({error})") from error
    print(f"wrote {FLAGS.output}")


if __name__ == "__main__":
    _console.run(main, tensorflow=False)
