"""``python tools/gallery.py``: every gallery image is written, and is a readable PNG; the direction grid."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from tools import gallery  # the repository's tooling, not the installed package

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_gallery_small_writes_every_image(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert gallery.main(["--small", "--out", str(tmp_path)]) == 0
    assert "wrote 7 images" in capsys.readouterr().out
    for name in gallery.FIGURES:
        path = tmp_path / f"{name}.png"
        assert path.is_file(), name
        assert path.read_bytes()[:8] == PNG_SIGNATURE, name
        with Image.open(path) as img:
            img.verify()  # raises on a truncated or corrupt file
        with Image.open(path) as img:
            assert img.width > 50 and img.height > 50, (name, img.size)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{n}.png" for n in gallery.FIGURES)


def test_gallery_rejects_unknown_figure(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="`only` must name figures"):
        gallery.make_gallery(tmp_path, gallery.GallerySizes.small(), only=["nope"])


def test_direction_grid_rejects_colour_images() -> None:
    import torch

    from captum_cfx.visualization import direction_grid

    with pytest.raises(ValueError, match="`images` must be \\(N, 1, H, W\\)"):
        direction_grid(object(), torch.nn.Identity(), torch.zeros(2, 3, 8, 8), [0.0])
