"""``caffe2.python.dataset``: an in-memory dataset, one tensor per schema column.

The columns are blobs in the workspace (spec data.md 3.3). Readers read them with a
TreeCursor (ReadNextBatch, or ReadRandomBatch over a shuffled order); the writer appends
batches with AtomicAppend after checking them with CheckDatasetConsistency:

    ds = dataset.Dataset(schema.Struct(('label', np.int32), ('x', schema.List(np.float32))))
    ds.init_empty(init_net)
    ds.writer(init_net).write_record(write_net, batch_record)
    should_stop, batch = ds.reader(init_net, batch_size=16).read_record(read_net)

Reading while appending is not safe.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from caffe2.python import core, workspace
from caffe2.python.dataio import Reader, Writer
from caffe2.python.schema import (
    Field,
    InitEmptyRecord,
    Struct,
    from_blob_list,
    from_column_list,
)


def _as_list(fields: Any) -> list[Any]:
    if fields is None:
        return []
    if isinstance(fields, core.BlobReference):
        return [fields]
    return list(fields)


class _DatasetReader(Reader):
    """Sequential batches of a dataset (make it with ``Dataset.reader``)."""

    def __init__(
        self,
        dataset: Dataset,
        name: str | None,
        batch_size: int = 1,
        enforce_batch_size: bool = False,
    ) -> None:
        Reader.__init__(self, dataset.content())
        self.dataset = dataset
        self.name = name or (dataset.name + "_cursor")
        self.batch_size = batch_size
        self.enforce_batch_size = enforce_batch_size
        self.cursor: core.BlobReference | None = None

    def setup_ex(self, init_net: Any, exit_net: Any) -> None:
        """Create the cursor (once) in init_net."""
        if self.cursor is None:
            self.cursor = init_net.CreateTreeCursor(
                [], init_net.NextScopedBlob(self.name), fields=self.dataset.fields
            )

    def read(self, read_net: Any) -> tuple[Any, list[Any]]:
        """ReadNextBatch under NameScope(read_net.NextName(name)); stops when empty."""
        assert self.cursor, "setup not called."
        content = self.dataset.content()
        assert content.field_names(), "Cannot read a dataset with no fields."
        with core.NameScope(read_net.NextName(self.name)):
            fields = _as_list(
                read_net.ReadNextBatch(
                    [self.cursor] + content.field_blobs(),
                    content.field_names(),
                    batch_size=self.batch_size,
                    enforce_batch_size=self.enforce_batch_size,
                )
            )
            return read_net.IsEmpty([fields[0]]), fields

    def reset(self, net: Any) -> None:
        """Rewind the cursor."""
        net.ResetCursor([self.cursor], [])


class _DatasetRandomReader(Reader):
    """Batches of a dataset in the order of an index blob (``Dataset.random_reader``).

    Call ``computeoffset`` (and ``sort_and_shuffle``, unless indices are given) in an init
    net before reading.
    """

    def __init__(
        self,
        dataset: Dataset,
        name: str | None,
        indices: Any,
        batch_size: int = 1,
        loop_over: bool = False,
        enforce_batch_size: bool = False,
    ) -> None:
        Reader.__init__(self, dataset.content())
        self.dataset = dataset
        self.cursor: Any = None
        self.name = name or (dataset.name + "_cursor")
        self.indices = indices
        self.batch_size = batch_size
        self.loop_over = loop_over
        self.enforce_batch_size = enforce_batch_size

    def setup_ex(self, init_net: Any, exit_net: Any) -> None:
        """Create the cursor (once). Its name is scoped but not made unique, as in Caffe2."""
        if self.cursor is None:
            self.cursor = init_net.CreateTreeCursor([], [self.name], fields=self.dataset.fields)

    def reset(self, net: Any) -> None:
        net.ResetCursor([self.cursor], [])

    def computeoffset(self, net: Any) -> None:
        """Emit ResetCursor + ComputeOffset into 'offsets' (the records' row offsets)."""
        self.reset(net)
        self.offsets = net.ComputeOffset(
            [self.cursor] + self.dataset.content().field_blobs(), "offsets"
        )

    def sort_and_shuffle(
        self,
        net: Any,
        sort_by_field: str | None = None,
        shuffle_size: int = 1,
        batch_size: int = 1,
    ) -> None:
        """Emit ResetCursor + SortAndShuffle into 'indices' (the reading order)."""
        content = self.dataset.content()
        sort_by_field_idx = -1
        if sort_by_field:
            assert sort_by_field in content.field_names(), (
                f"Must be valid field: {sort_by_field!r} is not one of {content.field_names()}"
            )
            sort_by_field_idx = content.field_names().index(sort_by_field)
        self.reset(net)
        self.indices = net.SortAndShuffle(
            [self.cursor] + content.field_blobs(),
            "indices",
            sort_by_field_idx=sort_by_field_idx,
            shuffle_size=shuffle_size,
            batch_size=batch_size,
        )

    def read(self, read_net: Any) -> tuple[Any, list[Any]]:
        """ReadRandomBatch under NameScope(read_net.NextName(name)); stops when empty."""
        assert self.cursor is not None, "setup not called."
        assert getattr(self, "offsets", None) is not None, (
            "computeoffset() must be called before reading."
        )
        assert self.indices is not None, (
            "No indices: pass indices= or call sort_and_shuffle() before reading."
        )
        content = self.dataset.content()
        assert content.field_names(), "Cannot read a dataset with no fields."
        with core.NameScope(read_net.NextName(self.name)):
            fields = _as_list(
                read_net.ReadRandomBatch(
                    [self.cursor, self.indices, self.offsets] + content.field_blobs(),
                    content.field_names(),
                    batch_size=self.batch_size,
                    enforce_batch_size=self.enforce_batch_size,
                    loop_over=self.loop_over,
                )
            )
            return read_net.IsEmpty([fields[0]]), fields


class _DatasetWriter(Writer):
    """Appends batches to a dataset (``Dataset.writer``)."""

    def __init__(self, content: Field) -> None:
        self._content = content
        self.mutex: Any = None

    def setup_ex(self, init_net: Any, exit_net: Any) -> None:
        """Create the mutex (once) in init_net."""
        if self.mutex is None:
            self.mutex = init_net.CreateMutex([])

    def write_record(self, writer_net: Any, fields: Any) -> None:
        """write a record; its field names must be the dataset's."""
        if isinstance(fields, Field):
            expected, got = self._content.field_names(), fields.field_names()
            if got != expected:
                missing = [n for n in expected if n not in got]
                extra = [n for n in got if n not in expected]
                raise ValueError(
                    f"Cannot write a record with fields {got} to a dataset with fields "
                    f"{expected} (missing {missing}, unexpected {extra})"
                )
        super().write_record(writer_net, fields)

    def write(self, writer_net: Any, fields: Any) -> None:
        """Emit CheckDatasetConsistency of the batch, then AtomicAppend under the mutex."""
        assert self.mutex is not None, "setup not called."
        field_blobs = self._content.field_blobs()
        fields = _as_list(fields)
        assert len(fields) == len(field_blobs), (
            f"Expected {len(field_blobs)} fields ({self._content.field_names()}), "
            f"got {len(fields)}."
        )
        writer_net.CheckDatasetConsistency(fields, [], fields=self._content.field_names())
        writer_net.AtomicAppend([self.mutex] + field_blobs + fields, field_blobs)

    def commit(self, finish_net: Any) -> None:
        """Nothing to commit for an in-memory dataset."""


def Const(net: core.Net, value: Any, dtype: Any = None, name: str | None = None):
    """Feed value now (current workspace) into a new external input of net; its reference."""
    assert isinstance(net, core.Net), "net must be a core.Net instance."
    value = np.array(value, dtype=dtype)
    blob = net.AddExternalInput(net.NextName(prefix=name))
    workspace.FeedBlob(str(blob), value)
    return blob


def execution_step_with_progress(name: str, init_net: Any, substeps: Any, rows_read: Any):
    """Concurrent substeps with a report net printing rows_read every 5 seconds."""
    report_net = core.Net("report_net")
    report_net.Print([rows_read], [])
    return core.execution_step(
        name, substeps, report_net=report_net, concurrent_substeps=True, report_interval=5
    )


class Dataset:
    """An in-memory dataset with a fixed schema: one blob per column.

    Initialize it with ``init_empty`` or ``init_from_dataframe`` before making readers or
    writers. ``field_types`` is a list attribute (it shadows the method, as in Caffe2).
    """

    def __init__(self, fields: Struct | list[str], name: str | None = None) -> None:
        assert isinstance(fields, list | Struct), (
            "fields must be either a Struct or a list of raw field names."
        )
        if isinstance(fields, list):
            fields = from_column_list(fields)
        self.schema = fields
        self.fields = fields.field_names()
        self.field_types = fields.field_types()
        self.name = name or "dataset"
        self.field_blobs = fields.field_blobs() if fields.has_blobs() else None

    def trim(self, net: Any, multiple_of: int) -> None:
        """Emit TrimDataset: keep a multiple of multiple_of records (in place)."""
        net.TrimDataset(
            self.field_blobs, self.field_blobs, fields=self.fields, multiple_of=multiple_of
        )

    def init_empty(self, init_net: Any) -> None:
        """Emit the creation of empty columns (named after the fields) into init_net."""
        self.field_blobs = InitEmptyRecord(init_net, self.schema.clone_schema()).field_blobs()

    def init_from_dataframe(self, net: Any, dataframe: Any) -> None:
        """Feed the columns of a pandas DataFrame now, as external inputs of net."""
        assert len(self.fields) == len(dataframe.columns), (
            f"The dataset has {len(self.fields)} fields but the dataframe "
            f"{len(dataframe.columns)} columns."
        )
        self.field_blobs = [
            Const(net, np.asarray(dataframe.iloc[:, col]).flatten(), name=field)
            for col, field in enumerate(self.fields)
        ]

    def get_blobs(self) -> list[Any] | None:
        """The column blobs."""
        return self.field_blobs

    def content(self) -> Field:
        """The schema as a record of the column blobs."""
        assert self.field_blobs is not None, "Dataset not initialized."
        return from_blob_list(self.schema, self.field_blobs)

    def field_names(self) -> list[str]:
        return self.fields

    def field_types(self) -> list[np.dtype]:
        """The column dtypes (unreachable on instances: the attribute shadows it)."""
        return self.field_types

    def reader(
        self,
        init_net: Any = None,
        cursor_name: str | None = None,
        batch_size: int = 1,
        enforce_batch_size: bool = False,
    ) -> _DatasetReader:
        """A sequential reader; its cursor is created in init_net when given (else setup_ex)."""
        assert self.field_blobs, "Dataset not initialized."
        reader = _DatasetReader(self, cursor_name, batch_size, enforce_batch_size)
        if init_net is not None:
            reader.setup_ex(init_net, None)
        return reader

    def random_reader(
        self,
        init_net: Any = None,
        indices: Any = None,
        cursor_name: str | None = None,
        batch_size: int = 1,
        loop_over: bool = False,
        enforce_batch_size: bool = False,
    ) -> _DatasetRandomReader:
        """A reader in the order of indices (or of sort_and_shuffle)."""
        assert self.field_blobs, "Dataset not initialized."
        reader = _DatasetRandomReader(
            self, cursor_name, indices, batch_size, loop_over, enforce_batch_size
        )
        if init_net is not None:
            reader.setup_ex(init_net, None)
        return reader

    def writer(self, init_net: Any = None) -> _DatasetWriter:
        """A writer appending batches; its mutex is created in init_net when given."""
        assert self.field_blobs, "Dataset not initialized."
        writer = _DatasetWriter(self.content())
        if init_net is not None:
            writer.setup_ex(init_net, None)
        return writer
