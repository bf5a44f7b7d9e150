"""Figures more than one notebook draws."""

from __future__ import annotations


def drift_bars(frame, hue: str, sqnr: tuple[str, str], clipped: tuple[str, str], legend_title: str, title: str):
    """Two bar panels over the drift scenarios of ``frame`` (a pandas DataFrame with a
    ``scenario`` column): z SQNR and clipped fraction, bars split by ``hue``. ``sqnr`` and
    ``clipped`` are ``(column, panel title)``; the one legend sits outside, right. Returns
    the figure."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), layout="constrained")
    for ax, (column, label), unit, legend in zip(axes, (sqnr, clipped), ("z SQNR (dB)", "fraction of elements"),
                                                 (False, True)):
        sns.barplot(frame, x="scenario", y=column, hue=hue, ax=ax, legend=legend)
        ax.set(xlabel="drift scenario", ylabel=unit, title=label)
        ax.tick_params(axis="x", rotation=30)
        for tick in ax.get_xticklabels():
            tick.set_horizontalalignment("right")
    sns.move_legend(axes[1], "upper left", bbox_to_anchor=(1.01, 1), title=legend_title)
    fig.suptitle(title)
    return fig
