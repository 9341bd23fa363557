import io
import random
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from kizuna.data.images import ImageError, decode_image, load_image
from kizuna.data.transforms import Preprocess, TrainTransform, to_rgb


def jpeg_bytes(w=40, h=30, color=(200, 10, 10)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), color).save(buf, "JPEG")
    return buf.getvalue()


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "LA", "CMYK", "I;16", "1", "F"])
def test_every_mode_becomes_rgb(mode):
    img = Image.new("RGB", (20, 10), (10, 120, 240)).convert(mode)
    out = Preprocess(image_size=16)(img)
    assert out.shape == (3, 16, 16) and torch.isfinite(out).all()


def test_transparent_pixels_become_white():
    img = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert to_rgb(img).getpixel((0, 0)) == (255, 255, 255)
    pal = Image.new("P", (4, 4), 0)
    pal.putpalette([0, 0, 0] * 256)
    pal.info["transparency"] = 0
    assert to_rgb(pal).getpixel((1, 1)) == (255, 255, 255)


def test_resize_shortest_then_center_crop():
    img = Image.new("RGB", (300, 200))
    img.paste((255, 0, 0), (0, 0, 40, 200))  # a red band on the left edge is cropped away
    x = Preprocess(image_size=100, mean=[0, 0, 0], std=[1, 1, 1])(img)
    assert x.shape == (3, 100, 100)
    assert x[0, :, 0].max() < 0.05  # after resizing to 150x100 and cropping 25 px off each side


@pytest.mark.parametrize("w,h", [(128, 128), (300, 100), (100, 300), (48, 32), (20, 10)])
def test_a_non_square_size_is_covered_then_cropped_never_padded(w, h):
    """A 32x48 (height x width) model: the image is scaled until it covers 32x48, then centre-cropped. The
    short side alone scaled a square photo to 32x32 and padded 8 black columns each side."""
    x = Preprocess(image_size=(32, 48), mean=[0, 0, 0], std=[1, 1, 1])(Image.new("RGB", (w, h), "white"))
    assert x.shape == (3, 32, 48) and x.min() > 0.99  # white everywhere: no padding
    band = Image.new("RGB", (96, 96), "white")
    band.paste((0, 0, 0), (0, 0, 96, 20))  # a black band along the top is cropped away, and only it
    y = Preprocess(image_size=(32, 48), mean=[0, 0, 0], std=[1, 1, 1])(band)
    assert y[:, 0].max() < 0.5 < y[:, 16].min()


def test_matches_hf_clip_image_processor(shared_dir):
    transformers = pytest.importorskip("transformers")
    proc = transformers.CLIPImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224})
    with tarfile.open(shared_dir / "data/flickr8k/test/000000.tar") as tar:
        jpgs = [tar.extractfile(m).read() for m in tar.getmembers() if m.name.endswith(".jpg")][:3]
    imgs = [decode_image(b) for b in jpgs] + [Image.new("RGB", (320, 240), (30, 60, 90))]
    ours = torch.stack([Preprocess(image_size=224)(im) for im in imgs])
    theirs = proc(images=imgs, return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_train_transform_is_reproducible_from_rng_and_varies():
    img = Image.fromarray(np.random.RandomState(0).randint(0, 255, (64, 80, 3), dtype=np.uint8))
    t = TrainTransform(image_size=32, hflip=0.5, color_jitter=0.2)
    a = t(img, random.Random(1))
    b = t(img, random.Random(1))
    c = t(img, random.Random(2))
    assert a.shape == (3, 32, 32) and torch.equal(a, b) and not torch.equal(a, c)


def test_train_crop_respects_scale():
    t = TrainTransform(scale=(0.9, 1.0))
    rng = random.Random(0)
    for _ in range(200):
        l, tp, r, b = t.crop_box(100, 80, rng)
        assert 0 <= l < r <= 100 and 0 <= tp < b <= 80
        assert (r - l) * (b - tp) >= 0.85 * 8000


@pytest.mark.parametrize("content,reason", [(b"", "empty file"), (b"hello, not an image", "not an image"),
                                            (jpeg_bytes()[:200], "corrupt or truncated")])
def test_bad_image_files_give_one_line_error_naming_the_file(tmp_path, content, reason):
    p = tmp_path / "photo.jpg"
    p.write_bytes(content)
    with pytest.raises(ImageError) as e:
        load_image(p)
    assert str(p) in str(e.value) and reason in str(e.value) and "\n" not in str(e.value)


def test_an_image_past_pillows_pixel_limit_is_a_one_line_error(tmp_path):
    """A decompression bomb (a few bytes claiming gigapixels) was a DecompressionBombError traceback."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # the file alone, not only the suite
    from _shards import bomb_png

    from kizuna.data.images import ImageTooLarge

    p = tmp_path / "bomb.png"
    p.write_bytes(bomb_png())
    with pytest.raises(ImageTooLarge, match="bomb.png: too large to decode safely.*MAX_IMAGE_PIXELS") as e:
        load_image(p)
    assert isinstance(e.value, ImageError) and "\n" not in str(e.value)


def test_missing_image_file(tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path / "nope.png")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
@pytest.mark.parametrize("draft", [None, 8])
def test_a_cameras_exif_orientation_is_applied_as_hf_load_image_does(fmt, draft):
    """A photo stored on its side with orientation 6 (rotate 90 clockwise to view) was read on its side."""
    from PIL import ImageOps

    stored = Image.new("RGB", (32, 16), (0, 0, 0))
    stored.paste((255, 0, 0), (0, 0, 8, 16))  # red on the stored left edge: the viewed top, once rotated
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    stored.save(buf, fmt, exif=exif.tobytes(), **({"quality": 95} if fmt == "JPEG" else {}))
    img = decode_image(buf.getvalue(), "photo", draft_size=draft)
    assert img.size == ((16, 32) if draft is None or fmt != "JPEG" else (8, 16))  # JPEG drafts at 1/2
    top, bottom = np.asarray(img.convert("RGB"))[[1, -2], img.width // 2].astype(int)
    assert top[0] > 200 and bottom[0] < 60  # upright: red on top
    reference = ImageOps.exif_transpose(Image.open(io.BytesIO(buf.getvalue())))  # HF's load_image
    if draft is None:
        assert np.array_equal(np.asarray(img.convert("RGB")), np.asarray(reference.convert("RGB")))


def test_an_image_without_orientation_is_not_copied():
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "PNG")
    img = Image.open(io.BytesIO(buf.getvalue()))
    img.load()
    from kizuna.data.images import upright

    assert upright(img) is img


def _png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("img", [Image.new("RGBA", (4, 4), (10, 20, 30, 0)),
                                 Image.new("LA", (4, 4), (90, 0)),
                                 Image.fromarray(np.full((4, 4), 30000, dtype=np.uint16))],
                         ids=["transparent-rgba", "transparent-la", "16-bit"])
def test_training_decodes_an_image_as_every_other_command_does(img):
    """The shard/folder decoder converted to RGB on its own: a transparent image trained black where
    `embed` saw white, and a 16-bit mid grey (30000) trained saturated at 255 where `embed` saw 117."""
    from kizuna.data.sources import decode_image as dataset_decode

    data = _png_bytes(img)
    assert np.array_equal(np.asarray(dataset_decode(data)), np.asarray(to_rgb(decode_image(data))))


def test_the_crop_draft_size_leaves_the_smallest_crop_its_full_resolution():
    """`kizuna train` decoded JPEGs at the model's side: a crop of a quarter of the area then had half the
    pixels it is resized to. At the draft size every crop spans at least the model's side."""
    from kizuna.data.transforms import crop_draft_size

    side, low = 64, 0.25
    draft = crop_draft_size(side, low)
    transform = TrainTransform(image_size=side, scale=(low, low))
    rng = random.Random(0)
    boxes = [transform.crop_box(draft, draft, rng) for _ in range(2000)]
    smallest = min(min(right - left, bottom - top) for left, top, right, bottom in boxes)
    assert side - 1 <= smallest <= side + 2  # the narrowest aspect reaches the side; rounding aside
    assert crop_draft_size(side, 1.0) > side  # even a whole-area crop may be 3:4


def test_an_image_opened_with_pil_is_encoded_upright():
    """The README's snippet (preprocess(Image.open(path))) encoded a phone photo with EXIF orientation 6 on its
    side, while `kizuna embed` and `kizuna zeroshot` (which decode through kizuna) turned it upright."""
    import io

    from kizuna.data.images import EXIF_ORIENTATION, decode_image

    upright_photo = Image.new("RGB", (40, 40), "white")
    upright_photo.paste((255, 0, 0), (0, 0, 40, 10))  # a red band along the top
    stored = upright_photo.transpose(Image.ROTATE_90)  # as the camera stores it, on its side (orientation 6)
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    buf = io.BytesIO()
    stored.save(buf, "PNG", exif=exif.tobytes())
    pre = Preprocess(image_size=32, mean=[0, 0, 0], std=[1, 1, 1])
    opened = pre(Image.open(io.BytesIO(buf.getvalue())))
    torch.testing.assert_close(opened, pre(decode_image(buf.getvalue())))
    torch.testing.assert_close(opened, pre(upright_photo))
    assert opened[0, 0].min() > 0.9 and opened[1, 0].max() < 0.1  # the top row is the red band


@pytest.mark.parametrize("mode,key", [("L", 0), ("RGB", (0, 0, 0))])
def test_a_transparent_colour_key_is_white(mode, key):
    """A grey or RGB PNG with a tRNS colour key: its transparent pixels were black, HF's convert_rgb makes them
    white (as kizuna already did for palette images)."""
    import io

    img = Image.new(mode, (4, 4), key)
    buf = io.BytesIO()
    img.save(buf, "PNG", transparency=key)
    back = Image.open(io.BytesIO(buf.getvalue()))
    assert "transparency" in back.info
    assert to_rgb(back).getpixel((1, 1)) == (255, 255, 255)


def test_a_sliver_is_not_resized_whole(monkeypatch):
    """1 x 20,000 pixels (121 bytes of PNG) resized whole for a 224 crop asked for a 224 x 4,480,000 image (1 Gpx,
    3 GB); only the crop's region is resized now, and past the threshold the pixels equal the whole resize's."""
    from kizuna.data import transforms

    sizes = []
    real_resize = Image.Image.resize
    monkeypatch.setattr(Image.Image, "resize", lambda self, size, *a, **k: sizes.append(size) or real_resize(
        self, size, *a, **k))
    x = Preprocess(image_size=224)(Image.new("RGB", (1, 20000), "white"))
    assert x.shape == (3, 224, 224) and max(w * h for w, h in sizes) == 224 * 224
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 255, (90, 60, 3), dtype=np.uint8))
    whole = Preprocess(image_size=32, mean=[0, 0, 0], std=[1, 1, 1])(photo)
    monkeypatch.setattr(transforms, "HUGE_RESIZE_PIXELS", 100)  # the crop-only path for an ordinary photo
    boxed = Preprocess(image_size=32, mean=[0, 0, 0], std=[1, 1, 1])(photo)
    diff = (boxed - whole).abs()  # the same sampling but for the box's rounding: a few levels here and there
    assert diff.max() <= 6 / 255 and diff.mean() < 0.5 / 255


def test_an_xmp_orientation_alone_is_applied():
    """A JPEG whose only orientation is XMP's tiff:Orientation (no EXIF block) was read on its side; HF's
    load_image (PIL's exif_transpose) turns it upright."""
    import io

    xmp = (b'<?xpacket begin=""?><x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/'
           b'22-rdf-syntax-ns#"><rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/" tiff:Orientation="6"/>'
           b'</rdf:RDF></x:xmpmeta><?xpacket end="w"?>')
    buf = io.BytesIO()
    Image.new("RGB", (96, 64), "white").save(buf, "JPEG", xmp=xmp)
    assert decode_image(buf.getvalue()).size == (64, 96)


def test_a_png_whose_exif_follows_its_pixels_is_upright_when_opened_with_pil():
    """A PNG's eXIf chunk may come after the image data (IDAT): PIL puts it in img.info only once the pixels are
    loaded, so preprocess(Image.open(path)) saw no tag and encoded the photo on its side, while `kizuna embed`
    (which decodes first) and HF's load_image turned it upright."""
    import struct

    from kizuna.data.images import EXIF_ORIENTATION, decode_image

    upright_photo = Image.new("RGB", (40, 40), "white")
    upright_photo.paste((255, 0, 0), (0, 0, 40, 10))
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    buf = io.BytesIO()
    upright_photo.transpose(Image.ROTATE_90).save(buf, "PNG", exif=exif.tobytes())
    data, pos, chunks = buf.getvalue(), 8, []
    while pos < len(data):  # the chunks, to move eXIf just before IEND
        size = struct.unpack(">I", data[pos:pos + 4])[0]
        chunks.append((data[pos + 4:pos + 8], data[pos:pos + 12 + size]))
        pos += 12 + size
    exif_chunk = [c for kind, c in chunks if kind == b"eXIf"]
    rest = [c for kind, c in chunks if kind != b"eXIf"]
    late = data[:8] + b"".join(rest[:-1]) + exif_chunk[0] + rest[-1]
    assert "exif" not in Image.open(io.BytesIO(late)).info  # what the check looked at
    pre = Preprocess(image_size=32, mean=[0, 0, 0], std=[1, 1, 1])
    opened = pre(Image.open(io.BytesIO(late)))
    torch.testing.assert_close(opened, pre(upright_photo))
    torch.testing.assert_close(opened, pre(decode_image(late)))
