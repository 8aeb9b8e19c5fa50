"""Training curves: loss and accuracy against epoch, train and val.

With matplotlib (`pip install "gpunet[plot]"`) this writes curves.png; without it,
curves.svg is drawn with the standard library so every run still gets a picture.
"""
from __future__ import annotations

from pathlib import Path
from xml.sax.saxutils import escape

from .fileio import atomic_write_bytes

PANELS = (("loss", ("loss", "val_loss")), ("accuracy", ("accuracy", "val_accuracy")))
COLORS = {"loss": "#1f77b4", "accuracy": "#1f77b4", "val_loss": "#ff7f0e", "val_accuracy": "#ff7f0e"}


def _series(epochs, key):
    pts = [(e["epoch"] + 1, e[key]) for e in epochs if e.get(key) is not None]
    return pts


def pyplot():
    """matplotlib.pyplot with the Agg backend (files only, no display), or None without matplotlib.

    The one place gpunet sets matplotlib up: run curves, `gpunet compare` and the experiments.
    """
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def write_curves(epochs, folder) -> str:
    """Write the curves into `folder`; returns a one-line description of what was written."""
    folder = Path(folder)
    if not epochs:
        return "no epochs, no curves"
    plt = pyplot()
    if plt is None:
        path = folder / "curves.svg"
        atomic_write_bytes(path, svg_curves(epochs).encode())
        return f"curves: {path.name} (install gpunet[plot] for PNG)"
    from matplotlib.ticker import MaxNLocator
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, (title, keys) in zip(axes, PANELS):
        for key in keys:
            pts = _series(epochs, key)
            if pts:
                ax.plot(*zip(*pts), marker="o", label=key, color=COLORS[key])
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path = folder / "curves.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return f"curves: {path.name}"


def _panel_svg(epochs, title, keys, x0, width=420, height=300, pad=45):
    series = {k: _series(epochs, k) for k in keys}
    pts = [p for s in series.values() for p in s]
    if not pts:
        return ""
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    xmin, xmax = min(xs), max(max(xs), min(xs) + 1)
    ymin, ymax = min(ys), max(ys)
    if ymax - ymin < 1e-12:
        ymin, ymax = ymin - 0.5, ymax + 0.5

    def sx(x):
        return x0 + pad + (x - xmin) / (xmax - xmin) * (width - 2 * pad)

    def sy(y):
        return height - pad - (y - ymin) / (ymax - ymin) * (height - 2 * pad)

    out = [f'<text x="{x0 + width / 2}" y="20" text-anchor="middle" font-size="14">{escape(title)}</text>',
           f'<rect x="{x0 + pad}" y="{pad}" width="{width - 2 * pad}" height="{height - 2 * pad}" '
           'fill="none" stroke="#999"/>',
           f'<text x="{x0 + pad}" y="{height - pad + 15}" font-size="10">{xmin}</text>',
           f'<text x="{x0 + width - pad}" y="{height - pad + 15}" font-size="10" text-anchor="end">{xmax}</text>',
           f'<text x="{x0 + pad - 4}" y="{pad + 4}" font-size="10" text-anchor="end">{ymax:.3g}</text>',
           f'<text x="{x0 + pad - 4}" y="{height - pad}" font-size="10" text-anchor="end">{ymin:.3g}</text>',
           f'<text x="{x0 + width / 2}" y="{height - 8}" font-size="11" text-anchor="middle">epoch</text>']
    for i, (key, s) in enumerate(series.items()):
        if not s:
            continue
        poly = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in s)
        out.append(f'<polyline points="{poly}" fill="none" stroke="{COLORS[key]}" stroke-width="2"/>')
        out.append(f'<text x="{x0 + width - pad - 5}" y="{pad + 15 + 14 * i}" font-size="11" '
                   f'text-anchor="end" fill="{COLORS[key]}">{escape(key)}</text>')
    return "\n".join(out)


def svg_curves(epochs) -> str:
    """Two panels (loss, accuracy) as a standalone SVG document."""
    body = "\n".join(_panel_svg(epochs, title, keys, x0=i * 430) for i, (title, keys) in enumerate(PANELS))
    return ('<svg xmlns="http://www.w3.org/2000/svg" width="860" height="300" '
            'font-family="sans-serif">\n<rect width="100%" height="100%" fill="white"/>\n'
            f"{body}\n</svg>\n")
