"""ncnn work that runs in a subprocess (ncnn can crash on odd graphs; a crash must not take edgekit down).

    python -m edgekit.backends.ncnn.worker check PARAM BIN
        -> JSON {"unknown_types": [...], "load_param": rc, "load_model": rc}
    python -m edgekit.backends.ncnn.worker int8 PARAM BIN --calib NPZ --inputs in0,in1 \
        --out-param P --out-bin B --out-table T [--float-layers LAYER,LAYER]
        -> JSON summary of the rewrite (quantized layers, activation scales)

The int8 calibration runs the fp32 model with ncnn itself (fp16/bf16 storage off), so the
activation ranges are those of the runtime that will execute the int8 model.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

FLOAT_ONLY = {"use_fp16_storage": False, "use_fp16_packed": False, "use_fp16_arithmetic": False,
              "use_bf16_storage": False, "use_vulkan_compute": False}


def _net(param: str, weights: str):
    import ncnn

    net = ncnn.Net()
    for key, value in FLOAT_ONLY.items():
        setattr(net.opt, key, value)
    net.opt.num_threads = 1
    if net.load_param(param) != 0 or net.load_model(weights) != 0:
        raise SystemExit(f"ncnn could not load {param} / {weights}")
    return net


def check(param: Path, weights: Path) -> dict:
    import ncnn

    from edgekit.backends.ncnn.format import read_param

    layers = read_param(param.read_text())
    unknown = sorted({layer.type for layer in layers if ncnn.layer_to_index(layer.type) < 0})
    result = {"unknown_types": unknown, "layers": len(layers), "load_param": None, "load_model": None}
    if not unknown:
        net = ncnn.Net()
        net.opt.use_vulkan_compute = False
        result["load_param"] = net.load_param(str(param))
        result["load_model"] = net.load_model(str(weights))
    return result


def int8(args: argparse.Namespace) -> dict:
    import ncnn

    from edgekit.backends.ncnn.int8 import quantize, write_outputs

    net = _net(args.param, args.bin)
    names = args.inputs.split(",")
    with np.load(args.calib, allow_pickle=False) as archive:
        arrays = [archive[f"i{k}"] for k in range(len(names))]

    def run(feed: dict[str, np.ndarray], blobs: list[str]) -> dict[str, np.ndarray]:
        extractor = net.create_extractor()
        for name, value in feed.items():
            extractor.input(name, ncnn.Mat(np.ascontiguousarray(value, dtype=np.float32)).clone())
        out = {}
        for blob in blobs:  # in layer order, so light mode never frees a blob still to be read
            status, mat = extractor.extract(blob)
            if status != 0:
                raise RuntimeError(f"ncnn extract({blob!r}) returned {status}")
            out[blob] = np.array(mat).copy()
        return out

    samples = [{name: arrays[k][s] for k, name in enumerate(names)} for s in range(len(arrays[0]))]
    float_layers = frozenset(name for name in (args.float_layers or "").split(",") if name)
    result = quantize(Path(args.param).read_text(), Path(args.bin).read_bytes(), run, samples, float_layers)
    write_outputs(result, Path(args.out_param), Path(args.out_bin), Path(args.out_table))
    return {"quantized": result.quantized, "kept_float": result.kept_float, "kept_float_types": result.kept_float_types,
            "activation_scales": result.activation_scales, "samples": len(samples)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="edgekit.backends.ncnn.worker")
    sub = parser.add_subparsers(dest="command", required=True)
    check_parser = sub.add_parser("check")
    check_parser.add_argument("param", type=Path)
    check_parser.add_argument("bin", type=Path)
    int8_parser = sub.add_parser("int8")
    int8_parser.add_argument("param")
    int8_parser.add_argument("bin")
    for name in ("calib", "inputs", "out_param", "out_bin", "out_table"):
        int8_parser.add_argument("--" + name.replace("_", "-"), dest=name, required=True)
    int8_parser.add_argument("--float-layers", dest="float_layers", default="")
    args = parser.parse_args(argv)
    result = check(args.param, args.bin) if args.command == "check" else int8(args)
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
