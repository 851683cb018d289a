"""``caffe2.python.text_file_reader``: a Reader of TSV files (spec data.md 7.2).

``TextFileReader(init_net, filename, schema, num_passes=1, batch_size=1)`` adds a
CreateTextFileReader op to init_net; each ``read(net)`` adds a TextFileReaderRead of up to
``batch_size`` rows and stops once a read returns no rows. The schema is a Struct of Scalars,
each of a string dtype (fetched as bytes) or float32. See
``caffe2.operators.text_file_reader_ops`` for the file format, including that a last line
without a trailing newline is never read.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from caffe2.python import core
from caffe2.python.dataio import Reader
from caffe2.python.schema import Scalar, Struct, data_type_for_dtype

_SUPPORTED = (core.DataType.STRING, core.DataType.FLOAT)


class TextFileReader(Reader):
    """Reads the rows of a TSV file, one column per schema field."""

    def __init__(
        self,
        init_net: core.Net,
        filename: str,
        schema: Struct,
        num_passes: int = 1,
        batch_size: int = 1,
    ) -> None:
        """Add the op creating the reader instance to init_net.

        filename: the TSV file (read when init_net runs); schema: a Struct of Scalars, str
        or float32; num_passes: how many times the file is read; batch_size: the maximum
        number of rows a read returns.
        """
        if not isinstance(schema, Struct):
            raise TypeError(
                f"TextFileReader: schema must be a schema.Struct, got {type(schema).__name__}"
            )
        field_types = []
        for name, child in schema.get_children():
            if not isinstance(child, Scalar):
                raise TypeError(
                    f"TextFileReader: only scalar fields are supported; field {name!r} is a "
                    f"{type(child).__name__}"
                )
        for name, dtype in zip(schema.field_names(), schema.field_types(), strict=True):
            try:
                dt = data_type_for_dtype(dtype)
            except TypeError:
                dt = None
            if dt not in _SUPPORTED or np.dtype(dtype).shape:
                raise TypeError(
                    f"TextFileReader: field {name!r} has dtype {np.dtype(dtype)}; only string "
                    "and float32 fields can be read from a text file"
                )
            field_types.append(dt)
        if int(batch_size) < 1:
            raise ValueError(f"TextFileReader: batch_size must be positive, got {batch_size}")
        if int(num_passes) < 0:
            raise ValueError(f"TextFileReader: num_passes must be >= 0, got {num_passes}")
        Reader.__init__(self, schema)
        self._reader = init_net.CreateTextFileReader(
            [], filename=filename, num_passes=int(num_passes), field_types=field_types
        )
        self._batch_size = int(batch_size)

    def read(self, net: core.Net) -> tuple[Any, list[Any]]:
        """Add a read of up to batch_size rows to net: (should_stop, field blobs).

        should_stop is true once a read returns no rows (all passes are over).
        """
        blobs = net.TextFileReaderRead(
            [self._reader], len(self.schema().field_names()), batch_size=self._batch_size
        )
        if isinstance(blobs, core.BlobReference):
            blobs = [blobs]
        else:
            blobs = list(blobs)
        is_empty = net.IsEmpty([blobs[0]], core.ScopedBlobReference(net.NextName("should_stop")))
        return is_empty, blobs
