"""Images become model input here: (28, 28) float32 in [0, 1], ink bright on a dark background,
as in MNIST. The datasets, the camera, `cdz recall` and the API all call these functions, so a model
trained on files sees exactly what it later sees from a camera or a user's picture.
"""

from __future__ import annotations


import cv2
import numpy as np

from sensors.errors import FeatureError

IMAGE_SIZE = 28


def image_to_stimulus(img: np.ndarray) -> np.ndarray:
    """Any grey or colour image -> (28, 28) float32 in [0, 1], ink bright on dark.

    Colour channels are averaged (so RGB and BGR give the same result; alpha is
    ignored). A bright background (median above mid-grey) is inverted so that
    photos of dark ink on paper look like MNIST. Non-square images are padded
    with their background value to a square first, so digits keep their shape.
    """
    grey = to_unit_grey(img)
    if np.median(grey) > 0.5:
        grey = 1.0 - grey
    if grey.shape != (IMAGE_SIZE, IMAGE_SIZE):
        grey = _pad_to_square(grey)
        grey = cv2.resize(grey.astype(np.float32), (IMAGE_SIZE, IMAGE_SIZE),
                          interpolation=cv2.INTER_AREA)
    return np.clip(grey, 0.0, 1.0).astype(np.float32)


def to_unit_grey(img: np.ndarray) -> np.ndarray:
    """Validate an image and return a 2-D float64 copy scaled to [0, 1]."""
    arr = np.asarray(img)
    if arr.size == 0:
        raise FeatureError(f"image is empty (shape {arr.shape})")
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (1, 3, 4))):
        raise FeatureError(f"image must be HxW or HxWx1/3/4, got shape {arr.shape}")
    if arr.ndim == 3:
        arr = arr[..., :3]  # alpha is ignored
    arr = _scale_to_unit(arr)
    if arr.ndim == 3:
        arr = arr.mean(axis=2)
    arr = arr.astype(np.float64, copy=False)
    if not np.all(np.isfinite(arr)):
        raise FeatureError("image contains NaN or infinite values")
    if float(arr.max() - arr.min()) < 1.0 / 255.0:
        raise FeatureError(
            f"image is blank: no contrast at all (all pixels ~{float(arr.mean()):.3g})")
    return arr


def _scale_to_unit(arr: np.ndarray) -> np.ndarray:
    """Map pixel values to [0, 1] according to their type and range."""
    if arr.dtype == np.bool_:
        return arr.astype(np.float64)
    if arr.dtype == np.uint8:
        return arr.astype(np.float64) / 255.0
    if np.issubdtype(arr.dtype, np.unsignedinteger):
        return arr.astype(np.float64) / float(np.iinfo(arr.dtype).max)
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise FeatureError(f"image has unsupported dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise FeatureError("image contains NaN or infinite values")
    lo, hi = float(arr.min()), float(arr.max())
    if lo >= 0.0 and hi <= 1.0:
        return arr
    if lo >= 0.0 and hi <= 255.0:
        return arr / 255.0  # floats holding 8-bit values
    return (arr - lo) / (hi - lo) if hi > lo else arr - lo


def _pad_to_square(grey: np.ndarray) -> np.ndarray:
    """Pad with the background (median) value so resizing keeps the aspect ratio."""
    h, w = grey.shape
    if h == w:
        return grey
    side = max(h, w)
    top, left = (side - h) // 2, (side - w) // 2
    out = np.full((side, side), np.median(grey), dtype=np.float64)
    out[top:top + h, left:left + w] = grey
    return out


MNIST_BOX = 20  # MNIST fits each digit's ink box into 20x20 ...
MNIST_CENTRE = 14  # ... and shifts its centre of mass to pixel (14, 14) of the 28x28 field
_INK_BOX_LEVEL = 0.15  # ink fainter than this share of the peak (blur halo, noise) does not widen the box


def ink_to_mnist(grey_ink: np.ndarray) -> np.ndarray:
    """A crop with bright ink on dark (float in [0, 1]) -> (28, 28) float32 made the way MNIST was.

    The ink's bounding box is scaled (aspect kept, anti-aliased) to fit 20x20 and
    placed so that its centre of mass falls on pixel (14, 14), shifted by whole
    pixels and clipped at the border, as LeCun et al. did. The ink is scaled to a
    peak of 1 first, because a camera's contrast varies while MNIST's does not.
    A camera crop then looks like a training digit whatever its size and position.
    """
    arr = np.asarray(grey_ink, dtype=np.float64)
    if arr.ndim != 2 or arr.size == 0:
        raise FeatureError(f"ink crop must be a non-empty 2-D array, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise FeatureError("ink crop contains NaN or infinite values")
    arr = np.clip(arr, 0.0, 1.0)
    peak = float(arr.max())
    if peak < 1.0 / 255.0:
        raise FeatureError(f"ink crop of shape {arr.shape} is blank (no ink)")
    arr = arr / peak
    rows = np.flatnonzero((arr > _INK_BOX_LEVEL).any(axis=1))
    cols = np.flatnonzero((arr > _INK_BOX_LEVEL).any(axis=0))
    box = arr[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].astype(np.float32)
    h, w = box.shape
    scale = MNIST_BOX / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))  # cv2 wants (width, height)
    interp = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
    small = np.clip(cv2.resize(box, size, interpolation=interp), 0.0, 1.0)
    return _place_by_mass(small)


def _place_by_mass(small: np.ndarray) -> np.ndarray:
    """Paste `small` into a 28x28 field with its centre of mass on (14, 14) (whole-pixel shift, clipped)."""
    mass = float(small.sum())
    ys, xs = np.indices(small.shape)
    cy = float((ys * small).sum()) / mass
    cx = float((xs * small).sum()) / mass
    top, left = int(round(MNIST_CENTRE - cy)), int(round(MNIST_CENTRE - cx))
    out = np.zeros((IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
    y0, x0 = max(top, 0), max(left, 0)
    y1 = min(top + small.shape[0], IMAGE_SIZE)
    x1 = min(left + small.shape[1], IMAGE_SIZE)
    out[y0:y1, x0:x1] = small[y0 - top:y1 - top, x0 - left:x1 - left]
    return out


def _full_scale(arr: np.ndarray) -> float:
    """The value of full intensity (white, opaque) for an image's pixel type."""
    if np.issubdtype(arr.dtype, np.integer):
        return float(np.iinfo(arr.dtype).max)
    with np.errstate(invalid="ignore"):
        peak = float(np.max(arr)) if arr.size else 1.0  # NaN: refused later by image_to_stimulus
    return 1.0 if not np.isfinite(peak) or peak <= 1.0 else (255.0 if peak <= 255.0 else 65535.0)


def _grey(img: np.ndarray) -> np.ndarray:
    """HxW, or HxWxC in OpenCV's BGR(A) order -> HxW grey, with the weights IMREAD_GRAYSCALE uses."""
    if img.ndim == 2:
        return img
    channels = img.shape[2]
    if channels in (1, 2):
        return np.ascontiguousarray(img[..., 0])
    if channels not in (3, 4):
        raise FeatureError(f"image has {channels} channels (1 to 4 are understood)")
    if img.dtype in (np.uint8, np.uint16, np.float32):
        return cv2.cvtColor(img, cv2.COLOR_BGRA2GRAY if channels == 4 else cv2.COLOR_BGR2GRAY)
    return img[..., :3].astype(np.float32).mean(axis=2)


def composite_on_white(img: np.ndarray) -> np.ndarray:
    """A decoded image -> HxW grey; one with alpha (grey+alpha or BGRA) is painted over white paper first.

    Transparent pixels become white, so a drawing in dark ink on a transparent
    background looks like ink on paper. An alpha channel that is zero everywhere
    is taken as unused (some 32-bit BMPs and TIFFs) and ignored.
    """
    arr = np.asarray(img)
    if arr.ndim != 3:
        return arr  # 2-D already; other shapes are refused by image_to_stimulus
    grey = _grey(arr)
    if arr.shape[2] not in (2, 4):
        return grey
    alpha = np.ascontiguousarray(arr[..., -1])
    if not np.any(alpha):
        return grey
    full = _full_scale(arr)
    if arr.dtype in (np.uint8, np.uint16):  # white - (white - grey) * alpha, rounded, in the image's own type
        ink = cv2.multiply(arr.dtype.type(full) - grey, alpha, scale=1.0 / full)
        return arr.dtype.type(full) - ink
    a = np.clip(alpha.astype(np.float32) / np.float32(full), 0.0, 1.0)
    out = np.float32(full) - (np.float32(full) - grey.astype(np.float32)) * a
    if np.issubdtype(arr.dtype, np.integer):
        info = np.iinfo(arr.dtype)
        return np.clip(np.rint(out), info.min, info.max).astype(arr.dtype)
    return out
