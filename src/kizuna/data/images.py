"""Opening images with errors that name the file, and decoding bytes from shards."""
from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

# with JPEG's other names and the netpbm family (GTSRB's images are .ppm), which Pillow reads: left out, a folder of
# them was "no images found" while the same files given one by one or in a CSV were read
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".jfif", ".jpe", ".ppm",
                    ".pgm", ".pbm", ".pnm", ".avif", ".apng")


# The decoders tried on an image's bytes: the formats of IMAGE_EXTENSIONS (MPO comes through JPEG's), and those a
# plugin outside Pillow registered (pillow-heif's HEIF: the user's own choice). Left to Pillow's choice, any bytes (a
# shard's 0.jpg, a folder's photo.jpg) were decoded by whichever of its ~40 bundled plugins took them, EPS among
# them, which runs the file through Ghostscript (a PostScript program from the data)
IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "PPM", "AVIF")
FORMATS_SAID = "JPEG, PNG, WebP, GIF, BMP, TIFF, PPM/PGM/PBM, AVIF"


def image_formats() -> tuple[str, ...]:
    """IMAGE_FORMATS and the formats registered by plugins that are not Pillow's own (as registered now)."""
    Image.init()  # (returns at once once done)
    return IMAGE_FORMATS + tuple(name for name, (factory, _) in Image.OPEN.items() if name not in IMAGE_FORMATS
                                 and not pillows_own(factory))


def pillows_own(factory) -> bool:
    """Whether an image opener (``PIL.Image.OPEN``'s factory) is one of Pillow's bundled plugins."""
    return getattr(factory, "__module__", "").startswith("PIL.")


class ImageError(ValueError):
    """An image that cannot be used; the message names it and says why."""


class ImageTooLarge(ImageError):
    """More pixels than Pillow's decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``, twice over)."""


def decode_image(data: bytes, name: str = "<bytes>", draft_size: int | None = None) -> Image.Image:
    """Decode fully (so truncation is found here, not later in a transform).

    ``draft_size`` lets JPEG decode at a reduced scale when the target is much smaller (draft mode).
    """
    if not data:
        raise ImageError(f"{name}: empty file (0 bytes)")
    try:
        img = Image.open(io.BytesIO(data), formats=image_formats())
        _say_a_bomb_by_name(img, name)
        if draft_size and img.format in ("JPEG", "MPO"):  # MPO: a phone JPEG with a depth or gain map after it
            img.draft("RGB", (draft_size, draft_size))
        img.load()
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not an image file in a format kizuna reads ({FORMATS_SAID})") from None
    except Image.DecompressionBombError as e:  # a few KB of PNG can claim gigapixels: refused before decoding
        raise ImageTooLarge(f"{name}: too large to decode safely ({e}). Resize it, or raise "
                            "PIL.Image.MAX_IMAGE_PIXELS in your own script if you trust the file") from None
    except MemoryError:  # the machine's, not the image's
        raise
    except Exception as e:  # PIL's own (OSError, SyntaxError, ValueError) and a plugin's: `kizuna embed` ended in a
        # worker's traceback on a decoder's own error type, which training and eval count as corrupt_image
        raise ImageError(f"{name}: corrupt or truncated image ({e})") from None
    return upright(img)


def _say_a_bomb_by_name(img: Image.Image, name: str) -> None:
    """An image between one and two times ``Image.MAX_IMAGE_PIXELS`` (Pillow decodes it, with a warning that names
    nothing: "Image size (100000000 pixels) exceeds limit ...", once an epoch in training) warned about by name.
    The command line shows this one only (:class:`kizuna.data.loader.CommandWarnings` drops Pillow's)."""
    limit = Image.MAX_IMAGE_PIXELS
    if limit and img.width * img.height > limit:
        warnings.warn(f"{name}: {img.width} x {img.height} = {img.width * img.height} pixels, past Pillow's "
                      f"decompression-bomb limit of {limit} (PIL.Image.MAX_IMAGE_PIXELS); decoded all the same "
                      "(Pillow refuses twice the limit): resize it if it is not meant to be that large",
                      Image.DecompressionBombWarning, stacklevel=3)


EXIF_ORIENTATION = 0x0112


def upright(img: Image.Image) -> Image.Image:
    """The image as it is meant to be seen: a camera's EXIF orientation tag applied, as HF's
    ``transformers.image_utils.load_image`` does (a phone photo held upright is stored on its side with
    orientation 6; read raw, a model saw it rotated). Images without the tag (all of ../shared's) are
    returned as they are."""
    # no EXIF or XMP block (an XMP tiff:Orientation alone counts too, as PIL's getexif and HF's load_image read it).
    # A PNG's eXIf chunk may follow the image data: it is in img.info only once the pixels are loaded (an
    # Image.open()ed PNG looked untagged), and PIL's getexif loads them to find it
    if "exif" not in img.info and "xmp" not in img.info and img.format not in ("TIFF", "PNG"):
        return img
    try:
        orientation = img.getexif().get(EXIF_ORIENTATION, 1)
    except Exception:  # a malformed EXIF block does not make the pixels unusable
        return img
    if orientation not in _ORIENTATION_TRANSPOSE:
        return img
    try:
        return ImageOps.exif_transpose(img)
    except Exception:
        # Pillow rotates, then rewrites the EXIF block, and fails on some real cameras' blocks (a rational tag of
        # the wrong type, Samsung's -2/0 exposure bias): the photo crashed embed/zeroshot and was skipped as
        # corrupt in training. Rotate here, and drop the tags so a second upright() does not rotate again
        upright_img = img.transpose(_ORIENTATION_TRANSPOSE[orientation])
        for key in ("exif", "xmp", "XML:com.adobe.xmp", "Raw profile type exif", "Raw profile type APP1"):
            upright_img.info.pop(key, None)
        return upright_img


_ORIENTATION_TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
                          4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
                          6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90}


def load_image(path: str | Path, draft_size: int | None = None) -> Image.Image:
    path = Path(path)
    if not path.exists():
        raise ImageError(f"{path}: no such file")
    if path.is_dir():
        raise ImageError(f"{path}: is a folder, not an image")
    try:
        data = path.read_bytes()
    except OSError as e:  # permission denied, an I/O error: this image is unusable, not the whole run
        raise ImageError(f"{path}: cannot be read ({e.strerror or e})") from None
    return decode_image(data, str(path), draft_size)


# never a folder of data: macOS's zip archives carry one of resource forks (__MACOSX/cat/._img.jpg)
SKIPPED_FOLDERS = ("__MACOSX",)


def walk_folder(root: str | Path):
    """``os.walk(root)`` in sorted order (the filesystem's order is not reproducible), into symlinked folders
    (a subset made by linking class folders was read as classes with no images), without hidden folders,
    ``__MACOSX`` and AppleDouble ``._*`` files. Each real folder is read once, under its own name: a link to a folder
    the walk reaches anyway (inside ``root``: an alias class, ``latest -> v2``, a link to a parent) is left out,
    and a link to one outside is followed once. Deciding by which name came first instead, an alias that sorted
    before its folder took the folder's images (a class reported empty, its images labelled with the alias)."""
    top = os.path.realpath(root)
    seen = {top}

    def walked_anyway(real: str) -> bool:  # inside root, by a path the walk does not skip
        try:
            rel = os.path.relpath(real, top)
        except ValueError:  # on another drive (Windows: a class folder linked from D: into C:), so outside root
            return False
        return rel != ".." and not rel.startswith(".." + os.sep) and not any(
            part.startswith(".") or part in SKIPPED_FOLDERS for part in rel.split(os.sep) if part != ".")

    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        kept = []
        for name in sorted(dirnames):
            path = os.path.join(dirpath, name)
            real = os.path.realpath(path)
            if name.startswith(".") or name in SKIPPED_FOLDERS or real in seen:
                continue
            if os.path.islink(path) and walked_anyway(real):
                continue
            seen.add(real)
            kept.append(name)
        dirnames[:] = kept
        # macOS's AppleDouble files (._img.jpg beside img.jpg on FAT, SMB or NFS) hold metadata, not an image:
        # each was counted as a corrupt image
        yield dirpath, dirnames, [name for name in filenames if not name.startswith("._")]


def list_images(folder: str | Path) -> list[Path]:
    """The image files under ``folder``, symlinked folders included (:func:`walk_folder`), sorted. A link to an image
    that is gone is listed too, so that the reader counts it as unreadable (it was left out without a word)."""
    return sorted(Path(dirpath) / name for dirpath, _, names in walk_folder(folder) for name in names
                  if Path(name).suffix.lower() in IMAGE_EXTENSIONS and (
                      os.path.isfile(path := os.path.join(dirpath, name)) or not os.path.exists(path)))
