"""A user's own images: EXIF blocks Pillow cannot rewrite, colour keys in 1-bit and 16-bit grey images, and
Pillow's truncated-image switch carried into spawned loader workers."""
import io
import pickle
import struct
import subprocess
import sys
import zlib

import numpy as np
from PIL import Image

from kizuna.data.images import decode_image
from kizuna.data.transforms import to_rgb


def _photo_with_unwritable_exif() -> bytes:
    """Orientation 6 plus an XResolution tag of type UNDEFINED instead of RATIONAL (as some cameras and editors write
    it): Pillow opens it, but its exif_transpose fails writing the block back."""
    pixels = np.zeros((40, 60, 3), np.uint8)
    pixels[:, :30] = (255, 0, 0)
    pixels[:, 30:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x011A] = 72.0
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", exif=exif, quality=95)
    data = bytearray(buf.getvalue())
    tiff = data.find(b"Exif\0\0") + 6
    big_endian = data[tiff:tiff + 2] == b"MM"
    count = int.from_bytes(data[tiff + 8:tiff + 10], "big" if big_endian else "little")
    for k in range(count):
        entry = tiff + 10 + 12 * k
        tag = data[entry:entry + 2]
        if tag == (b"\x01\x1a" if big_endian else b"\x1a\x01"):
            data[entry + 2:entry + 4] = b"\x00\x07" if big_endian else b"\x07\x00"
    return bytes(data)


def test_photo_whose_exif_pillow_cannot_rewrite_is_rotated_not_refused():
    data = _photo_with_unwritable_exif()
    raw = Image.open(io.BytesIO(data))
    raw.load()
    assert raw.getexif().get(0x0112) == 6
    expected = np.asarray(raw.convert("RGB").transpose(Image.Transpose.ROTATE_270))
    img = decode_image(data, "photo.jpg")  # raised TypeError from inside Pillow
    assert img.size == (40, 60)
    np.testing.assert_array_equal(np.asarray(to_rgb(img)), expected)  # not rotated a second time
    np.testing.assert_array_equal(np.asarray(to_rgb(Image.open(io.BytesIO(data)))), expected)  # a user's PIL image


def test_colour_key_in_16_bit_grey_image_is_white_like_8_bit():
    logo = np.zeros((8, 8), np.uint8)
    logo[2:6, 2:6] = 128
    backgrounds = []
    for arr in (logo, logo.astype(np.uint16) * 257):
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, "PNG", transparency=0)
        rgb = np.asarray(to_rgb(decode_image(buf.getvalue())))
        backgrounds.append(rgb[0, 0].tolist())
        assert rgb[3, 3].tolist() == [128, 128, 128]
    assert backgrounds == [[255, 255, 255], [255, 255, 255]]  # the 16-bit one was black


def test_colour_key_in_1_bit_image_is_white():
    size = 8
    bits = np.zeros((size, size), np.uint8)
    bits[2:6, 2:6] = 1
    raw = b"".join(b"\0" + np.packbits(bits[y]).tobytes() for y in range(size))

    def chunk(kind, payload):
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", size, size, 1, 0, 0, 0, 0))
           + chunk(b"tRNS", b"\0\0") + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    assert Image.open(io.BytesIO(png)).mode == "1"
    rgb = np.asarray(to_rgb(decode_image(png)))
    assert rgb[0, 0].tolist() == [255, 255, 255]  # was black
    assert rgb[3, 3].tolist() == [255, 255, 255]


def test_spawned_loader_worker_gets_the_users_truncated_image_switch():
    from PIL import ImageFile

    from kizuna.data.loader import _WorkerInit

    before = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = True
    try:
        state = pickle.dumps(_WorkerInit(None, None))
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = before
    # a fresh interpreter stands in for a spawned worker: PIL imported afresh, with the switch off
    code = ("import pickle, sys\nfrom PIL import ImageFile\nassert not ImageFile.LOAD_TRUNCATED_IMAGES\n"
            "pickle.loads(sys.stdin.buffer.read())(0)\nprint(ImageFile.LOAD_TRUNCATED_IMAGES)")
    out = subprocess.run([sys.executable, "-c", code], input=state, capture_output=True, timeout=120)
    assert out.returncode == 0, out.stderr.decode()
    assert out.stdout.decode().strip() == "True"


def test_phone_mpo_photo_decodes_at_draft_size_like_a_jpeg():
    pixels = np.random.default_rng(0).integers(0, 256, (400, 600, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "MPO", save_all=True, append_images=[Image.fromarray(255 - pixels)], quality=90)
    assert Image.open(io.BytesIO(buf.getvalue())).format == "MPO"
    assert decode_image(buf.getvalue(), draft_size=100).size == (150, 100)  # was decoded whole: (600, 400)
    assert decode_image(buf.getvalue()).size == (600, 400)
