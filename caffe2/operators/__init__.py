"""Operator families: importing this package registers every kernel with the registry."""

import importlib

FAMILIES = ("elementwise_ops",)

for _name in FAMILIES:
    importlib.import_module(f"caffe2.operators.{_name}")
