import io

import numpy as np
import pytest
from PIL import Image

from herbscan import images
from herbscan.errors import ImageError, ParameterError


def _save(im: Image.Image, path, **kw):
    im.save(path, **kw)
    return path


def test_jpeg_draft_decodes_at_reduced_scale(tmp_path):
    p = _save(Image.new("RGB", (2000, 3000), (200, 180, 160)), tmp_path / "big.jpg")
    im = images.open_rgb(p, min_size=(256, 256))
    # 1/4 scale still covers 256 on the short side (500 ≥ 256); 1/8 (250) would not
    assert im.size == (500, 750)
    assert images.open_rgb(p).size == (2000, 3000)


def test_exif_orientation_applied_and_draft_respects_it(tmp_path):
    im = Image.new("RGB", (300, 200), (255, 255, 255))
    im.paste((0, 0, 0), (0, 0, 30, 30))  # black square top-left of the stored pixels
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    p = tmp_path / "rot.jpg"
    im.save(p, exif=exif.tobytes(), quality=95)
    out = images.open_rgb(p)
    assert out.size == (200, 300)
    a = np.asarray(out)
    assert a[:30, -30:].mean() < 60  # the square is now top-right
    assert a[:30, :30].mean() > 200


@pytest.mark.parametrize("mode", ["L", "CMYK", "P", "RGBA", "LA", "I;16"])
def test_modes_become_rgb(tmp_path, mode):
    base = Image.new("RGB", (40, 60), (120, 60, 30))
    if mode == "I;16":
        im = Image.fromarray(np.full((60, 40), 40000, np.uint16))
        suffix = "png"
    elif mode == "CMYK":
        im, suffix = base.convert("CMYK"), "jpg"
    else:
        im, suffix = base.convert(mode), "png"
    p = _save(im, tmp_path / f"x.{suffix}")
    out = images.open_rgb(p)
    assert out.mode == "RGB" and out.size == (40, 60)
    if mode == "I;16":
        assert abs(int(np.asarray(out)[0, 0, 0]) - round(40000 / 65535 * 255)) <= 1


def test_alpha_composited_on_white(tmp_path):
    im = Image.new("RGBA", (10, 10), (0, 0, 0, 0))
    out = images.open_rgb(_save(im, tmp_path / "a.png"))
    assert np.asarray(out).min() == 255


def test_tiff_read(tmp_path):
    p = _save(Image.new("RGB", (30, 20), (1, 2, 3)), tmp_path / "s.tif")
    assert np.asarray(images.open_rgb(p))[0, 0].tolist() == [1, 2, 3]


def test_truncated_and_corrupt_files_name_the_file(tmp_path):
    buf = io.BytesIO()
    Image.new("RGB", (400, 600), (9, 9, 9)).save(buf, "JPEG")
    trunc = tmp_path / "trunc.jpg"
    trunc.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 3])
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"not an image at all")
    for p in (trunc, junk, tmp_path / "missing.jpg"):
        with pytest.raises(ImageError) as e:
            images.load_sheet(p, 64)
        assert str(p) in str(e.value) and "\n" not in str(e.value)


def test_pixel_limit(tmp_path, monkeypatch):
    p = _save(Image.new("L", (500, 500)), tmp_path / "bomb.png")
    monkeypatch.setattr(images, "MAX_PIXELS", 100_000)
    with pytest.raises(ImageError, match="exceeds the limit"):
        images.open_rgb(p)


def test_fit_stretch_rotates_landscape_and_pad_keeps_aspect(tmp_path):
    im = Image.new("RGB", (300, 100), (255, 255, 255))
    im.paste((0, 0, 0), (0, 0, 150, 100))  # left half black
    p = _save(im, tmp_path / "land.png")
    s = images.load_sheet(p, 64, "stretch")
    assert s.shape == (64, 64, 3)
    # rotated 90° counter-clockwise: the left half becomes the bottom half
    assert s[40:].mean() < 30 and s[:24].mean() > 225
    framed = Image.new("RGB", (300, 100), (255, 255, 255))
    framed.paste((200, 30, 30), (6, 6, 294, 94))  # red content inside a paper-white margin
    pad = images.load_sheet(_save(framed, tmp_path / "framed.png"), 60, "pad")
    assert pad.shape == (60, 60, 3)
    assert pad[:18].min() >= 240 and pad[-18:].min() >= 240  # padded with the border colour
    assert np.abs(pad[26:34, 8:52].astype(int) - (200, 30, 30)).max() < 10  # aspect kept
    with pytest.raises(ParameterError, match="fit must be one of"):
        images.load_sheet(p, 60, "crop")


def test_thumbnail_is_small_jpeg(tmp_path):
    p = _save(Image.new("RGB", (1200, 1800), (10, 200, 10)), tmp_path / "t.jpg")
    data = images.thumbnail_jpeg(p, max_side=200)
    im = Image.open(io.BytesIO(data))
    assert im.format == "JPEG" and max(im.size) == 200 and im.size[0] < im.size[1]
