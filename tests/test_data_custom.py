"""Your own data in the CLI: --dataset npz:FILE.npz and folder:DIR, checked like the built-in sets."""
from __future__ import annotations

import json

import numpy as np
import pytest

import gpunet as gn
from gpunet.cli import main


def _blobs(n=200, seed=0):
    """Two classes of 8×8 images, bright top half vs bright bottom half (learnable)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.integers(0, 60, (n, 8, 8))
    for i, c in enumerate(y):
        x[i, :4] += 150 * int(c == 0)
        x[i, 4:] += 150 * int(c == 1)
    return x.astype(np.uint8), y


def test_npz_dataset_trains_from_the_cli(tmp_path):
    x, y = _blobs()
    np.savez(tmp_path / "blobs.npz", x=x, y=y)
    args = ["train", "--dataset", f"npz:{tmp_path / 'blobs.npz'}", "--epochs", "3", "--out", str(tmp_path),
            "--quiet", "--no-doctor", "--hidden", "16"]
    assert main(args) == 0
    run = tmp_path / "blobs-mlp"  # the run is named after the file
    test = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines() if '"test"' in ln][0]
    assert test["accuracy"] >= 0.95
    tr, te = gn.data.load(f"npz:{tmp_path / 'blobs.npz'}", "train"), gn.data.load(f"npz:{tmp_path / 'blobs.npz'}", "test")
    assert len(tr) == 160 and len(te) == 40 and tr.classes == ("0", "1")
    rows = {r.tobytes() for r in x}
    assert all(r.tobytes() in rows for r in te.x)


def test_npz_float_pixels_in_unit_range_are_scaled(tmp_path):
    x, y = _blobs()
    np.savez(tmp_path / "f.npz", x=x / 255.0, y=y, x_test=x[:10] / 255.0, y_test=y[:10])
    te = gn.data.load(f"npz:{tmp_path / 'f.npz'}", "test")
    np.testing.assert_allclose(te.x, x[:10].astype(np.float32), rtol=1e-6)
    assert len(gn.data.load(f"npz:{tmp_path / 'f.npz'}", "train")) == 200


@pytest.mark.parametrize("arrays, match", [
    ({"x": np.zeros((4, 8, 8))}, r"expected arrays x and y, got \['x'\]"),
    ({"x": np.zeros((4, 8)), "y": np.zeros(4, int)}, r"x expected images \(N, H, W\)"),
    ({"x": np.full((5, 8, 8), np.nan), "y": np.zeros(5, int)}, "expected finite values"),
    ({"x": np.zeros((5, 8, 8)), "y": np.array([0, 1, -1, 0, 1])}, "y expected labels in"),
    ({"x": np.zeros((5, 8, 8)), "y": np.zeros(5)}, "y must hold integer labels"),
])
def test_npz_bad_files_are_refused(tmp_path, arrays, match):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(gn.DataError, match=match):
        for split in ("train", "test"):
            gn.data.load(f"npz:{tmp_path / 'bad.npz'}", split)


def test_npz_missing_file_is_a_cli_error(tmp_path, capsys):
    assert main(["train", "--dataset", f"npz:{tmp_path / 'none.npz'}", "--out", str(tmp_path)]) == 2
    assert "expected an .npz file with arrays x and y" in " ".join(capsys.readouterr().out.split())


def test_image_folder(tmp_path):
    plt_image = pytest.importorskip("matplotlib.image", reason="matplotlib is in the test extra")
    x, y = _blobs(40)
    for i, (img, c) in enumerate(zip(x, y)):
        (tmp_path / "imgs" / f"class{c}").mkdir(parents=True, exist_ok=True)
        plt_image.imsave(tmp_path / "imgs" / f"class{c}" / f"{i}.png", np.repeat(img[..., None], 3, -1))
    tr = gn.data.load(f"folder:{tmp_path / 'imgs'}", "train")
    te = gn.data.load(f"folder:{tmp_path / 'imgs'}", "test")
    assert tr.classes == ("class0", "class1") and len(tr) + len(te) == 40 and tr.x.shape[1:] == (3, 8, 8)
    first = sorted((tmp_path / "imgs" / "class0").glob("*.png"))[0]
    i = int(first.stem)
    assert any(np.allclose(row[0], x[i], atol=0.51) for row in np.concatenate([tr.x, te.x]))
    (tmp_path / "imgs" / "class1" / "odd.png").unlink(missing_ok=True)
    plt_image.imsave(tmp_path / "imgs" / "class1" / "odd.png", np.zeros((4, 4, 3)))
    with pytest.raises(gn.DataError, match="expected images of one size"):
        gn.data.load(f"folder:{tmp_path / 'imgs'}", "train")
