"""The ``--plot`` chart: per case, fastbn's speedups and its distance to the memory floor.

Left panel: how many times faster fastbn is than NumPy and than PyTorch (log
scale, 1 = as fast).  Right panel: fastbn's time over a parallel copy of the
same array (1 = the memory floor).  Needs matplotlib (the ``bench`` extra); it
draws on a bare ``Figure``, so no pyplot backend or global state is touched.
"""

_TICKS = tuple(m * 10.0 ** e for e in range(-3, 4) for m in (1, 2, 5))
_COLORS = {"numpy": "#4c72b0", "torch": "#dd8452", "copy": "#55a868"}


class PlotUnavailable(RuntimeError):
    """matplotlib is not installed."""


def require_matplotlib():
    """The matplotlib Figure class (raises PlotUnavailable without matplotlib)."""
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise PlotUnavailable(
            "--plot needs matplotlib, which is not installed; install it with "
            "pip install 'fastbn[bench]' (or pip install matplotlib)") from exc
    return Figure


def _bars(ax, y, values, color, label):
    """Horizontal bars at ``y`` with their values written after them (None: no bar)."""
    ys = [yy for yy, v in zip(y, values) if v is not None]
    vs = [v for v in values if v is not None]
    ax.barh(ys, vs, height=0.38, color=color, label=label)
    for yy, v in zip(ys, vs):
        ax.annotate(f"{v:.3g}x", (v, yy), xytext=(3, 0), textcoords="offset points",
                    va="center", fontsize=8)


def plot(result, path):
    """Write the chart of ``result`` (from ``runner.run``) as a PNG at ``path``.

    Raises
    ------
    PlotUnavailable
        If matplotlib is not installed.
    """
    figure = require_matplotlib()
    rows = [r for r in result["cases"] if "fastbn" in r["median_s"]] + result["combined"]
    labels = [f"{r['op']}\n{r['label']}" for r in rows]
    fig = figure(figsize=(12, 1.2 + 0.55 * max(len(rows), 1)), layout="constrained")
    speed, floor = fig.subplots(1, 2, sharey=True, width_ratios=(3, 2))
    y = list(range(len(rows)))
    _bars(speed, [v - 0.2 for v in y], [r["speedup"].get("numpy") for r in rows],
          _COLORS["numpy"], "vs NumPy")
    _bars(speed, [v + 0.2 for v in y], [r["speedup"].get("torch") for r in rows],
          _COLORS["torch"], "vs PyTorch")
    speed.set_xscale("log")
    speeds = [v for r in rows for v in r["speedup"].values()] or [1.0]
    ticks = [t for t in _TICKS if min(speeds + [1.0]) / 2 <= t <= max(speeds + [1.0]) * 2]
    speed.set_xticks(ticks, [f"{t:g}x" for t in ticks])
    speed.minorticks_off()
    speed.axvline(1.0, color="black", linewidth=0.8)
    speed.set_xlabel("fastbn speedup (their time / fastbn's, log scale; >1 = fastbn faster)")
    speed.set_yticks(y, labels, fontsize=8)
    speed.invert_yaxis()
    speed.legend(loc="lower left", bbox_to_anchor=(0, 1), ncols=2, fontsize=8, frameon=False)
    speed.margins(x=0.15)
    _bars(floor, y, [r.get("copy_ratio") for r in rows], _COLORS["copy"], "x copy")
    floor.axvline(1.0, color="black", linewidth=0.8)
    floor.set_xlabel("fastbn time / parallel copy (1 = memory floor)")
    floor.set_xlim(0, max([r.get("copy_ratio") or 0 for r in rows] + [1.0]) * 1.2)
    n_cases = len(rows) - len(result["combined"])
    if result["combined"] and n_cases:
        for ax in (speed, floor):
            ax.axhline(n_cases - 0.5, color="grey", linestyle=":", linewidth=0.8)
    cfg = result["config"]
    fig.suptitle(f"fastbn {result['fastbn_version']} - {cfg['dtype']}, {cfg['device']}, "
                 f"{cfg['threads']} thread(s), median of {cfg['repeats']} interleaved runs - "
                 f"{result['machine']['cpu']['model']}", fontsize=10)
    fig.savefig(path, dpi=110)
