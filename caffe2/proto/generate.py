"""Regenerate the *_pb2.py modules from the .proto files beside this script.

Run from anywhere: ``python caffe2/proto/generate.py`` (needs grpcio-tools, which ships protoc).
The proto files are compiled with the repository root as include path, so their descriptor
names are ``caffe2/proto/<name>.proto`` exactly as in Caffe2.
"""

import pathlib
import sys

from grpc_tools import protoc

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent.parent


def main() -> int:
    protos = sorted(str(p.relative_to(ROOT)) for p in HERE.glob("*.proto"))
    args = ["protoc", f"-I{ROOT}", f"--python_out={ROOT}", *protos]
    rc = protoc.main(args)
    if rc != 0:
        print(f"protoc failed with exit code {rc}", file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(main())
