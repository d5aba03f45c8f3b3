"""Rendered text for ddddocr: captcha-like text lines for the recognizers (common.onnx,
common_old.onnx) and click-captcha scenes / text pages for the detector (common_det.onnx), each put
through the preprocessing ddddocr 1.6.1 applies (read from the wheel's source):

- recognizer, ``ddddocr/core/ocr_engine.py`` ``OCREngine._preprocess_image``: resize to height 64 keeping the
  aspect ratio (``ImageProcessor.resize_image``: PIL LANCZOS), convert to grayscale ('L'), /255, shape 1x1x64xW;
- detector, ``ddddocr/core/detection_engine.py`` ``get_bbox`` + ``preproc``: decode as BGR (cv2.IMREAD_COLOR), letterbox
  into 416x416 filled with 114 (cv2.resize INTER_LINEAR, top-left aligned), CHW float32 in 0..255, no normalization.

Text is drawn with Pillow's built-in scalable font (``ImageFont.load_default(size=...)``, Pillow >= 10.1), so the
data is the same on every machine.
"""

from __future__ import annotations

import string

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from bench.zoo.scenes import scene, smooth_field

CAPTCHA_SIZE = (150, 50)  # a common captcha size (w, h); at height 64 it becomes 192 wide
OCR_HEIGHT = 64
DET_SIZE = 416
ALPHABET = string.ascii_letters + string.digits
WORDS = ("edge", "model", "verify", "quantize", "kernel", "tensor", "device", "android", "convert", "report",
         "layer", "weights", "batch", "latency", "shape", "output", "image", "camera", "signal", "phone")


def _font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


def _glyph(char: str, size: int, colour: tuple[int, ...], angle: float) -> Image.Image:
    font = _font(size)
    left, top, right, bottom = font.getbbox(char)
    tile = Image.new("RGBA", (right - left + 8, bottom - top + 8), (0, 0, 0, 0))
    ImageDraw.Draw(tile).text((4 - left, 4 - top), char, font=font, fill=colour)
    return tile.rotate(angle, resample=Image.BICUBIC, expand=True)


def captcha_line(rng: np.random.Generator) -> Image.Image:
    """A 150x50 captcha: 4-6 rotated characters on a pale textured background, interference lines, dots."""
    w, h = CAPTCHA_SIZE
    base = rng.uniform(180, 250, 3)
    texture = smooth_field(rng, h, w, int(rng.integers(3, 8)))[..., None] - 0.5
    background = np.clip(base + texture * rng.uniform(20, 70), 0, 255).astype(np.uint8)
    image = Image.fromarray(background, "RGB")
    draw = ImageDraw.Draw(image)
    text = "".join(rng.choice(list(ALPHABET), int(rng.integers(4, 7))))
    x = rng.uniform(4, 14)
    step = (w - x - 8) / len(text)
    for char in text:
        colour = (*(int(c) for c in rng.integers(0, 140, 3)), 255)
        glyph = _glyph(char, int(rng.integers(26, 38)), colour, rng.uniform(-25, 25))
        y = int(rng.uniform(-4, max(-3, h - glyph.height + 4)))
        image.paste(glyph, (int(x), y), glyph)
        x += step * rng.uniform(0.85, 1.1)
    for _ in range(int(rng.integers(1, 4))):
        points = [(rng.uniform(0, w), rng.uniform(0, h)) for _ in range(3)]
        draw.line(points, fill=tuple(int(c) for c in rng.integers(0, 200, 3)), width=int(rng.integers(1, 3)))
    for _ in range(int(rng.integers(20, 80))):
        px, py = rng.uniform(0, w), rng.uniform(0, h)
        draw.point((px, py), fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
    return image


def ocr_input(image: Image.Image) -> np.ndarray:
    """ddddocr OCREngine._preprocess_image for the bundled models: 1x64xW float32 in 0..1."""
    width = int(image.size[0] * (OCR_HEIGHT / image.size[1]))
    gray = image.resize((width, OCR_HEIGHT), Image.LANCZOS).convert("L")
    return (np.asarray(gray, np.float32) / 255.0)[None]


def click_captcha(rng: np.random.Generator) -> Image.Image:
    """A click captcha: a photo-like scene with 3-5 large scattered characters (what common_det finds)."""
    w, h = int(rng.integers(300, 400)), int(rng.integers(150, 350))
    image = scene(rng, h, w)
    for _ in range(int(rng.integers(3, 6))):
        colour = (*(int(c) for c in rng.integers(0, 256, 3)), 255)
        glyph = _glyph(str(rng.choice(list(ALPHABET))), int(rng.integers(28, 52)), colour, rng.uniform(-40, 40))
        image.paste(glyph, (int(rng.uniform(0, w - glyph.width)), int(rng.uniform(0, h - glyph.height))), glyph)
    return image


def text_page(rng: np.random.Generator) -> Image.Image:
    """A photographed page: lines of words on slightly uneven paper."""
    w, h = int(rng.integers(360, 640)), int(rng.integers(300, 520))
    paper = rng.uniform(215, 250) + (smooth_field(rng, h, w, 4) - 0.5) * rng.uniform(10, 40)
    image = Image.fromarray(np.clip(np.repeat(paper[..., None], 3, axis=2), 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    size = int(rng.integers(14, 30))
    font = _font(size)
    ink = tuple(int(c) for c in rng.integers(0, 70, 3))
    y = rng.uniform(8, 30)
    while y < h - size - 8:
        line = " ".join(rng.choice(WORDS, int(rng.integers(2, 9))))
        draw.text((rng.uniform(8, 40), y), line, font=font, fill=ink)
        y += size * rng.uniform(1.3, 1.9)
    return image


def det_input(image: Image.Image) -> np.ndarray:
    """ddddocr DetectionEngine.get_bbox/preproc: BGR, letterbox to 416x416 (pad 114), CHW float32 0..255."""
    import cv2  # ddddocr itself resizes with OpenCV; opencv-python comes with onnx2tf

    bgr = np.ascontiguousarray(np.asarray(image.convert("RGB"))[..., ::-1])
    padded = np.full((DET_SIZE, DET_SIZE, 3), 114, np.uint8)
    r = min(DET_SIZE / bgr.shape[0], DET_SIZE / bgr.shape[1])
    resized = cv2.resize(bgr, (int(bgr.shape[1] * r), int(bgr.shape[0] * r)), interpolation=cv2.INTER_LINEAR).astype(np.uint8)
    padded[: int(bgr.shape[0] * r), : int(bgr.shape[1] * r)] = resized
    return np.ascontiguousarray(padded.transpose(2, 0, 1), dtype=np.float32)


def ocr_samples(rng: np.random.Generator, count: int) -> np.ndarray:
    return np.stack([ocr_input(captcha_line(rng)) for _ in range(count)])


def det_samples(rng: np.random.Generator, count: int) -> np.ndarray:
    return np.stack([det_input(click_captcha(rng) if i % 2 == 0 else text_page(rng)) for i in range(count)])
