"""Training curves: PNG through matplotlib, and the standard-library SVG fallback."""
import builtins
import xml.etree.ElementTree as ET

import pytest

from gpunet import plot

EPOCHS = [{"epoch": i, "loss": 1.0 / (i + 1), "accuracy": 0.5 + 0.1 * i, "val_loss": 1.2 / (i + 1),
           "val_accuracy": 0.45 + 0.1 * i} for i in range(4)]


def test_svg_fallback_without_matplotlib(tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    note = plot.write_curves(EPOCHS, tmp_path)
    assert "curves.svg" in note and "gpunet[plot]" in note
    root = ET.parse(tmp_path / "curves.svg").getroot()  # well-formed XML
    lines = root.findall("{http://www.w3.org/2000/svg}polyline")
    assert len(lines) == 4  # loss, val_loss, accuracy, val_accuracy
    assert all(len(l.get("points").split()) == 4 for l in lines)


def test_png_with_matplotlib(tmp_path):
    pytest.importorskip("matplotlib", reason="matplotlib is in the test extra: pip install '.[test]'")
    assert plot.write_curves(EPOCHS, tmp_path) == "curves: curves.png"
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_no_epochs_no_curves(tmp_path):
    assert plot.write_curves([], tmp_path) == "no epochs, no curves"
    assert not any(tmp_path.iterdir())
