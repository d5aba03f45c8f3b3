"""The zoo's catalog: every model, where it comes from, its input, and the data it sees in use."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from bench.zoo import faces, scenes, speech, text


@dataclass(frozen=True)
class Dataset:
    name: str
    make: Callable[[np.random.Generator, int], np.ndarray]
    seed: int
    version: int  # bump when the generator changes: cached files are then rewritten
    describe: str


@dataclass(frozen=True)
class ZooModel:
    name: str
    source: str  # key into fetch.Fetched.files, or "export:<exporter>"
    input_name: str
    input_shape: tuple[int, ...]  # batch 1; what --input-shape fixes when the model's dims are symbolic
    dataset: Dataset
    origin: str  # package and file, for the README
    outputs: tuple[str, ...] = ()  # export only
    weights: tuple[str, ...] = field(default_factory=tuple)  # export only: the fetched files it needs
    ci: bool = False  # built in tests/test_zoo.py


IMAGES = Dataset("imagenet224", scenes.imagenet_samples, 1001, 1,
                 "photo-like scenes, resize 256 + centre crop 224, ImageNet mean/std, RGB NCHW")
CAPTCHAS = Dataset("captcha_lines", text.ocr_samples, 1002, 1,
                   "rendered 150x50 captcha lines (4-6 chars), ddddocr: height 64 LANCZOS, gray, /255 -> 1x1x64x192")
DET = Dataset("text_scenes416", text.det_samples, 1003, 1,
              "click captchas and text pages, ddddocr: BGR, letterbox 416 (pad 114), 0..255 NCHW")
PNET = Dataset("mtcnn_frames", faces.pnet_samples, 1004, 1,
               "640x480 frames with drawn faces at MTCNN's first pyramid level (289x385), area resize, (x-127.5)/128")
RNET = Dataset("face_crops24", lambda rng, n: faces.crop_samples(rng, n, 24), 1005, 1,
               "jittered face candidate crops (20% background), area resize to 24x24, (x-127.5)/128")
ONET = Dataset("face_crops48", lambda rng, n: faces.crop_samples(rng, n, 48), 1006, 1,
               "jittered face candidate crops (20% background), area resize to 48x48, (x-127.5)/128")
MELS = Dataset("speech_mels160", speech.mel_samples, 1007, 1,
               "synthetic voiced speech, -30 dBFS, power mel (40 bands, 25 ms / 10 ms, 16 kHz), 160-frame partials")

_LIGHT = (("alexnet", "bvlc_alexnet", "data_0"), ("densenet121", "densenet121", "data_0"), ("inception_v1", "inception_v1", "data_0"),
          ("inception_v2", "inception_v2", "data_0"), ("resnet50", "resnet50", "gpu_0/data_0"), ("shufflenet", "shufflenet", "gpu_0/data_0"),
          ("squeezenet", "squeezenet", "data_0"), ("vgg19", "vgg19", "data_0"), ("zfnet512", "zfnet512", "gpu_0/data_0"))

MODELS: dict[str, ZooModel] = {
    **{f"light_{short}": ZooModel(f"light_{short}", f"onnx/light_{file}.onnx", name, (1, 3, 224, 224), IMAGES,
                                  f"onnx==1.19.1 backend/test/data/light/light_{file}.onnx (constant weights)", ci=True)
       for short, file, name in _LIGHT},
    "ddddocr_det": ZooModel("ddddocr_det", "ddddocr/ddddocr/common_det.onnx", "images", (1, 3, 416, 416), DET,
                            "ddddocr==1.6.1 common_det.onnx (YOLOX-style detector)"),
    "ddddocr_ocr": ZooModel("ddddocr_ocr", "ddddocr/ddddocr/common.onnx", "input1", (1, 1, 64, 192), CAPTCHAS,
                            "ddddocr==1.6.1 common.onnx (CNN + LSTM + CTC, beta=True)"),
    "ddddocr_ocr_old": ZooModel("ddddocr_ocr_old", "ddddocr/ddddocr/common_old.onnx", "input1", (1, 1, 64, 192), CAPTCHAS,
                                "ddddocr==1.6.1 common_old.onnx (ORT-quantized, the default recognizer)"),
    "mtcnn_pnet": ZooModel("mtcnn_pnet", "export:mtcnn:PNet", "image", (1, 3, *faces.PNET_SIZE), PNET,
                           "facenet-pytorch==2.6.0 data/pnet.pt", ("bbox_reg", "prob"), ("facenet-pytorch/facenet_pytorch/data/pnet.pt",), ci=True),
    "mtcnn_rnet": ZooModel("mtcnn_rnet", "export:mtcnn:RNet", "image", (1, 3, 24, 24), RNET,
                           "facenet-pytorch==2.6.0 data/rnet.pt", ("bbox_reg", "prob"), ("facenet-pytorch/facenet_pytorch/data/rnet.pt",)),
    "mtcnn_onet": ZooModel("mtcnn_onet", "export:mtcnn:ONet", "image", (1, 3, 48, 48), ONET,
                           "facenet-pytorch==2.6.0 data/onet.pt", ("bbox_reg", "landmarks", "prob"), ("facenet-pytorch/facenet_pytorch/data/onet.pt",)),
    "resemblyzer": ZooModel("resemblyzer", "export:resemblyzer", "mels", (1, 160, 40), MELS,
                            "Resemblyzer==0.1.4 pretrained.pt (3-layer LSTM speaker encoder)", ("embedding",),
                            ("resemblyzer/resemblyzer/pretrained.pt",)),
}
