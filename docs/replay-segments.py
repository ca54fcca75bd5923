#!/usr/bin/env python3
"""Replay Strata segments (continuous protection of a SQLite database) without Strata.

Needs Python 3.8+ (standard library only), recover-chain.py next to it, and the command-line
tools gpg (encrypted segments, profile "compat") and zstd or gzip (compressed ones).
docs/FORMAT.md ("Segments") explains every step; this script only automates them.

    python3 replay-segments.py --db DATABASE_FILE --base BACKUP_ID [--until ISO_TIME]
                               [--keys FILE | --passphrase-file FILE] SEGMENT...

DATABASE_FILE is the base restore point, recovered with recover-chain.py (its data/main.db, or a
copy of it: it is changed in place). Give it the segment artifacts of the database
(backups/<database>/segments/*), in any order; those of other bases are ignored. It

  1. decrypts and decompresses each segment as recover-chain.py does and reads segment.json and
     changes.bin from its tar;
  2. keeps the segments whose "base" is BACKUP_ID (of those a merged segment covers, the merged
     one), orders them by "sequence" and checks that they
     form one chain: sequences 1, 2, 3... without a gap, each naming the one before ("previous")
     and starting where it ended ("from" equals the previous "to"), each one's changes matching
     "changesSha256";
  3. replays, in order, every transaction whose "observedAt" is at or before --until (all of
     them without it): each write-ahead-log frame of it (24-byte header, then one page) writes
     its page at (page number - 1) * page size; a frame whose header has a database size ends a
     transaction, and after the last transaction replayed the file is cut to that many pages;
  4. prints the last transaction replayed and when it was seen committed.

Then run `sqlite3 DATABASE_FILE 'PRAGMA integrity_check'`.
"""
import argparse
import hashlib
import importlib.util
import io
import json
import os
import struct
import sys
import tarfile

HERE = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location("recover_chain", os.path.join(HERE, "recover-chain.py"))
recover_chain = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(recover_chain)

FRAME_HEADER = 24


def fail(message):
    sys.exit("replay-segments: " + message)


def read_segment(artifact, passphrase_file, secret=None):
    """(manifest, changes) of one segment artifact."""
    source, procs = recover_chain.open_layers(artifact, passphrase_file, secret)
    manifest = None
    changes = None
    problem = None
    try:
        with tarfile.open(fileobj=source, mode="r|") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                body = tar.extractfile(member).read()
                if member.name == "segment.json":
                    manifest = json.loads(body.decode("utf-8"))
                elif member.name == "changes.bin":
                    changes = body
    except (tarfile.TarError, EOFError, ValueError) as err:
        problem = f"the archive does not read ({err})"
    if problem is None:
        while source.read(1 << 16):
            pass
    source.close()
    for proc in procs:
        if proc.wait() != 0:
            if proc.args[0] == "gpg" and secret is not None:
                raise recover_chain.GpgFailed()
            fail(f"{artifact}: {proc.args[0]} failed (exit {proc.returncode}); wrong passphrase or damaged file?")
    if problem or manifest is None or changes is None:
        if secret is not None and procs and procs[0].args[0] == "gpg":
            raise recover_chain.GpgFailed()
        fail(f"{artifact}: {problem or 'no segment.json or changes.bin'}; damaged or truncated file?")
    if manifest.get("format") != "strata-segment" or manifest.get("version") not in (1, 2):
        fail(f"{artifact}: not a Strata segment of version 1 or 2")
    return manifest, changes


def read_segment_with_keys(artifact, keys):
    if not artifact.endswith(".gpg"):
        return read_segment(artifact, None)
    for _, secret in keys:
        try:
            return read_segment(artifact, None, secret)
        except recover_chain.GpgFailed:
            continue
    fail(f"{artifact}: none of the {len(keys)} data key(s) opens it")


def main():
    parser = argparse.ArgumentParser(description="Replay Strata segments onto a recovered SQLite base restore point.")
    parser.add_argument("segments", nargs="+", help="segment artifacts (backups/<database>/segments/*), in any order")
    parser.add_argument("--db", required=True, help="the recovered base database file; changed in place")
    parser.add_argument("--base", required=True, help="the id of the base restore point (the segments' \"base\")")
    parser.add_argument("--until", help="replay transactions seen committed at or before this ISO time (UTC, as in segment.json); default: all")
    parser.add_argument("--keys", help="a decrypted key file: the data keys to open the segments with")
    parser.add_argument("--passphrase-file", help="file holding the OpenPGP password (else gpg asks)")
    args = parser.parse_args()
    if args.keys and args.passphrase_file:
        fail("give --keys or --passphrase-file, not both")
    keys = recover_chain.read_keys(args.keys) if args.keys else None
    until = args.until
    if until is not None and not until.endswith("Z"):
        fail("--until must be a UTC time ending in Z, e.g. 2026-12-01T14:03:27.000Z")
    chain = []
    for artifact in args.segments:
        manifest, changes = read_segment_with_keys(artifact, keys) if keys else read_segment(artifact, args.passphrase_file)
        if manifest["base"] == args.base:
            chain.append((manifest, changes, artifact))
    # A merged segment (version 2, from compaction) holds the sequences merged.firstSequence to
    # sequence. Parts it replaced can still be there if a compaction was interrupted: the widest wins.
    def first_sequence(m):
        return m["merged"]["firstSequence"] if m.get("merged") else m["sequence"]

    def link_id(m):
        return m["merged"]["lastId"] if m.get("merged") else m["id"]

    def covered(m):
        return any(
            o is not m and first_sequence(o) <= first_sequence(m) and m["sequence"] <= o["sequence"]
            and (o["sequence"] - first_sequence(o) > m["sequence"] - first_sequence(m) or o["id"] < m["id"])
            for o, _, _ in chain
        )

    chain = [item for item in chain if not covered(item[0])]
    chain.sort(key=lambda item: item[0]["sequence"])
    if not chain:
        fail(f"no segment has base {args.base}")
    previous = None
    for manifest, changes, artifact in chain:
        expected = 1 if previous is None else previous["sequence"] + 1
        if first_sequence(manifest) != expected:
            fail(f"segment {expected} after {args.base} is missing (next given: {first_sequence(manifest)}, {artifact})")
        if manifest["previous"] != (link_id(previous) if previous else None):
            fail(f"{artifact}: names {manifest['previous']} before it, not {link_id(previous) if previous else None}")
        if previous is not None and manifest["from"] != previous["to"]:
            fail(f"{artifact}: does not start where segment {previous['sequence']} ended")
        if hashlib.sha256(changes).hexdigest() != manifest["changesSha256"] or len(changes) != manifest["changesBytes"]:
            fail(f"{artifact}: changes.bin does not match its manifest")
        if sum(t["bytes"] for t in manifest["transactions"]) != len(changes):
            fail(f"{artifact}: its transactions do not add up to changes.bin")
        previous = manifest
    page_size = chain[0][0]["from"]["pageSize"]
    frame_bytes = FRAME_HEADER + page_size
    replayed = 0
    reached = None
    size = None
    with open(args.db, "r+b") as db:
        done = False
        for manifest, changes, _ in chain:
            at = 0
            for t in manifest["transactions"]:
                if until is not None and t["observedAt"] > until:
                    done = True
                    break
                body = io.BytesIO(changes[at : at + t["bytes"]])
                at += t["bytes"]
                if t["bytes"] % frame_bytes != 0:
                    fail(f"segment {manifest['sequence']}: a transaction of {t['bytes']} bytes is not whole frames of {frame_bytes}")
                while True:
                    frame = body.read(frame_bytes)
                    if not frame:
                        break
                    page, commit = struct.unpack(">II", frame[:8])
                    db.seek((page - 1) * page_size)
                    db.write(frame[FRAME_HEADER:])
                    if commit:
                        size = commit
                replayed += t.get("commits", 1)
                reached = t["observedAt"]
            if done:
                break
        if size is not None:
            db.truncate(size * page_size)
        db.flush()
        os.fsync(db.fileno())
    if reached is None:
        print(f"replayed nothing: no transaction was seen committed by {until}", file=sys.stderr)
    else:
        print(f"replayed {replayed} transaction(s); the database as of {reached}", file=sys.stderr)


if __name__ == "__main__":
    main()
