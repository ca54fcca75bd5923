#!/usr/bin/env python3
"""Recover any Strata restore point (full, differential or incremental) without Strata.

Needs Python 3.8+ (standard library only) and, depending on the artifacts, the command-line
tools gpg (encrypted, profile "compat"), zstd or gzip (compressed). docs/FORMAT.md explains
every step; this script only automates them.

    python3 recover-chain.py --out DIR [--keys FILE | --passphrase-file FILE] ARTIFACT...

Give it the artifacts of the chain (the full backup, the differential if any, the
incrementals), in any order; extra artifacts of the same database are ignored. The newest one
is recovered unless --restore-point names another. It

  1. decrypts (gpg --decrypt) and decompresses (zstd -d, gzip -d) each artifact and unpacks its
     tar into a work folder. The OpenPGP password comes from --keys, the data keys a key file
     holds (`gpg --decrypt` of keys/<id>.asc, see docs/FORMAT.md: each is tried until one opens
     the artifact), or from --passphrase-file (a repository from before key files, or one data
     key), or gpg asks for it;
  2. orders the chain by each manifest's "parent" and "base";
  3. resolves each stream's complete chunk list (layout/<stream>.idx: complete, or a delta
     against the parent's complete list) from the full backup up to the restore point;
  4. writes each stream by taking every chunk from the newest artifact of the chain that
     stores it (chunks/<stream>/*.idx + .bin, or data/<stream> cut along its layout), checks
     every chunk's id and the stream's SHA-256 and size against the restore point's manifest;
  5. leaves in DIR: manifest.json and schema.sql of the restore point, data/<stream> for every
     stream (for SQLite data/main.db is the database), and for server engines the scripts that
     recreate the database: for PostgreSQL create-database.psql (run in another database with
     psql -v db=NEWNAME: the database with its recorded encoding and locale) and load.psql (run
     in the new database: schema, rows, large objects, sequences, materialized views, then the
     database's properties); for MySQL/MariaDB load.sql (run with the mysql client in an empty
     database). Read them before you run them.

Nothing is written outside DIR (and DIR/work, removed at the end unless --keep-work).
"""
import argparse
import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tarfile
import urllib.parse

HASH_BYTES = 16


def fail(message):
    sys.exit("recover-chain: " + message)


class GpgFailed(Exception):
    """gpg could not decrypt an artifact (wrong passphrase or data key, or a damaged file)."""


def read_keys(path):
    """The data keys of a decrypted key file: [(id, key)], from its "<id> <key>" lines."""
    keys = []
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    if not lines or lines[0] != "# strata-key-file 1":
        fail(f"{path}: not a decrypted Strata key file (it must start with '# strata-key-file 1')")
    for line in lines[1:]:
        if not line or line.startswith("#"):
            continue
        key_id, sep, secret = line.partition(" ")
        if not sep or not re.fullmatch(r"[0-9a-f]{8}", key_id) or not secret:
            fail(f"{path}: a line is not '<data key id> <data key>'")
        keys.append((key_id, secret))
    if not keys:
        fail(f"{path}: holds no data keys")
    return keys


def open_layers(artifact, passphrase_file, secret=None):
    """The artifact's tar bytes as a pipe: gpg, then zstd or gzip, as its extension says."""
    name = os.path.basename(artifact)
    if not re.search(r"\.tar(\.zst|\.gz)?(\.gpg)?$", name):
        fail(f"{artifact}: not a Strata artifact name (.tar[.zst|.gz][.gpg])")
    procs = []
    source = open(artifact, "rb")
    if name.endswith(".gpg"):
        cmd = ["gpg", "--quiet", "--decrypt"]
        if passphrase_file:
            # The passphrase is read from the file by gpg itself: never on a command line.
            cmd = ["gpg", "--quiet", "--batch", "--pinentry-mode", "loopback", "--passphrase-file", passphrase_file, "--decrypt"]
        if secret is not None:
            # A data key goes to gpg through a pipe: never on a command line, never in a file.
            read_end, write_end = os.pipe()
            os.write(write_end, (secret + "\n").encode("utf-8"))
            os.close(write_end)
            cmd = ["gpg", "--quiet", "--batch", "--pinentry-mode", "loopback", "--passphrase-fd", str(read_end), "--decrypt"]
            # A wrong key is expected while keys are tried: its complaint would only mislead.
            procs.append(subprocess.Popen(cmd, stdin=source, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, pass_fds=(read_end,)))
            os.close(read_end)
        else:
            procs.append(subprocess.Popen(cmd, stdin=source, stdout=subprocess.PIPE))
        source.close()
        source = procs[-1].stdout
        name = name[: -len(".gpg")]
    if name.endswith(".zst") or name.endswith(".gz"):
        tool = "zstd" if name.endswith(".zst") else "gzip"
        procs.append(subprocess.Popen([tool, "-d", "-c"], stdin=source, stdout=subprocess.PIPE))
        source.close()
        source = procs[-1].stdout
    return source, procs


def unpack_with_keys(artifact, folder, keys):
    """Unpacks an artifact with the first data key that opens it (an artifact names no key outside its encryption)."""
    if not artifact.endswith(".gpg"):
        return unpack(artifact, folder, None)
    for _, secret in keys:
        try:
            return unpack(artifact, folder, None, secret)
        except GpgFailed:
            shutil.rmtree(folder)
            os.makedirs(folder)
    fail(f"{artifact}: none of the {len(keys)} data key(s) opens it (a key file of another repository, or a damaged artifact?)")


def unpack(artifact, folder, passphrase_file, secret=None):
    """Unpacks an artifact's tar into folder, refusing anything but plain files with plain names."""
    source, procs = open_layers(artifact, passphrase_file, secret)
    problem = None
    try:
        with tarfile.open(fileobj=source, mode="r|") as tar:
            for member in tar:
                if member.isdir():
                    continue
                parts = member.name.split("/")
                if not member.isfile() or member.name.startswith("/") or ".." in parts or "" in parts:
                    fail(f"{artifact}: refusing tar entry {member.name!r}")
                target = os.path.join(folder, *parts)
                os.makedirs(os.path.dirname(target), exist_ok=True)
                with tar.extractfile(member) as body, open(target, "wb") as out:
                    shutil.copyfileobj(body, out, 1 << 20)
    except (tarfile.TarError, EOFError) as err:
        problem = f"the archive does not read ({err})"
    # tarfile stops at the end-of-archive block; the rest (trailing zero blocks) is read too, so
    # the decompressor is never cut off mid-write (it would die of SIGPIPE and look like damage).
    if problem is None:
        while source.read(1 << 16):
            pass
    source.close()
    for proc in procs:
        if proc.wait() != 0:
            if proc.args[0] == "gpg" and secret is not None:
                raise GpgFailed()
            fail(f"{artifact}: {proc.args[0]} failed (exit {proc.returncode}); wrong passphrase or damaged file?")
    if problem:
        if secret is not None and procs and procs[0].args[0] == "gpg":
            # A wrong key that slipped past gpg's quick check yields garbage: try the next one.
            raise GpgFailed()
        fail(f"{artifact}: {problem}; damaged or truncated file?")
    if not os.path.exists(os.path.join(folder, "manifest.json")):
        fail(f"{artifact}: no manifest.json (truncated artifact?)")
    with open(os.path.join(folder, "manifest.json"), encoding="utf-8") as f:
        manifest = json.load(f)
    # Version 2 differs only in how an incremental records verify facts, which recovery does not read.
    if manifest.get("format") != "strata-artifact" or manifest.get("formatVersion") not in (1, 2):
        fail(f"{artifact}: not a Strata artifact of format version 1 or 2")
    return manifest


def read_layout(path):
    """A layout/<stream>.idx entry: ('complete', [(size, id)]) or ('delta', count, parent digest, {position: (size, id)})."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:8] != b"STLAYOUT":
        fail(f"{path}: not a layout entry")
    version, hash_bytes, count = struct.unpack_from("<IIQ", data, 8)
    if hash_bytes != HASH_BYTES:
        fail(f"{path}: unsupported chunk id length {hash_bytes}")
    if version == 1:
        chunks = [struct.unpack_from("<I16s", data, 24 + i * 20) for i in range(count)]
        if len(data) != 24 + count * 20:
            fail(f"{path}: layout length does not match its count")
        return ("complete", chunks)
    if version == 2:
        digest = data[24:40]
        (changed,) = struct.unpack_from("<Q", data, 40)
        if len(data) != 48 + changed * 28:
            fail(f"{path}: layout delta length does not match its count")
        positions = {}
        for i in range(changed):
            position, size, chunk_id = struct.unpack_from("<QI16s", data, 48 + i * 28)
            positions[position] = (size, chunk_id)
        return ("delta", count, digest, positions)
    fail(f"{path}: layout version {version} is not known to this script")


def encode_complete(chunks):
    """A complete layout in its version-1 encoding (deltas name their parent by its digest)."""
    head = b"STLAYOUT" + struct.pack("<IIQ", 1, HASH_BYTES, len(chunks))
    return head + b"".join(struct.pack("<I", size) + chunk_id for size, chunk_id in chunks)


def apply_delta(parent, entry, where):
    _, count, digest, positions = entry
    if parent is None:
        fail(f"{where}: the layout is a delta but the parent has no such stream")
    if hashlib.sha256(encode_complete(parent)).digest()[:HASH_BYTES] != digest:
        fail(f"{where}: the layout is a delta against another parent (wrong or mixed-up chain)")
    chunks = list(parent[:count])
    chunks += [None] * (count - len(chunks))
    for position, chunk in positions.items():
        if position >= count:
            fail(f"{where}: the layout delta names position {position} past its {count} chunks")
        chunks[position] = chunk
    if any(c is None for c in chunks):
        fail(f"{where}: the layout delta leaves positions unnamed")
    return chunks


def read_segments(folder, stream):
    """(id, size, file, offset) of every chunk stored under chunks/<stream>/."""
    base = os.path.join(folder, "chunks", stream)
    if not os.path.isdir(base):
        return []
    out = []
    for name in sorted(os.listdir(base)):
        if not name.endswith(".idx"):
            continue
        with open(os.path.join(base, name), "rb") as f:
            data = f.read()
        if data[:8] != b"STSEGIDX":
            fail(f"{base}/{name}: not a segment index")
        (count,) = struct.unpack_from("<Q", data, 16)
        offset = 0
        binary = os.path.join(base, name[: -len(".idx")] + ".bin")
        for i in range(count):
            _position, size, chunk_id = struct.unpack_from("<QI16s", data, 24 + i * 28)
            out.append((chunk_id, size, binary, offset))
            offset += size
    return out


def find_chain(manifests, wanted):
    by_id = {m["id"]: (folder, m) for folder, m in manifests}
    if wanted is None:
        candidates = [m for _, m in manifests if m["type"] != "schema-only"] or [m for _, m in manifests]
        wanted = max(candidates, key=lambda m: m["createdAt"])["id"]
    if wanted not in by_id:
        fail(f"restore point {wanted} is not among the artifacts given")
    chain = []
    current = wanted
    while current is not None:
        if current not in by_id:
            fail(f"the chain of {wanted} needs {current}, which is not among the artifacts given")
        chain.append(by_id[current])
        current = by_id[current][1]["parent"]
    chain.reverse()
    tip = chain[-1][1]
    if tip.get("base") not in (None, chain[0][1]["id"]) or (len(chain) > 1 and chain[0][1]["type"] != "full"):
        fail(f"the chain of {wanted} does not start at its full backup {tip.get('base')}")
    return chain


def complete_layouts(chain):
    """Per stream, the complete chunk list at each restore point of the chain, oldest first."""
    previous = {}
    for folder, manifest in chain:
        current = {}
        for stream in manifest.get("streams", []):
            where = f"{manifest['id']}: stream {stream['name']}"
            entry = read_layout(os.path.join(folder, stream["layoutEntry"]))
            chunks = entry[1] if entry[0] == "complete" else apply_delta(previous.get(stream["name"]), entry, where)
            if len(chunks) != stream["chunkCount"] or sum(size for size, _ in chunks) != stream["size"]:
                fail(f"{where}: the layout does not cover the chunks and bytes its manifest records")
            current[stream["name"]] = chunks
        previous = current
    return previous


def chunk_sources(chain, needed):
    """Where each needed chunk id is stored, taken from the newest artifact that stores it."""
    sources = {}
    for folder, manifest in reversed(chain):
        for stream in manifest.get("streams", []):
            stored = read_segments(folder, stream["name"])
            whole = os.path.join(folder, "data", stream["name"])
            if os.path.exists(whole):
                # A stream stored whole is cut along its own (always complete) layout.
                kind, chunks = read_layout(os.path.join(folder, stream["layoutEntry"]))
                offset = 0
                for size, chunk_id in chunks:
                    stored.append((chunk_id, size, whole, offset))
                    offset += size
            for chunk_id, size, path, offset in stored:
                if chunk_id in needed and chunk_id not in sources:
                    sources[chunk_id] = (size, path, offset)
    return sources


def assemble(chain, out):
    layouts = complete_layouts(chain)
    sources = chunk_sources(chain, {chunk_id for chunks in layouts.values() for _, chunk_id in chunks})
    tip = chain[-1][1]
    os.makedirs(os.path.join(out, "data"), exist_ok=True)
    handles = {}
    for stream in tip["streams"]:
        name = stream["name"]
        sha = hashlib.sha256()
        size = 0
        with open(os.path.join(out, "data", name), "wb") as target:
            for position, (chunk_size, chunk_id) in enumerate(layouts[name]):
                if chunk_id not in sources:
                    fail(f"stream {name}: chunk {position} ({chunk_id.hex()}) is in no artifact given")
                stored_size, path, offset = sources[chunk_id]
                if path not in handles:
                    handles[path] = open(path, "rb")
                handles[path].seek(offset)
                chunk = handles[path].read(stored_size)
                if stored_size != chunk_size or hashlib.sha256(chunk).digest()[:HASH_BYTES] != chunk_id:
                    fail(f"stream {name}: chunk {position} does not match its id (damaged artifact)")
                sha.update(chunk)
                size += len(chunk)
                target.write(chunk)
        if size != stream["size"] or sha.hexdigest() != stream["sha256"]:
            fail(f"stream {name}: assembled stream does not match the SHA-256 in the manifest")
        print(f"data/{name}: {size} bytes, SHA-256 matches the manifest", file=sys.stderr)
    for handle in handles.values():
        handle.close()


# --- PostgreSQL: a psql script ------------------------------------------------------------

PG_MARKER = "-- strata: post-data"


def pg_ident(name):
    return '"' + name.replace('"', '""') + '"'


def psql_quote(text):
    """A file name as a psql meta-command argument (\\i): quotes doubled, backslashes escaped."""
    return "'" + text.replace("\\", "\\\\").replace("'", "''") + "'"


def copy_quote(text):
    """A file name as \\copy reads it: quotes doubled, backslashes taken literally."""
    return "'" + text.replace("'", "''") + "'"


def pg_stream_table(stream):
    match = re.fullmatch(r"([^.]+)\.([^.]+)\.copy", stream)
    if not match:
        fail(f"{stream}: not a PostgreSQL table stream")
    return urllib.parse.unquote(match.group(1)), urllib.parse.unquote(match.group(2))


PG_PROPERTIES_START = "-- strata: database properties"
PG_PROPERTIES_END = "-- strata: end of database properties"
LARGE_OBJECTS_STREAM = "large-objects.jsonl"


def pg_literal(text):
    """A string literal under standard_conforming_strings (which every script here turns on)."""
    return "'" + text.replace("'", "''") + "'"


def pg_database(manifest, schema):
    """(CREATE DATABASE, [property statements], encoding) as recorded, the name written :"db"."""
    recorded = manifest.get("engineMeta", {}).get("database")
    if recorded:
        return recorded["create"], list(recorded["properties"]), recorded["encoding"]
    if schema.startswith(PG_PROPERTIES_START):
        section = schema[:schema.find(PG_PROPERTIES_END)].split("\n")[1:]
        lines = [line[3:] if line.startswith("-- ") else line[2:] for line in section]
        match = re.search(r"ENCODING = '([^']+)'", lines[0])
        return lines[0], ["\n".join(lines[1:])] if len(lines) > 1 else [], match.group(1) if match else "UTF8"
    # Backups made before database properties were recorded hold UTF-8 rows.
    return "CREATE DATABASE :\"db\" WITH TEMPLATE = template0 ENCODING = 'UTF8';", [], "UTF8"


def write_large_objects(source, target):
    """large-objects.jsonl as SQL: each object created with its OID, owner, ACL and comment, then its content."""
    with open(source, encoding="utf-8") as lines, open(target, "w", encoding="utf-8") as f:
        f.write("SET standard_conforming_strings = on;\n")
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            value = json.loads(line)
            oid = str(value.get("oid", ""))
            if not oid.isdigit():
                fail(f"{LARGE_OBJECTS_STREAM} line {number}: no OID")
            if "hex" in value:
                if not re.fullmatch(r"[0-9a-f]*", value["hex"]) or not isinstance(value["at"], int):
                    fail(f"{LARGE_OBJECTS_STREAM} line {number}: malformed content of large object {oid}")
                f.write(f"SELECT pg_catalog.lo_put({oid}, {value['at']}, '\\x{value['hex']}'::bytea);\n")
                continue
            owner = pg_ident(value["owner"])
            f.write(f"SELECT pg_catalog.lo_create({oid});\nALTER LARGE OBJECT {oid} OWNER TO {owner};\n")
            if value.get("grants") is not None:
                # A recorded ACL replaces the default one, which gives the owner everything.
                f.write(f"REVOKE ALL ON LARGE OBJECT {oid} FROM {owner};\n")
                for grant in value["grants"]:
                    grantee = "PUBLIC" if grant["grantee"] == "PUBLIC" else pg_ident(grant["grantee"])
                    sql = f"GRANT {grant['privilege']} ON LARGE OBJECT {oid} TO {grantee}{' WITH GRANT OPTION' if grant['grantable'] else ''};"
                    # GRANT records whoever runs it as the grantor: act as the recorded one.
                    if grant["grantor"] != value["owner"]:
                        sql = f"SET ROLE {pg_ident(grant['grantor'])};\n{sql}\nRESET ROLE;"
                    f.write(sql + "\n")
            if value.get("comment") is not None:
                f.write(f"COMMENT ON LARGE OBJECT {oid} IS {pg_literal(value['comment'])};\n")


def write_postgres(out, manifest, schema):
    at = schema.find("\n" + PG_MARKER)
    pre, post = (schema, "") if at < 0 else (schema[:at + 1], schema[schema.index("\n", at + 1) + 1:])
    with open(os.path.join(out, "schema-pre.sql"), "w", encoding="utf-8") as f:
        f.write(pre)
    with open(os.path.join(out, "schema-post.sql"), "w", encoding="utf-8") as f:
        f.write(post)
    meta = manifest.get("engineMeta", {})
    create, properties, encoding = pg_database(manifest, schema)
    # Run against another database (postgres) with  -v db=NEWNAME : the database as the source was.
    with open(os.path.join(out, "create-database.psql"), "w", encoding="utf-8") as f:
        f.write("\\set ON_ERROR_STOP on\n" + create + "\n")
    columns_of = {t["stream"]: t.get("columns") for t in meta.get("tables", []) if "stream" in t}
    # :DBNAME is the database psql is connected to: the properties below name it as :"db".
    lines = ["\\set ON_ERROR_STOP on", "\\set db :DBNAME", f"\\i {psql_quote(os.path.join(out, 'schema-pre.sql'))}"]
    # Rows are COPY text in the database's own encoding; the schema script set the client's to UTF8.
    lines.append(f"\\encoding {encoding}")
    large_objects = False
    for stream in manifest.get("streams", []):
        if stream["name"] == LARGE_OBJECTS_STREAM:
            large_objects = True
            continue
        schema_name, table = pg_stream_table(stream["name"])
        columns = columns_of.get(stream["name"])
        # The recorded columns, in the order the rows hold them: an inheritance child is recreated
        # with its parent's columns first, whatever order it had. A table without columns, and a
        # backup that recorded none (rows in the table's own order), take no list.
        listed = f" ({', '.join(pg_ident(c) for c in columns)})" if columns else ""
        lines.append(f"\\copy {pg_ident(schema_name)}.{pg_ident(table)}{listed} from {copy_quote(os.path.join(out, 'data', stream['name']))}")
    lines.append("\\encoding UTF8")
    if large_objects:
        write_large_objects(os.path.join(out, "data", LARGE_OBJECTS_STREAM), os.path.join(out, "large-objects.sql"))
        lines += ["\\o /dev/null", f"\\i {psql_quote(os.path.join(out, 'large-objects.sql'))}", "\\o"]
    lines.append(f"\\i {psql_quote(os.path.join(out, 'schema-post.sql'))}")
    for seq in meta.get("sequences", []):
        qualified = pg_ident(seq["schema"]) + "." + pg_ident(seq["name"])
        lines.append(f"SELECT pg_catalog.setval('{qualified.replace(chr(39), chr(39) * 2)}', {int(seq['lastValue'])}, {'true' if seq['isCalled'] else 'false'});")
    # In the order recorded: each after the materialized views it reads.
    for view in meta.get("matviews", []):
        lines.append(f"REFRESH MATERIALIZED VIEW {view};")
    # Last, as Strata does: a setting such as default_transaction_read_only must not stop the load.
    lines += properties
    with open(os.path.join(out, "load.psql"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


# --- MySQL/MariaDB: a script for the mysql client ---------------------------------------------

MYSQL_MARKER = "-- strata: post-data"
MYSQL_END = "\n;;\n"
# Header lines: each statement follows a line giving its length; the database's comment (JSON).
MYSQL_FRAMED = "-- strata: statements framed 1 (each after a line giving its length in UTF-8 bytes)"
MYSQL_COMMENT = "-- strata: database comment "
BINARY_TYPES = {"binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob", "geometry", "point", "linestring",
                "polygon", "multipoint", "multilinestring", "multipolygon", "geometrycollection"}
# How a field is loaded: as text, from hex (binary), or as an unsigned number (BIT, written in decimal).
TEXT, HEX, NUMBER = "text", "hex", "number"
# Since row format 3, text of any other character set is written as the hex of its bytes (cp932 has
# several byte sequences for one character, which a trip through utf8mb4 would make one).
TEXT_TYPES = {"char", "varchar", "tinytext", "text", "mediumtext", "longtext"}
ROUND_TRIP_CHARSETS = {"utf8mb4", "utf8mb3", "utf8", "ascii", "latin1", "ucs2", "utf16", "utf16le", "utf32"}


def mysql_ident(name):
    return "`" + name.replace("`", "``") + "`"


def mysql_string(text):
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def mysql_delimited(part):
    """Statements of one half of a schema.sql without MYSQL_FRAMED, cut at its ";;" lines."""
    statements = []
    for chunk in part.split(MYSQL_END):
        lines = [l for l in chunk.split("\n") if not l.startswith("-- strata") and not l.startswith("DELIMITER ")]
        text = "\n".join(lines).strip()
        if text and text != ";;":
            statements.append(text)
    return statements


def mysql_framed(body):
    """Statements before and after the post-data line of a schema.sql with MYSQL_FRAMED: each
    follows a line "-- strata: statement of N bytes" and is taken whole, whatever its text holds
    (a ";;" line in a routine's string is not its end)."""
    data = body.encode("utf-8")
    pre, post = [], []
    current, at = pre, 0
    while True:
        end = data.find(b"\n", at)
        if end < 0:
            fail("schema.sql ends without its DELIMITER ; line")
        line = data[at:end].decode("utf-8")
        at = end + 1
        if line == "DELIMITER ;":
            return pre, post
        if line.startswith(MYSQL_MARKER) and current is pre:
            current = post
            continue
        head = re.fullmatch(r"-- strata: statement of (\d+) bytes", line)
        if not head:
            fail(f"schema.sql: {line[:80]!r} stands where a statement's length should")
        stop = at + int(head.group(1))
        if data[stop:stop + len(MYSQL_END)] != MYSQL_END.encode():
            fail(f"schema.sql: the statement after {line!r} is not followed by a ;; line")
        current.append(data[at:stop].decode("utf-8"))
        at = stop + len(MYSQL_END)


def mysql_units(statements):
    """Statements, each with the SET SESSION line that precedes it."""
    units, context = [], None
    for statement in statements:
        if re.match(r"SET SESSION ", statement, re.I):
            context = statement
        else:
            units.append(([context] if context else []) + [statement])
            context = None
    return units


def mysql_versioned(create_table):
    """Whether the table options (after the column list, which a column comment cannot end) say WITH SYSTEM VERSIONING."""
    options = re.search(r"^\).*", create_table, re.M | re.S)
    return bool(options and re.search(r"\bWITH SYSTEM VERSIONING\b", options.group(0)))


def mysql_value_columns(create_table, row_format):
    """(column as the load names it, how its field loads) for each field of a row line: the columns
    that are not generated, in table order, then a system-versioned table's row start and end."""
    columns = []
    table_charset = re.search(r"^\).*? DEFAULT CHARSET=(\w+)", create_table, re.M)
    for line in create_table.split("\n")[1:]:
        match = re.match(r"\s+`((?:[^`]|``)+)` (\w+)", line)
        if not match:
            continue
        # Generated columns are computed again; explicit row start/end columns
        # (GENERATED ALWAYS AS ROW START/END) come last, from the period below.
        if re.search(r"\bGENERATED ALWAYS AS\b|\bAS \(.*\) (VIRTUAL|PERSISTENT|STORED)\b", line, re.I):
            continue
        column_type = match.group(2).lower()
        kind = NUMBER if column_type == "bit" else HEX if column_type in BINARY_TYPES else TEXT
        if row_format >= 3 and column_type in ("enum", "set"):
            # An ENUM is written as its member's number (0: the empty value of an invalid one), a SET as its bits.
            kind = NUMBER
        if row_format >= 3 and column_type in TEXT_TYPES:
            # Right after the type, as the server writes it (a comment further on may say anything).
            after = re.match(r"\w+(?:\((?:'(?:[^'\\]|\\.|'')*'|[^)'])*\))?(?: unsigned)?(?: zerofill)?(?: CHARACTER SET (\w+))?(?: COLLATE (\w+))?", line[match.start(2):])
            own = after.group(1) or (after.group(2).split("_")[0] if after.group(2) else None)
            charset = own or (table_charset.group(1) if table_charset else "utf8mb4")
            if charset.lower() not in ROUND_TRIP_CHARSETS:
                kind = HEX
        columns.append((mysql_ident(match.group(1).replace("``", "`")), kind))
    if mysql_versioned(create_table):
        period = re.search(r"PERIOD FOR SYSTEM_TIME \(`((?:[^`]|``)+)`, `((?:[^`]|``)+)`\)", create_table)
        # Implicit period columns are pseudo-columns, named bare (quoted they would name no column).
        names = [mysql_ident(period.group(1).replace("``", "`")), mysql_ident(period.group(2).replace("``", "`"))] if period else ["ROW_START", "ROW_END"]
        columns += [(name, TEXT) for name in names]
    return columns


def order_views(units):
    """Views first, each after the views whose quoted name its definition mentions."""
    views = {}
    for unit in units:
        match = re.search(r"\bVIEW (`(?:[^`]|``)+`) AS ", unit[-1])
        if re.match(r"CREATE\b", unit[-1]) and match:
            views[match.group(1)] = (unit, unit[-1][match.end():])
    ordered, done = [], set()

    def visit(name, path):
        if name in done or name in path:
            return
        for other in views:
            if other != name and other in views[name][1]:
                visit(other, path | {name})
        done.add(name)
        ordered.append(views[name][0])

    for name in views:
        visit(name, set())
    return ordered + [u for u in units if all(u is not unit for unit, _ in views.values())]


# What every statement runs under unless its own SET SESSION line says otherwise. ALLOW_INVALID_DATES:
# a date with a day its month lacks ('2021-02-31') is the source's, stored as given, not made 0000-00-00.
MYSQL_SESSION = "SET SESSION sql_mode = 'NO_AUTO_VALUE_ON_ZERO,ALLOW_INVALID_DATES', time_zone = '+00:00', character_set_client = utf8mb4, collation_connection = utf8mb4_bin"


def statements(units, strip):
    """Lines for units inside DELIMITER ;; (a unit's own settings are undone after it)."""
    lines = []
    for unit in units:
        lines += [strip(sql) + MYSQL_END.rstrip() for sql in unit]
        if len(unit) > 1:
            lines.append(MYSQL_SESSION + MYSQL_END.rstrip())
    return lines


def write_mysql(out, manifest, schema):
    header = re.search(r"charset (\S+) collate (\S+)", schema.split("\n", 1)[0])
    # The second line only: a routine's body may hold such a line.
    second = (schema.split("\n") + [""])[1]
    row_format_line = re.match(r"-- strata: row format (\d+)\b", second)
    row_format = int(row_format_line.group(1)) if row_format_line else 1
    # The header is Strata's own lines, up to the first DELIMITER line: a routine's body cannot fake them.
    start = re.search(r"^DELIMITER ;;\n", schema, re.M)
    header_lines = schema[:start.start()].split("\n") if start else []
    comment = None
    for line in header_lines:
        if line.startswith(MYSQL_COMMENT):
            comment = json.loads(line[len(MYSQL_COMMENT):])
    if start and MYSQL_FRAMED in header_lines:
        pre_statements, post_statements = mysql_framed(schema[start.end():])
    else:
        at = schema.find(MYSQL_MARKER)
        pre_statements = mysql_delimited(schema if at < 0 else schema[:at])
        post_statements = [] if at < 0 else mysql_delimited(schema[at:])
    pre = mysql_units(pre_statements)
    post = order_views(mysql_units(post_statements))
    tables, versioned = {}, set()
    for unit in pre:
        match = re.match(r"CREATE TABLE `((?:[^`]|``)+)`", unit[-1])
        if match:
            name = match.group(1).replace("``", "`")
            tables[name] = mysql_value_columns(unit[-1], row_format)
            if mysql_versioned(unit[-1]):
                versioned.add(name)
    # Tables, views and events name their database as {{db}}: without it they use the database being loaded.
    strip = lambda sql: sql.replace("{{db}}.", "")
    lines = [
        "-- Written by recover-chain.py: run with  mysql --local-infile=1 TARGET_DATABASE < load.sql",
        "SET NAMES utf8mb4 COLLATE utf8mb4_bin;",
        "SET time_zone = '+00:00';",
        MYSQL_SESSION + ", FOREIGN_KEY_CHECKS = 0, UNIQUE_CHECKS = 0;",
    ]
    if header:
        lines.append(f"ALTER DATABASE CHARACTER SET {header.group(1)} COLLATE {header.group(2)};")
    if comment is not None:
        lines.append(f"ALTER DATABASE COMMENT {mysql_string(comment)};")
    # As Strata's restore: rows a CHECK constraint added with check_constraint_checks = 0 refuses
    # are the source's (MariaDB only, hence the versioned comment).
    lines.append("/*M!100201 SET SESSION check_constraint_checks = 0 */;")
    lines.append("DELIMITER ;;")
    lines += statements(pre, strip)
    lines.append("DELIMITER ;")
    for stream in manifest.get("streams", []):
        match = re.fullmatch(r"([^.]+)\.rows", stream["name"])
        if not match:
            fail(f"{stream['name']}: not a MySQL table stream")
        table = urllib.parse.unquote(match.group(1))
        if table not in tables:
            fail(f"{stream['name']}: schema.sql does not create table {table}")
        targets, sets = [], []
        for i, (column, kind) in enumerate(tables[table]):
            if kind == HEX:
                targets.append(f"@v{i}")
                sets.append(f"{column} = UNHEX(@v{i})")
            elif kind == NUMBER:
                # A BIT value is a number: loaded as text it would be the bytes of its digits.
                # Backups of Strata up to cc33e74 (no "row format 2" line in schema.sql) wrote
                # it in hexadecimal, like binary columns.
                targets.append(f"@v{i}")
                sets.append(f"{column} = CAST(@v{i} AS UNSIGNED)" if row_format >= 2 else f"{column} = CAST(CONV(@v{i}, 16, 10) AS UNSIGNED)")
            else:
                targets.append(column)
        path = mysql_string(os.path.join(out, "data", stream["name"]))
        if table in versioned:
            # History rows keep their row start and end (MariaDB 10.11+), as the source had them.
            lines.append("SET SESSION system_versioning_insert_history = 1;")
        lines.append(
            f"LOAD DATA LOCAL INFILE {path} INTO TABLE {mysql_ident(table)} CHARACTER SET utf8mb4"
            f" FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\' LINES TERMINATED BY '\\n'"
            f" ({', '.join(targets)})" + (f" SET {', '.join(sets)}" if sets else "") + ";"
        )
    lines.append("DELIMITER ;;")
    lines += statements(post, strip)
    lines.append("DELIMITER ;")
    with open(os.path.join(out, "load.sql"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


def main():
    parser = argparse.ArgumentParser(description="Recover a Strata restore point (any type) without Strata.")
    parser.add_argument("artifacts", nargs="+", help="the artifact files of the chain, in any order")
    parser.add_argument("--out", required=True, help="a new or empty folder for the result")
    parser.add_argument("--keys", help="a decrypted key file (gpg --decrypt keys/<id>.asc): the data keys to open the artifacts with")
    parser.add_argument("--passphrase-file", help="file holding the OpenPGP password: a repository's passphrase from before key files, or one data key (else gpg asks)")
    parser.add_argument("--restore-point", help="backup id to recover (default: the newest given)")
    parser.add_argument("--keep-work", action="store_true", help="keep the unpacked artifacts in OUT/work")
    args = parser.parse_args()
    if args.keys and args.passphrase_file:
        fail("give --keys or --passphrase-file, not both")
    keys = read_keys(args.keys) if args.keys else None
    out = os.path.abspath(args.out)
    if os.path.exists(out) and os.listdir(out):
        fail(f"{out} is not empty")
    work = os.path.join(out, "work")
    manifests = []
    artifacts = []
    for artifact in args.artifacts:
        # backups/<database>/segments/ holds the segments of continuous protection, which
        # replay-segments.py replays onto a recovered base, and backups/<database>/log/ a physical
        # cluster's archived WAL, which its restore_command reads; neither holds restore points.
        if os.path.isdir(artifact):
            print(f"skipping the folder {artifact} (segments: see replay-segments.py; log: the archived WAL, see docs/FORMAT.md)", file=sys.stderr)
            continue
        artifacts.append(artifact)
    for n, artifact in enumerate(artifacts):
        folder = os.path.join(work, str(n))
        os.makedirs(folder)
        manifests.append((folder, unpack_with_keys(artifact, folder, keys) if keys else unpack(artifact, folder, args.passphrase_file)))
    chain = find_chain(manifests, args.restore_point)
    tip_folder, tip = chain[-1]
    print("chain: " + " -> ".join(m["id"] for _, m in chain), file=sys.stderr)
    if len({m["database"] for _, m in chain}) != 1:
        fail("the chain mixes databases")
    assemble(chain, out)
    for entry in ("manifest.json", "schema.sql"):
        shutil.copyfile(os.path.join(tip_folder, entry), os.path.join(out, entry))
    with open(os.path.join(out, "schema.sql"), encoding="utf-8") as f:
        schema = f.read()
    if tip["engine"] == "postgres":
        write_postgres(out, tip, schema)
    elif tip["engine"] == "mysql":
        write_mysql(out, tip, schema)
    if not args.keep_work:
        shutil.rmtree(work)
    print(f"recovered {tip['id']} ({tip['engine']}, {tip['type']}) into {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
