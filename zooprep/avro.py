"""Reading Avro alert files: object-container files and Confluent payloads.

Both the alert reader (`zooprep.readers.alerts`, which makes rows) and the
alert stamps (`zooprep.images.stamps`, which cuts pictures) read records
through `read_records`, so a file is judged the same way by both.

Only Avro object-container files (which start with `AVRO_MAGIC`) embed their
schema.  A raw Kafka payload in the Confluent wire format (byte 0 is 0, bytes
1-4 a schema-registry id, then schemaless Avro) can be read only when the
matching writer schema is given.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterator, Mapping
from typing import Any

from zooprep.errors import InputError

__all__ = ["AVRO_MAGIC", "container_bytes", "read_records"]

#: The first four bytes of an Avro object-container file.
AVRO_MAGIC = b"Obj\x01"


def _load_schema(schema: str | os.PathLike[str] | Mapping[str, Any]) -> Any:
    """Parse an Avro schema given as a mapping or a ``.avsc`` JSON file."""
    import fastavro

    if isinstance(schema, Mapping):
        return fastavro.parse_schema(dict(schema))
    try:
        with open(schema, encoding="utf-8") as f:
            return fastavro.parse_schema(json.load(f))
    except (OSError, ValueError) as exc:
        raise InputError(
            f"{os.fspath(schema)}: unreadable Avro schema ({exc})"
        ) from exc


def read_records(
    path: str | os.PathLike[str],
    schema: str | os.PathLike[str] | Mapping[str, Any] | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield every record of an Avro file, in order.

    Parameters
    ----------
    path : str or os.PathLike
        An Avro object-container file (any number of records), or a single
        Confluent wire-format payload when ``schema`` is given.
    schema : str, os.PathLike, mapping or None
        Writer schema (a ``.avsc`` file or a parsed mapping) for Confluent
        wire-format payloads, which do not embed theirs.

    Yields
    ------
    dict
        One decoded record.

    Raises
    ------
    InputError
        One line naming the file (raised when iteration reaches the problem):
        missing, not Avro, a Confluent payload without a schema, damaged, or a
        record that is not an Avro record.
    """
    import fastavro

    path = os.fspath(path)
    try:
        f = open(path, "rb")  # noqa: SIM115 (closed by the with block below)
    except OSError as exc:
        raise InputError(f"{path}: cannot open alert file ({exc.strerror})") from None
    with f:
        head = f.read(5)
        f.seek(0)
        if head[:4] != AVRO_MAGIC:
            if len(head) == 5 and head[0] == 0:
                (schema_id,) = struct.unpack(">I", head[1:5])
                if schema is None:
                    raise InputError(
                        f"{path}: Confluent wire-format payload without an embedded"
                        f" schema (schema id {schema_id}); give its writer schema or"
                        " an Avro container file"
                    )
                parsed = _load_schema(schema)
                f.seek(5)
                try:
                    record = fastavro.schemaless_reader(f, parsed, None)
                except (ValueError, EOFError, KeyError, TypeError, IndexError) as exc:
                    raise InputError(
                        f"{path}: cannot decode Confluent payload with the given"
                        f" schema ({exc!r})"
                    ) from exc
                if not isinstance(record, dict):
                    raise InputError(f"{path}: Confluent payload is not an Avro record")
                yield record
                return
            raise InputError(f"{path}: not an Avro container file")
        count = 0
        try:
            for record in fastavro.reader(f):
                if not isinstance(record, dict):
                    raise InputError(f"{path}: record {count} is not an Avro record")
                yield record
                count += 1
        except InputError:
            raise
        except Exception as exc:  # fastavro raises many types on damaged files
            detail = " ".join(str(exc).split())[:160] or type(exc).__name__
            raise InputError(
                f"{path}: damaged Avro file after {count} record(s) "
                f"({type(exc).__name__}: {detail})"
            ) from None


def _long(n: int) -> bytes:
    """An Avro ``long``: zig-zag, then base-128 varint."""
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while z & ~0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def container_bytes(schema: str | Mapping[str, Any], datums: list[bytes]) -> bytes:
    """An Avro object-container file of already encoded records, uncompressed.

    Parameters
    ----------
    schema : str or mapping
        The writer schema of every datum (JSON text or its parsed form).
    datums : list of bytes
        Records in Avro's binary encoding with that schema (e.g. a Kafka
        payload without its Confluent header), written as they are.

    Returns
    -------
    bytes
        The file: header (schema, ``null`` codec, sync marker), then one block.
    """
    text = schema if isinstance(schema, str) else json.dumps(schema)
    sync = os.urandom(16)
    meta = {b"avro.schema": text.encode("utf-8"), b"avro.codec": b"null"}
    head = bytearray(AVRO_MAGIC)
    head += _long(len(meta))
    for key, value in meta.items():
        head += _long(len(key)) + key + _long(len(value)) + value
    head += _long(0) + sync
    body = b"".join(datums)
    if datums:
        head += _long(len(datums)) + _long(len(body)) + body + sync
    return bytes(head)
