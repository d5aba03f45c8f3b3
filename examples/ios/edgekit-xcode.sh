#!/bin/sh
# Xcode "Run Script" build phase: build and verify the Core ML package with edgekit.
# Add a Run Script phase before "Compile Sources" with:  "${SRCROOT}/tools/edgekit-xcode.sh"
# and list ${SRCROOT}/Models/model.onnx as an input file, ${SRCROOT}/Generated/model.mlpackage as an output file.
# Variables (Xcode sets SRCROOT and DERIVED_FILE_DIR; the rest are optional):
#   EDGEKIT_MODEL      default ${SRCROOT}/Models/model.onnx
#   EDGEKIT_TARGET     default ios
#   EDGEKIT_PRECISION  default fp16
#   EDGEKIT_OUTPUT     default ${SRCROOT}/Generated
set -eu
MODEL=${EDGEKIT_MODEL:-$SRCROOT/Models/model.onnx}
TARGET=${EDGEKIT_TARGET:-ios}
PRECISION=${EDGEKIT_PRECISION:-fp16}
OUTPUT=${EDGEKIT_OUTPUT:-$SRCROOT/Generated}
WORK=${DERIVED_FILE_DIR:-$SRCROOT/build}/edgekit

if ! command -v edgekit >/dev/null 2>&1; then
  echo "error: edgekit not found on PATH; pip install 'edgekit[coreml]' (Xcode runs scripts with a minimal PATH)" >&2
  exit 127
fi
edgekit build "$MODEL" --target "$TARGET" --precision "$PRECISION" --out "$WORK" --quiet
ARTIFACT=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["artifact"])' "$WORK/edgekit-report.json")
mkdir -p "$OUTPUT"
rm -rf "$OUTPUT/.$ARTIFACT.tmp"
cp -R "$WORK/$ARTIFACT" "$OUTPUT/.$ARTIFACT.tmp"
rm -rf "$OUTPUT/$ARTIFACT"
mv "$OUTPUT/.$ARTIFACT.tmp" "$OUTPUT/$ARTIFACT"
cp "$WORK/edgekit-report.json" "$OUTPUT/edgekit-report.json"
echo "note: edgekit built $OUTPUT/$ARTIFACT"
