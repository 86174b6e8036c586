"""Patterns for a Hopfield network from files: text, images, or scikit-learn's digits.

Each reader returns (rows, image shape or None); rows are lists or a tensor of ±1 values, checked by
`Hopfield.store` (non-binary values and mixed lengths are one-line errors there).
"""

import os
import re
from collections.abc import Iterable

import torch

from rnnkit._io import read_bytes, refuse_empty
from rnnkit.data.corpus import refuse_wide
from rnnkit.errors import RnnkitError


def read_patterns(path) -> tuple:
    """A text file, one pattern per line: values -1/1 (spaces or commas) or a string of + and -."""
    refuse_empty(path, "a text file of ±1 patterns")
    try:  # (read_bytes: a pipe or a device such as /dev/zero was read without end)
        raw = read_bytes(path)
        refuse_wide(
            path, raw[:256]
        )  # UTF-16/32 (a NUL after every digit): the iconv line, not "cannot read '1\x00'"
        text = raw.decode("utf-8-sig")  # a BOM is no value
        # a line ends at a newline (\r\n and \r one), as numpy.loadtxt and rnnkit's other text readers end it, not at
        # str.splitlines' form feed, \x85 or \u2028 inside a line: '1 -1\f1 -1' was two patterns of 2, not one of 4
        lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        lines = [line.strip() for line in lines if line.strip()]
    except FileNotFoundError:  # (as a missing text file is said, naming the fix)
        raise RnnkitError(f"patterns file {path} not found; give a text file of ±1 patterns") from None
    except OSError as e:
        raise RnnkitError(
            f"cannot read patterns file {path}: {e.strerror}; give a text file of ±1 patterns"
        ) from None
    except UnicodeDecodeError:
        raise RnnkitError(
            f"cannot read patterns file {path}: it is not UTF-8 text; give a text file of ±1 patterns"
        ) from None
    rows = []
    for line in lines:
        if re.fullmatch(r"[+-]+", line):
            rows.append([1.0 if ch == "+" else -1.0 for ch in line])
        else:
            try:  # separators at the ends ("1,-1,1,") leave empty tokens: no values
                row = [float(tok) for tok in re.split(r"[,\s]+", line) if tok]
                if not row:
                    raise ValueError
                rows.append(row)
            except ValueError:
                raise RnnkitError(
                    f"patterns file {path}: cannot read the line {line[:40]!r} as numbers"
                ) from None
    if not rows:
        raise RnnkitError(
            f"patterns file {path} holds no patterns; give one ±1 pattern a line (1 -1 1 or +-+)"
        )
    return rows, None


def read_images(paths) -> tuple:
    """Images as ±1 patterns: dark pixels +1, light -1 (threshold at mid-grey).

    Brightness in [0, 1]: 8-bit and 16-bit images are divided by their type's largest value (dividing by the
    brightest pixel made a dark-grey drawing on black read as light); a transparent pixel shows the background,
    white: grey = α · mean(R, G, B) + (1 - α).
    """
    from PIL import Image

    # (one path, a str, was read a character at a time: 'image a not found' for 'a.png'; [] was torch.stack's error)
    # (a numpy array or a pandas Series of paths has no truth value, and an iterator's is no count: as a list)
    # (a 0-d array, np.array('a.png'), is one path, whose iteration was numpy's 'iteration over a 0-d array')
    one = isinstance(paths, (str, bytes, os.PathLike)) or not isinstance(paths, Iterable)  # (None too)
    one = one or getattr(paths, "ndim", None) == 0
    given, paths = paths, [] if one else list(paths)
    if not paths:
        raise RnnkitError(
            f"read_images takes a list of image paths, got {given!r}; give [path] for one image"
        )
    rows, shapes = [], {}
    for path in paths:
        refuse_empty(path, "PNG or JPEG images")
        try:
            array = _pixels(path)
        except (
            FileNotFoundError
        ):  # (it was "cannot read image a.png: [Errno 2] No such file or directory: 'a.png'")
            raise RnnkitError(f"image {path} not found; give PNG or JPEG images") from None
        except (
            Image.DecompressionBombError
        ) as e:  # (more than twice Pillow's MAX_IMAGE_PIXELS: it was a traceback)
            raise RnnkitError(f"cannot read image {path}: {str(e).rstrip('.')}; resize it") from None
        except (OSError, ValueError, SyntaxError) as e:  # (a folder was "[Errno 21] Is a directory: 'd'")
            reason = getattr(e, "strerror", None) or e
            raise RnnkitError(f"cannot read image {path}: {reason}; give PNG or JPEG images") from None
        image = torch.from_numpy(array)
        has_alpha = image.dim() == 3 and image.shape[-1] in (2, 4)  # grey or RGB, then α
        grey = (image[..., :-1] if has_alpha else image).mean(-1) if image.dim() == 3 else image
        if has_alpha:  # transparent: the white background shows
            grey = image[..., -1] * grey + (1 - image[..., -1])
        shapes.setdefault(tuple(grey.shape), path)
        if len(shapes) > 1:
            (h0, w0), (h, w) = next(iter(shapes)), grey.shape
            raise RnnkitError(
                f"images must all have the same size: {shapes[h0, w0]} is {w0}x{h0} pixels but {path} is "
                f"{w}x{h}; resize them to one size"
            )
        rows.append(torch.where(grey < 0.5, 1.0, -1.0).flatten())
    return torch.stack(rows), next(iter(shapes))


def _pixels(path):
    """An image as values in [0, 1] (float32): (H, W) grey, (H, W, 2) grey and α, (H, W, 3) RGB or (H, W, 4) RGBA.

    Read by Pillow as it decodes it, each value divided by its type's largest (255; 65535 for 16-bit grey; a 1-bit
    image 0 or 1); a palette, grey with α, CMYK... image as RGBA. A grey or RGB PNG may name one colour transparent
    (its tRNS chunk, as PNG optimisers write an RGBA image whose transparent pixels share a colour): α is 0 there.
    (matplotlib's imread divided a 2- or 4-bit grey PNG, which Pillow gives as 8-bit, by 3 or 15, so that its
    dark greys read as light, and it dropped the transparent colour: a transparent background read as its colour.)
    """
    import numpy as np
    from PIL import Image

    with Image.open(path) as im:
        # (the file's own pixel format: a transparent value is in its bits, where Pillow's pixels are 8-bit)
        raw = im.tile[0][3] if im.format == "PNG" and im.tile else None
        im.load()
        # (Pillow before 10.3 gives a 16-bit grey PNG as mode I, 32-bit: its values 0..65535, which convert('RGBA')
        # clips at 255, so that every grey above 255 / 65535 read as white)
        grey16 = im.mode == "I" and raw == "I;16B"
        key = im.info.get("transparency") if grey16 or im.mode in ("1", "L", "I;16", "I;16B", "RGB") else None
        if not grey16 and im.mode not in ("1", "L", "I;16", "I;16B", "I;16L", "RGB", "RGBA"):
            im = im.convert("RGBA")
        array = np.asarray(im)
    array = array.astype(np.uint16 if grey16 else array.dtype.newbyteorder("="))
    scale = np.iinfo(array.dtype).max if array.dtype.kind in "iu" else 1
    values = array.astype(np.float32) / np.float32(scale)
    if isinstance(key, (int, tuple)):  # (a palette's is its transparent index, in Pillow's RGBA already)
        if array.dtype == bool:  # (Pillow gives a 1-bit image's transparent value as 0 or 255)
            key = bool(key)
        elif raw in ("L;2", "L;4"):
            key *= 255 // (3 if raw == "L;2" else 15)
        elif raw == "RGB;16B":  # (Pillow keeps a 16-bit colour's high byte)
            key = tuple(k >> 8 for k in key)
        clear = array == np.asarray(key)  # (a key past 8 bits in an 8-bit file: no pixel)
        alpha = ~(clear.all(-1) if array.ndim == 3 else clear)
        values = np.concatenate([values.reshape(*alpha.shape, -1), alpha[..., None].astype(np.float32)], -1)
    return values


def digit_patterns(count: int) -> tuple:
    from rnnkit.energy.digits import SHAPE, load_digits

    if not 1 <= count <= 10:
        raise RnnkitError(f"--digits takes 1 to 10 classes, got {count}")
    x, y = load_digits()
    first = [x[(y == c).nonzero()[0, 0]] for c in range(count)]
    return torch.where(torch.stack(first) > 0.5, 1.0, -1.0), SHAPE
