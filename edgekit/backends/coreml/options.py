"""The Core ML backend's options: [backend_options] plus the deployment target and compute units from [hardware]
(docs/coreml.md)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from edgekit.backends.options import BackendOptions, option

COMPUTE_UNITS = ("ALL", "CPU_ONLY", "CPU_AND_GPU", "CPU_AND_NE")
TARGET_PATTERN = re.compile(r"^(iOS|macOS|watchOS|tvOS)(\d+)$")
MIN_MLPROGRAM = {"iOS": 15, "macOS": 12, "watchOS": 8, "tvOS": 15}
MIN_ACTIVATION_QUANT = {"iOS": 17, "macOS": 14, "watchOS": 10, "tvOS": 17}


@dataclass(frozen=True)
class CoreMLOptions(BackendOptions):
    label = "Core ML"
    docs = "docs/coreml.md"

    deployment_target: str = option("iOS16", table="hardware", key="minimum_deployment_target")
    compute_units: str = option("ALL", choices=COMPUTE_UNITS, table="hardware")
    int8_weights: str = option("linear", choices=("linear", "palettize"))  # int8 per-channel symmetric, or an n-bit k-means table
    palettize_bits: int = option(6, choices=(4, 6, 8))
    weight_threshold: int = option(2048, minimum=0)  # weights with fewer elements stay float (coremltools' default)
    int8_activations: bool = option(False)
    image_input: bool = option(False)
    author: str = option("edgekit")
    model_version: str | int | None = option(None)

    @property
    def os_name(self) -> str:
        return TARGET_PATTERN.match(self.deployment_target).group(1)  # type: ignore[union-attr]

    @property
    def os_major(self) -> int:
        return int(TARGET_PATTERN.match(self.deployment_target).group(2))  # type: ignore[union-attr]

    def validate(self, where: str, tables: dict[str, dict[str, Any]]) -> None:
        key = "hardware.minimum_deployment_target"
        match = TARGET_PATTERN.match(self.deployment_target)
        if match is None:
            raise self.error(where, key, f"must look like 'iOS16' or 'macOS14'; got {self.deployment_target!r}")
        if self.os_major < MIN_MLPROGRAM[self.os_name]:
            raise self.error(where, key, f"ML Program packages need {self.os_name}{MIN_MLPROGRAM[self.os_name]} or newer; got {self.deployment_target}")
        if self.int8_activations and self.os_major < MIN_ACTIVATION_QUANT[self.os_name]:
            raise self.error(where, "backend_options.int8_activations",
                             f"int8 activations need {self.os_name}{MIN_ACTIVATION_QUANT[self.os_name]}+ "
                             f"(hardware.minimum_deployment_target is {self.deployment_target}); raise the target or set int8_activations = false")
