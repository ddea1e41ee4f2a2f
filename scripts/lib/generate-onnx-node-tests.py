"""Writes the ONNX backend node tests of the installed onnx wheel to OUT/node/<test>/.

Used by scripts/fetch-onnx-tests.sh. onnx's own `backend-test-tools generate-data` writes the
data of the model cases only (collect_testcases of onnx.backend.test.case.model), so this runs
its writer on the node cases instead: the same files (model.onnx, test_data_set_N/input_M.pb,
output_M.pb) the wheels up to 1.20 shipped.

Usage: python generate-onnx-node-tests.py OUT
"""

import argparse
import sys

import onnx.backend.test.case.node as node_cases
from onnx.backend.test import cmd_tools


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: generate-onnx-node-tests.py OUT")
    # generate_data writes whatever model_test.collect_testcases returns, under OUT/<kind>/<name>.
    cmd_tools.model_test.collect_testcases = node_cases.collect_testcases
    cmd_tools.generate_data(argparse.Namespace(output=sys.argv[1]))


if __name__ == "__main__":
    main()
