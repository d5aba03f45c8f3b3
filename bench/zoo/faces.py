"""Face-like inputs for MTCNN (facenet-pytorch 2.6.0), preprocessed as
``facenet_pytorch/models/utils/detect_face.py`` ``detect_face`` does: RGB HWC uint8 -> NCHW float, resampled with
``imresample`` (``torch.nn.functional.interpolate(mode="area")``), then ``(x - 127.5) * 0.0078125``.

- P-Net sees whole frames at each pyramid scale; we use the first pyramid level of a 640x480 frame with the
  default ``min_face_size=20`` (scale 12/20 = 0.6): ``int(480*0.6+1) x int(640*0.6+1)`` = 289x385.
- R-Net sees 24x24 and O-Net 48x48 crops of P-Net/R-Net candidate boxes: faces with the box jitter a
  detector leaves, plus some non-face candidates (background patches), as in use.

Faces are drawn (skin-toned head, hair, eyes, brows, nose, mouth, side lighting) on photo-like scenes.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from bench.zoo.scenes import scene

FRAME = (480, 640)  # h, w
PNET_SIZE = (int(480 * 0.6 + 1), int(640 * 0.6 + 1))  # (289, 385)
SKIN = np.array([[255, 219, 172], [241, 194, 125], [224, 172, 105], [198, 134, 66], [141, 85, 36], [92, 59, 36]], np.float32)


def draw_face(image: Image.Image, rng: np.random.Generator, box: tuple[float, float, float, float]) -> None:
    """Draw a frontal-ish face filling ``box`` (x0, y0, x1, y1) onto ``image``."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    draw = ImageDraw.Draw(image)
    skin = SKIN[rng.integers(0, len(SKIN))] * rng.uniform(0.85, 1.05)
    hair = tuple(int(c) for c in rng.uniform(10, 120, 3) * np.array([1.0, 0.8, 0.6]))
    turn = rng.uniform(-0.08, 0.08) * w  # a slight head turn moves the features sideways
    draw.ellipse([x0 - 0.04 * w, y0 - 0.08 * h, x1 + 0.04 * w, y0 + 0.55 * h], fill=hair)
    for k in range(5):  # head, lit from one side
        shade = 0.75 + 0.06 * k
        inset = k * 0.03 * w
        draw.ellipse([x0 + inset + k * 0.02 * w, y0 + 0.05 * h + inset, x1 - inset + k * 0.02 * w, y1 - inset],
                     fill=tuple(int(min(255, c * shade)) for c in skin))
    eye_y = y0 + h * rng.uniform(0.40, 0.46)
    for side in (-1, 1):
        ex = x0 + w / 2 + turn + side * w * rng.uniform(0.17, 0.22)
        ew, eh = w * 0.09, h * 0.035
        draw.ellipse([ex - ew, eye_y - eh, ex + ew, eye_y + eh], fill=(235, 235, 230))
        iris = tuple(int(c) for c in rng.uniform(20, 110, 3))
        draw.ellipse([ex - eh * 1.1, eye_y - eh * 1.1, ex + eh * 1.1, eye_y + eh * 1.1], fill=iris)
        draw.line([ex - ew * 1.2, eye_y - h * 0.07, ex + ew * 1.2, eye_y - h * 0.08 + side * h * 0.005], fill=hair, width=max(1, int(h * 0.025)))
    nose_x = x0 + w / 2 + turn * 1.3
    draw.line([nose_x, eye_y + h * 0.05, nose_x + w * 0.03, y0 + h * 0.66], fill=tuple(int(c * 0.7) for c in skin), width=max(1, int(w * 0.02)))
    mouth_y = y0 + h * rng.uniform(0.74, 0.80)
    mw = w * rng.uniform(0.14, 0.2)
    lips = (int(skin[0] * 0.75), int(skin[1] * 0.45), int(skin[2] * 0.45))
    draw.chord([nose_x - mw, mouth_y - h * 0.04, nose_x + mw, mouth_y + h * 0.04], 0, 180, fill=lips)


def _normalize(image: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """imresample (area interpolation == PIL's box filter) then (x - 127.5) * 0.0078125, CHW."""
    resized = image.resize((size[1], size[0]), Image.BOX)
    return ((np.asarray(resized, np.float32) - 127.5) * 0.0078125).transpose(2, 0, 1)


def frame_with_faces(rng: np.random.Generator) -> Image.Image:
    h, w = FRAME
    image = scene(rng, h, w)
    for _ in range(int(rng.integers(1, 4))):
        fw = rng.uniform(40, 200)
        x0, y0 = rng.uniform(0, w - fw), rng.uniform(0, h - fw * 1.25)
        draw_face(image, rng, (x0, y0, x0 + fw, y0 + fw * 1.25))
    return image.filter(ImageFilter.GaussianBlur(rng.uniform(0.2, 0.8)))


def pnet_samples(rng: np.random.Generator, count: int) -> np.ndarray:
    return np.stack([_normalize(frame_with_faces(rng), PNET_SIZE) for _ in range(count)])


def candidate_crop(rng: np.random.Generator, side: int) -> np.ndarray:
    """A candidate box as R-Net/O-Net see it: usually a face with box jitter, sometimes background."""
    canvas = 160
    image = scene(rng, canvas, canvas)
    face = rng.random() < 0.8
    if face:
        fw = canvas * 0.62
        x0, y0 = (canvas - fw) / 2, (canvas - fw * 1.2) / 2
        draw_face(image, rng, (x0, y0, x0 + fw, y0 + fw * 1.2))
    image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.2, 1.0)))
    # candidate boxes are square (rerec) and off by up to ~15% in position and size
    size = canvas * 0.7 * rng.uniform(0.85, 1.15)
    cx, cy = canvas / 2 + rng.uniform(-0.15, 0.15) * size, canvas / 2 + rng.uniform(-0.15, 0.15) * size
    crop = image.crop((int(cx - size / 2), int(cy - size / 2), int(cx + size / 2), int(cy + size / 2)))
    return _normalize(crop, (side, side))


def crop_samples(rng: np.random.Generator, count: int, side: int) -> np.ndarray:
    return np.stack([candidate_crop(rng, side) for _ in range(count)])
