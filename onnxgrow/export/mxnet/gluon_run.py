"""Run an ONNX file as MXNet 1.9 imports it for training (`mxnet.contrib.onnx.import_to_gluon`): the MXNet side
of `onnxgrow verify --candidate-runtime mxnet`.

    python gluon_run.py MODEL.onnx INPUTS.npz OUTPUTS.npz

Runs in an MXNet environment (numpy < 1.24, onnx < 1.17), so it imports only mxnet, numpy and onnx, never
onnxgrow. INPUTS.npz holds the feeds of each run as "<run>/<input name>"; OUTPUTS.npz gets "<run>/<output name>";
the last line on stdout is JSON with the output names.
"""

import json
import logging
import os
import sys
import warnings

# run as a script from onnxgrow's export/mxnet folder: its modules (rules.py, driver.py, ...) must not shadow others
_here = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _here]


def main(argv: list) -> int:
    model, inputs, outputs = argv
    os.environ.setdefault("MXNET_SUBGRAPH_VERBOSE", "0")
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    import mxnet as mx
    import numpy as np
    import onnx
    from mxnet.contrib import onnx as onnx_mxnet

    header = onnx.load(model, load_external_data=False)
    weights = {t.name for t in header.graph.initializer}
    names = [i.name for i in header.graph.input if i.name not in weights]
    out_names = [o.name for o in header.graph.output]
    stdout = sys.stdout
    sys.stdout = sys.stderr  # the importer prints notices; stdout carries only the result line
    try:
        net = onnx_mxnet.import_to_gluon(model, ctx=mx.cpu())
        feeds = np.load(inputs)
        runs = sorted({int(k.split("/", 1)[0]) for k in feeds.files})
        result = {}
        for run in runs:
            arrays = []
            for name in names:
                key = f"{run}/{name}"
                if key not in feeds.files:
                    raise SystemExit(f"{inputs}: no array for input {name!r}")
                arrays.append(mx.nd.array(feeds[key], ctx=mx.cpu(), dtype=feeds[key].dtype))
            outs = net(*arrays)
            outs = list(outs) if isinstance(outs, (list, tuple)) else [outs]
            for name, value in zip(out_names, outs):
                result[f"{run}/{name}"] = value.asnumpy()
        np.savez(outputs, **result)
    finally:
        sys.stdout = stdout
    print(json.dumps({"outputs": out_names}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
