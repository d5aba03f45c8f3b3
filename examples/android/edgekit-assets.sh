#!/usr/bin/env sh
# Build and verify a TFLite model with edgekit, then place it in an Android app's assets.
# Called by the Gradle task in build.gradle.kts; usable on its own:
#   examples/android/edgekit-assets.sh MODEL.onnx app/src/main/assets [CALIBRATION] [TARGET] [PRECISION]
# Exit status is edgekit's (0 built+verified, 1 verification failed, 3 bad input, ...); the asset is only
# replaced when the build succeeded and verified, so a failing build never ships a half-good model.
set -eu
MODEL=$1
ASSETS=$2
CALIB=${3:-}
TARGET=${4:-android}
PRECISION=${5:-int8}
WORK=${EDGEKIT_BUILD_DIR:-build/edgekit}/$TARGET

set -- build "$MODEL" --target "$TARGET" --precision "$PRECISION" --out "$WORK" --quiet
if [ -n "$CALIB" ]; then set -- "$@" --calib "$CALIB"; fi
edgekit "$@"

ARTIFACT=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["artifact"])' "$WORK/edgekit-report.json")
mkdir -p "$ASSETS"
cp "$WORK/$ARTIFACT" "$ASSETS/.$ARTIFACT.tmp"
mv -f "$ASSETS/.$ARTIFACT.tmp" "$ASSETS/$ARTIFACT"
cp "$WORK/edgekit-report.json" "$ASSETS/.edgekit-report.json.tmp"
mv -f "$ASSETS/.edgekit-report.json.tmp" "$ASSETS/edgekit-report.json"
echo "edgekit: $ASSETS/$ARTIFACT"
