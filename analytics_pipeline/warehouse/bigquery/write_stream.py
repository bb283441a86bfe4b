"""Rows into a table through the Storage Write API: one PENDING stream, one atomic commit.

Appends carry explicit offsets, so a retried append is refused (ALREADY_EXISTS) rather than
doubled, and nothing is visible before `BatchCommitWriteStreams`: the table gets the whole set
of rows or none. Rows travel as protobuf messages whose type is built from the table's columns
at run time (JSON columns as text). No query is billed for any of this.

bqemulator differences handled here, real-API code kept: every AppendRows request names its
`write_stream` (the library's helper sends it only on the first); one stream per BatchCommit;
a commit answered INVALID_STREAM_STATE "state=COMMITTED" counts as done.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from functools import cache
from typing import Any

import msgspec
from google.api_core import exceptions as google_exceptions
from google.cloud.bigquery_storage_v1 import BigQueryWriteClient, types
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from analytics_pipeline.contract.batches import BatchKind
from analytics_pipeline.warehouse.bigquery.schema import bigquery_type
from analytics_pipeline.warehouse.bigquery.sql import micros
from analytics_pipeline.warehouse.tables import LOAD_SPECS

APPEND_REQUEST_BYTES = 8 * 1024 * 1024  # AppendRows requests are limited to 10 MB
_ALREADY_EXISTS = 6  # google.rpc.Code: this offset was appended by an earlier attempt


class RowMessages:
    """A proto message type for rows of `fields`, built at run time."""

    def __init__(self, name: str, fields: Sequence[tuple[str, str]]) -> None:
        proto_file = descriptor_pb2.FileDescriptorProto(
            name=f"{name}.proto", package="analytics_pipeline", syntax="proto2"
        )
        message = proto_file.message_type.add(name=name)
        kinds = descriptor_pb2.FieldDescriptorProto
        for number, (field_name, field_type) in enumerate(fields, start=1):
            message.field.add(
                name=field_name,
                number=number,
                type=kinds.TYPE_INT64
                if field_type in ("TIMESTAMP", "INT64")
                else kinds.TYPE_STRING,
                label=kinds.LABEL_OPTIONAL,
            )
        pool = descriptor_pool.DescriptorPool()
        pool.Add(proto_file)
        descriptor = pool.FindMessageTypeByName(f"analytics_pipeline.{name}")
        self.message_class = message_factory.GetMessageClass(descriptor)
        self.descriptor = descriptor_pb2.DescriptorProto()
        descriptor.CopyToProto(self.descriptor)
        self.fields = tuple(fields)


@cache
def staging_rows(kind: BatchKind) -> RowMessages:
    """Staging columns: the kind's wire columns (JSON travels as text) plus its batch id."""
    wire = tuple(
        (column.name, "STRING" if column.sql_type == "JSON" else bigquery_type(column))
        for column in LOAD_SPECS[kind].wire_columns
    )
    return RowMessages(f"Staged{kind.value.title()}", (*wire, ("staged_batch_id", "STRING")))


def serialize(messages: RowMessages, rows: Sequence[tuple[str, Any]]) -> list[bytes]:
    """(batch id, contract row) pairs as serialized messages; `batch_id` defaults to the batch."""
    serialized: list[bytes] = []
    for batch_id, row in rows:
        message = messages.message_class()
        for name, field_type in messages.fields[:-1]:
            value = getattr(row, name)
            if name == "batch_id":
                value = value or batch_id
            if value is None:
                continue
            if isinstance(value, msgspec.Raw):
                if bytes(value) == b"null":
                    continue
                value = bytes(value).decode()
            elif field_type == "TIMESTAMP":
                value = micros(value)
            setattr(message, name, value)
        message.staged_batch_id = batch_id
        serialized.append(message.SerializeToString())
    return serialized


def write_committed(
    write_client: BigQueryWriteClient,
    table_path: str,
    messages: RowMessages,
    serialized: Sequence[bytes],
) -> None:
    """Append `serialized` to the table (`projects/P/datasets/D/tables/T`) and commit it."""
    stream = write_client.create_write_stream(
        parent=table_path,
        write_stream=types.WriteStream(type_=types.WriteStream.Type.PENDING),
    )
    # A request stream carries no routing field the client could read, so the routing header
    # is set by hand (as the library's own AppendRowsStream helper does).
    for response in write_client.append_rows(
        iter(_append_requests(stream.name, messages, serialized)),
        metadata=(("x-goog-request-params", f"write_stream={stream.name}"),),
    ):
        _check_append(response)
    write_client.finalize_write_stream(name=stream.name)
    try:
        commit = write_client.batch_commit_write_streams(
            types.BatchCommitWriteStreamsRequest(parent=table_path, write_streams=[stream.name])
        )
    except google_exceptions.FailedPrecondition as error:  # emulator: already committed
        if "state=COMMITTED" not in str(error):
            raise
        return
    if commit.stream_errors:
        raise RuntimeError(f"commit of {table_path} failed: {list(commit.stream_errors)}")


def _append_requests(
    stream: str, messages: RowMessages, serialized: Sequence[bytes]
) -> Iterator[types.AppendRowsRequest]:
    """Requests under the 10 MB limit, each with its offset and the stream name."""
    offset = 0
    while offset < len(serialized):
        chunk: list[bytes] = []
        size = 0
        while offset + len(chunk) < len(serialized) and (
            not chunk or size + len(serialized[offset + len(chunk)]) < APPEND_REQUEST_BYTES
        ):
            size += len(serialized[offset + len(chunk)])
            chunk.append(serialized[offset + len(chunk)])
        yield types.AppendRowsRequest(
            write_stream=stream,
            offset=offset,
            proto_rows=types.AppendRowsRequest.ProtoData(
                writer_schema=types.ProtoSchema(proto_descriptor=messages.descriptor),
                rows=types.ProtoRows(serialized_rows=chunk),
            ),
        )
        offset += len(chunk)


def _check_append(response: types.AppendRowsResponse) -> None:
    if response.error and response.error.code and response.error.code != _ALREADY_EXISTS:
        raise RuntimeError(f"AppendRows failed: {response.error.message}")
    if response.row_errors:
        raise RuntimeError(f"AppendRows rejected rows: {list(response.row_errors)[:3]}")
