"""Natural-looking RGB scenes (sky, ground, shaded shapes, smooth texture, fine grain), the
stand-in for photographs: backgrounds for faces and captchas, and inputs for the image classifiers."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFilter


def smooth_field(rng: np.random.Generator, height: int, width: int, cells: int) -> np.ndarray:
    """Low-frequency texture in [0, 1]: a coarse random grid upsampled bicubically."""
    coarse = (rng.random((cells, cells)) * 255).astype(np.uint8)
    field = Image.fromarray(coarse, "L").resize((width, height), Image.BICUBIC)
    return np.asarray(field, np.float32) / 255.0


def _gradient(top: np.ndarray, bottom: np.ndarray, height: int, width: int) -> np.ndarray:
    t = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    return np.broadcast_to(top * (1 - t) + bottom * t, (height, width, 3))


def scene(rng: np.random.Generator, height: int, width: int, shapes: int | None = None) -> Image.Image:
    """Sky over ground with a few shaded objects; every draw differs (seeded by ``rng``)."""
    horizon = int(height * rng.uniform(0.3, 0.7))
    sky = _gradient(rng.uniform([40, 90, 150], [120, 170, 240]), rng.uniform([170, 190, 210], [240, 240, 250]), horizon, width)
    ground = _gradient(rng.uniform([60, 70, 20], [150, 140, 90]), rng.uniform([30, 40, 10], [100, 90, 60]), height - horizon, width)
    pixels = np.concatenate([sky, ground], axis=0).copy()
    texture = smooth_field(rng, height, width, int(rng.integers(4, 12))) - 0.5
    pixels += texture[..., None] * rng.uniform(20, 60)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(3, 8)) if shapes is None else shapes):
        _shaded_shape(rng, draw, height, width)
    image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2)))
    grain = rng.normal(0.0, rng.uniform(1.0, 4.0), (height, width, 1))
    return Image.fromarray(np.clip(np.asarray(image, np.float32) + grain, 0, 255).astype(np.uint8), "RGB")


def _shaded_shape(rng: np.random.Generator, draw: ImageDraw.ImageDraw, height: int, width: int) -> None:
    cx, cy = rng.uniform(0, width), rng.uniform(0, height)
    rx, ry = rng.uniform(0.05, 0.3) * width, rng.uniform(0.05, 0.3) * height
    colour = rng.integers(20, 235, 3)
    kind = rng.integers(0, 3)
    # concentric fills, lighter towards one side: a cheap Lambertian look
    steps = 6
    for k in range(steps):
        shrink = 1 - k / (steps + 1)
        shift = k * 0.04
        tone = tuple(int(min(255, c * (0.7 + 0.1 * k))) for c in colour)
        box = [cx - rx * shrink - shift * rx, cy - ry * shrink - shift * ry, cx + rx * shrink - shift * rx, cy + ry * shrink - shift * ry]
        if kind == 0:
            draw.ellipse(box, fill=tone)
        elif kind == 1:
            draw.rectangle(box, fill=tone)
        else:
            draw.polygon([(box[0], box[3]), ((box[0] + box[2]) / 2, box[1]), (box[2], box[3])], fill=tone)


IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def imagenet_input(image: Image.Image, size: int = 224) -> np.ndarray:
    """torchvision's classic eval transform: resize the short side to size*256/224, centre-crop, scale to
    0..1, ImageNet mean/std, CHW float32."""
    short = round(size * 256 / 224)
    w, h = image.size
    scale = short / min(w, h)
    image = image.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BILINEAR)
    w, h = image.size
    left, top = (w - size) // 2, (h - size) // 2
    pixels = np.asarray(image.crop((left, top, left + size, top + size)), np.float32) / 255.0
    return ((pixels - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)


def imagenet_samples(rng: np.random.Generator, count: int, size: int = 224) -> np.ndarray:
    """(count, 3, size, size) scenes of varied aspect ratio, ImageNet-normalized."""
    out = []
    for _ in range(count):
        h = int(rng.integers(240, 400))
        w = int(h * rng.uniform(0.75, 1.6))
        out.append(imagenet_input(scene(rng, h, w), size))
    return np.stack(out)
