"""What the zoo fetches: pinned wheels, the files taken from them, and their sha256.

A file whose sha256 differs from the one recorded here is an error (``ManifestMismatch``), never
a warning: the zoo measures these exact bytes. Refresh a pin by hand, with a reason in the commit.
"""

from __future__ import annotations

from dataclasses import dataclass


class ManifestMismatch(RuntimeError):
    """A fetched or extracted file is not the one the manifest pins."""


@dataclass(frozen=True)
class Wheel:
    requirement: str  # what `pip download` gets, pinned with ==
    filename: str
    sha256: str
    members: dict[str, str]  # path inside the wheel -> sha256 of the extracted file


WHEELS: dict[str, Wheel] = {
    "ddddocr": Wheel(
        "ddddocr==1.6.1", "ddddocr-1.6.1-py3-none-any.whl",
        "c7c70f4ae2d0335440ae8b272eea48c9f6888ecef46785fe2311f0c97a133935",
        {
            "ddddocr/common_det.onnx": "6faa8ea85a8c1a634e5050c4a138fca10f30194e0d7abbe9ade1fcd423af6ed6",
            "ddddocr/common.onnx": "33b5cd351ee94e73a6bf8fa18c415ed8b819b3ffd342e267c30d8ad8334e34e8",
            "ddddocr/common_old.onnx": "b8f2ad9cbc1f2e3922a6cb9459e30824e7e2467f3fb4fd61420640e34ea0bf68",
        },
    ),
    "facenet-pytorch": Wheel(
        "facenet-pytorch==2.6.0", "facenet_pytorch-2.6.0-py3-none-any.whl",
        "ecb82b27beb226d106f2219efe8f829b01b87a8595badd01545679bdb9f19cca",
        {
            "facenet_pytorch/data/pnet.pt": "a2a71925e0b9996a42f63e47efc1ca19043e69558b5c523b978d611dfae49c8f",
            "facenet_pytorch/data/rnet.pt": "bbb937de72efc9ef83b186c49f5f558467a1d7e3453a8ece0d71a886633f6a86",
            "facenet_pytorch/data/onet.pt": "165bfbe42940416ccfb977545cf0e976d5bf321f67083ae2aaaa5c764280118d",
            # the module definitions PNet/RNet/ONet are taken from here (see export.py)
            "facenet_pytorch/models/mtcnn.py": "29a965963337313068ab335cbc48f4a4facc2e5857756ef7b9ab11e5c1d6b620",
        },
    ),
    "resemblyzer": Wheel(
        "Resemblyzer==0.1.4", "Resemblyzer-0.1.4-py3-none-any.whl",
        "8f12eb2f1a9982d32e8db7856de754709b59c93a77bcf0ff536584b619a9dd1f",
        {
            "resemblyzer/pretrained.pt": "39373b86598fa3da9fcddee6142382efe09777e8d37dc9c0561f41f0070f134e",
            "resemblyzer/hparams.py": "511abe53b7515263ff33e1c0eaf82f7ffaa165f977b90def312182a15dfb81ae",
        },
    ),
}

# The onnx package ships these under onnx/backend/test/data/light: real architectures whose float
# weights were replaced by ConstantOfShape (so they test op coverage, not accuracy). They are taken
# from the installed onnx, whose version is pinned in constraints.txt.
ONNX_VERSION = "1.19.1"
LIGHT_DIR = "backend/test/data/light"
LIGHT_MODELS: dict[str, str] = {
    "light_bvlc_alexnet.onnx": "2afa78cef5a88aed9d6e3d63fb92bd330c9177ac150d19189c6b3e7204ba0212",
    "light_densenet121.onnx": "49ddb5712797d6164f1d864bedaad927de4f3909ad1b4ba390a92c2f8150e9f6",
    "light_inception_v1.onnx": "bb7a0e6c370c709f5615eeef961b43628de13d0009ae4d6f4bfb0d5aea5d8270",
    "light_inception_v2.onnx": "224d77d55b26559a959db627c3f417a623fbf3b3000d25f0939327aa935d933f",
    "light_resnet50.onnx": "05e77a5c9c9ce0913f549a50d6ebaced5e0ff6817b61e09bae26e4c5bd9055e4",
    "light_shufflenet.onnx": "c6f406d62be36d6b4572542c0950a2abd59f56237068793290680bba89fbafe5",
    "light_squeezenet.onnx": "770b0f3c8623e18bf58b53754d710051b4c268248422142980a132bbe6dfe908",
    "light_vgg19.onnx": "8e547d732b3a3d66eeb8fa64a026adb994d3db552f0bbd52e436d06300d89afe",
    "light_zfnet512.onnx": "6444bb58b98c3d14f551a3bdb83eea9e5db7e147790db3115c447e9c9a8338b0",
}


def check_sha256(path, expected: str, what: str) -> None:
    from edgekit.fsutil import sha256_file

    actual = sha256_file(path)
    if actual != expected:
        raise ManifestMismatch(f"{what}: sha256 {actual} differs from the manifest's {expected} ({path}); "
                               "the zoo only measures the pinned bytes: delete the cached file to fetch it again, "
                               "or update bench/zoo/manifest.py on purpose")
