"""Rows into a table through the Storage Write API: one PENDING stream, one atomic commit.

A stream is created, appended to with explicit offsets (a retried append is refused with
ALREADY_EXISTS rather than doubled) and finalized while nothing is visible; only
`BatchCommitWriteStreams` makes its rows visible, all at once. A stream can be committed by
anyone who knows its name, any number of times: the first commit counts, the others answer
"already committed". That is what lets a loader that crashed between its intent and its commit
be finished by the next one. Rows travel as protobuf messages whose type is built from the
table's columns at run time (JSON as text). No query is billed for any of this.

bqemulator differences handled here, real-API code kept: every AppendRows request names its
`write_stream` (the library's helper sends it only on the first); one stream per BatchCommit;
an already committed stream answers INVALID_STREAM_STATE "state=COMMITTED" in `stream_errors`
(BigQuery: STREAM_ALREADY_COMMITTED); its GetWriteStream never shows `commit_time`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from functools import cache
from typing import Any

import msgspec
from google.api_core import exceptions as google_exceptions
from google.cloud.bigquery_storage_v1 import BigQueryWriteClient, types
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from analytics_pipeline.warehouse.bigquery.sql import days, micros
from analytics_pipeline.warehouse.tables import Column

APPEND_REQUEST_BYTES = 8 * 1024 * 1024  # AppendRows requests are limited to 10 MB
_ALREADY_EXISTS = 6  # google.rpc.Code: this offset was appended by an earlier attempt
# How the Write API takes each BigQuery type in a proto2 row: TIMESTAMP as int64 microseconds
# since the epoch, DATE as int32 days since the epoch, JSON (and STRING) as text.
_PROTO_TYPES = {
    "TIMESTAMP": descriptor_pb2.FieldDescriptorProto.TYPE_INT64,
    "INT64": descriptor_pb2.FieldDescriptorProto.TYPE_INT64,
    "DATE": descriptor_pb2.FieldDescriptorProto.TYPE_INT32,
}


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
                type=_PROTO_TYPES.get(field_type, kinds.TYPE_STRING),
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
def table_messages(table: str, columns: tuple[Column, ...]) -> RowMessages:
    """The proto message type of a table's rows (JSON columns travel as text)."""
    fields = tuple(
        (column.name, "STRING" if column.sql_type == "JSON" else column.bigquery_type)
        for column in columns
    )
    return RowMessages("".join(part.title() for part in table.split("_")) + "Row", fields)


def serialize(messages: RowMessages, rows: Iterable[Mapping[str, Any]]) -> list[bytes]:
    """Rows (column -> value; absent or None: NULL) as serialized messages."""
    serialized: list[bytes] = []
    for row in rows:
        message = messages.message_class()
        for name, field_type in messages.fields:
            value = row.get(name)
            if value is None:
                continue
            if isinstance(value, msgspec.Raw):
                if bytes(value) == b"null":
                    continue
                value = bytes(value).decode()
            elif field_type == "TIMESTAMP":
                value = micros(value)
            elif field_type == "DATE":
                value = days(value)
            setattr(message, name, value)
        serialized.append(message.SerializeToString())
    return serialized


class StreamLost(RuntimeError):
    """The stream can no longer be committed (never finalized, expired, or unknown)."""


def write_pending(
    write_client: BigQueryWriteClient,
    table_path: str,
    messages: RowMessages,
    serialized: Sequence[bytes],
) -> str:
    """Append `serialized` to a new PENDING stream of the table and finalize it: invisible
    until committed. Returns the stream's name."""
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
    return stream.name


def commit(write_client: BigQueryWriteClient, table_path: str, stream: str) -> None:
    """Commit the stream (idempotent: a stream already committed is done)."""
    try:
        answer = write_client.batch_commit_write_streams(
            types.BatchCommitWriteStreamsRequest(parent=table_path, write_streams=[stream])
        )
    except google_exceptions.NotFound as error:
        raise StreamLost(f"{stream}: {error}") from error
    except google_exceptions.FailedPrecondition as error:
        if "COMMITTED" in str(error).upper():
            return
        raise StreamLost(f"{stream}: {error}") from error
    for stream_error in answer.stream_errors:
        text = f"{stream_error.code.name} {stream_error.error_message}"
        if "ALREADY_COMMITTED" in text or "state=COMMITTED" in text:
            continue
        if stream_error.code.name in _LOST_CODES:
            raise StreamLost(f"{stream}: {text}")
        raise RuntimeError(f"commit of {stream} failed: {text}")


# StorageErrorCode names that mean the stream's rows will never become visible.
_LOST_CODES = frozenset({"STREAM_NOT_FOUND", "INVALID_STREAM_STATE", "STREAM_FINALIZED"})


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
