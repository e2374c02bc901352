#!/usr/bin/env bash
# CI check that an ONNX file computes what the PyTorch model computes, and that the module onnxgrow hands back
# to training (export --to torch) computes it too. JUnit reports go to OUTDIR for the CI system to display.
#
#   examples/ci/validate_model.sh OUTDIR [MODEL.onnx]
#
# MODEL.onnx defaults to the file exported in this run (OUTDIR/model.onnx); give a committed file to check that it
# has not drifted from the PyTorch code. Exit status: 0 every output matches, 1 a model drifted (the JUnit report
# says which output and by how much), 2 bad input (a missing file, outputs that do not fit the model), 3 an
# internal error of onnxgrow.
set -euo pipefail
out=${1:?usage: validate_model.sh OUTDIR [MODEL.onnx]}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
python "$here/export_model.py" "$out"
model=${2:-$out/model.onnx}
# the ONNX file against PyTorch's own outputs on the same inputs
onnxgrow verify "$model" --load-inputs "$out/inputs.npz" --load-outputs "$out/torch_outputs.npz" \
    --atol 1e-5 --rtol 1e-4 --junit "$out/junit-onnx.xml"
# the module export --to torch writes for training, against the ONNX file
onnxgrow export "$model" --to torch -o "$out/model.pt"
onnxgrow verify "$model" "$out/model.pt" --load-inputs "$out/inputs.npz" --junit "$out/junit-torch.xml"
