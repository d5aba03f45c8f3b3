// Excerpt of an Android app module's build.gradle.kts: build the .tflite with edgekit before every build.
// Unchanged inputs hit edgekit's build cache (about 0.3 s), so this is cheap on every build.
// Requires `edgekit` on PATH (pip install 'edgekit[tflite]').

val edgekitModel = rootProject.file("models/classifier.onnx")
val edgekitCalibration = rootProject.file("models/calibration")   // .npy/.npz files or images
val edgekitAssets = layout.projectDirectory.dir("src/main/assets")

val buildEdgeModel by tasks.registering(Exec::class) {
    group = "edgekit"
    description = "Builds and verifies the on-device model with edgekit (TFLite, int8)."
    inputs.file(edgekitModel)
    inputs.dir(edgekitCalibration)
    outputs.dir(edgekitAssets)
    environment("EDGEKIT_BUILD_DIR", layout.buildDirectory.dir("edgekit").get().asFile.path)
    commandLine(
        "sh", rootProject.file("tools/edgekit-assets.sh").path,   // a copy of examples/android/edgekit-assets.sh
        edgekitModel.path, edgekitAssets.asFile.path, edgekitCalibration.path, "android", "int8",
    )
}

tasks.named("preBuild") { dependsOn(buildEdgeModel) }
