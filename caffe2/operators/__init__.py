"""Operator families: importing this package registers every kernel with the registry."""

import importlib

FAMILIES = (
    "elementwise_ops",
    "fill_ops",
    "utility_ops",
    "counter_ops",
    "math_ops",
    "reduction_ops",
    "segment_ops",
    "concat_split_ops",
    "control_ops",
    "python_ops",
    "dataset_ops",
    "load_save_ops",
    "queue_ops",
    "timer_ops",
    "iter_ops",
    "text_file_reader_ops",
    "tensor_vector_ops",
)

for _name in FAMILIES:
    importlib.import_module(f"caffe2.operators.{_name}")
