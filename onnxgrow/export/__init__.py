"""Exporters that hand a grown model to a training framework: `torch` (an onnx2torch module, the user's own module's
state_dict) and `mxnet` (ONNX rewritten for MXNet 1.9's importer). Import the submodule you need: `torch` needs
the torch extra."""
