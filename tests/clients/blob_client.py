#!/usr/bin/env python3
"""Drive Azure Blob Storage with the real Python SDK (azure-storage-blob), for the tests.

    blob_client.py --endpoint URL [--ca FILE] [--key KEY | --token-file FILE] ACTION...

--endpoint  the account URL, path-style: https://127.0.0.1:PORT/devstoreaccount1 (the gateway)
            or http://127.0.0.1:PORT/devstoreaccount1 (Azurite directly).
--ca        verify TLS against this CA bundle (the SDK's `connection_verify`).
--key       sign with Shared Key using this account key (the account is the endpoint's first
            path segment). Without it the SDK sends anonymous requests: the gateway signs them.
--token-file  authenticate as an agent with its own OAuth access token read from FILE (a
            TokenCredential, as an agent would use; the SDK sends it as a bearer token, and
            only over https). The gateway verifies it, removes it, and signs with Shared Key.

Actions run in order; each prints exactly one JSON line to stdout, even when it fails:

    create-container:NAME          {"ok": true}
    delete-container:NAME          {"ok": true}
    set-acl:CONTAINER              {"ok": true}  (no public access, no stored access policies)
    list-containers                {"ok": true, "names": [...]}
    list-blobs:CONTAINER           {"ok": true, "names": [...]}
    upload:CONTAINER/BLOB:SIZE     {"ok": true, "sha256": ..., "size": SIZE}  (one PutBlob up
                                   to 64 MiB)
    upload-blocks:CONTAINER/BLOB:SIZE   the same, as PutBlock of 1 MiB blocks + PutBlockList
    download:CONTAINER/BLOB        {"ok": true, "sha256": ..., "size": ...}  (streamed: ranged
                                   GetBlob of 1 MiB each, with x-ms-range, hashed as they come)
    delete-blob:CONTAINER/BLOB     {"ok": true}
    put-text:JSON                  {"ok": true}  JSON is {"blob": "CONTAINER/BLOB", "text": ...,
                                   "metadata": {...}}: one PutBlob of the UTF-8 text as
                                   text/plain, with the metadata
    read-text:CONTAINER/BLOB       {"ok": true, "text": ...}  (download_blob().readall())
    list-metadata:CONTAINER        {"ok": true, "metadata": {BLOB: {...}}}  (ListBlobs with
                                   include=metadata)

Every line also has "action" (as given) and "requests": the HTTP requests the SDK sent for
it, as "METHOD /path?restype=..&comp=.." (only those two query parameters, which decide the
operation). A refused request (an HttpResponseError) gives {"ok": false, "status": 403,
"error_code": "AuthorizationFailure", "message": ...}; any other exception (connection, TLS)
gives {"ok": false, "exception": "ServiceRequestError", "message": ...}. Either way the next
action runs. Exit status 0 unless the arguments are wrong (2).

Uploaded bytes are deterministic: the concatenation of sha256(f"{BLOB}:{i}".encode()) for
i = 0, 1, 2, ... cut to SIZE, where BLOB is the blob name without the container, so a test can
recompute them and their sha256. No retries (retry_total=0): a refused operation fails at once.
"""

import argparse
import hashlib
import json
import sys
import time
from urllib.parse import parse_qsl, urlsplit

from azure.core.credentials import AccessToken
from azure.core.exceptions import HttpResponseError
from azure.storage.blob import BlobServiceClient, ContentSettings

SINGLE_PUT_LIMIT = 64 * 1024 * 1024  # below this, upload is one PutBlob
BLOCK_SIZE = 1024 * 1024  # upload-blocks: PutBlock of this size...
BLOCKS_SINGLE_PUT_LIMIT = 64 * 1024  # ...for anything bigger than this
GET_SIZE = 1024 * 1024  # download: ranged GetBlob of this size, hashed as they come
TIMEOUTS = {"connection_timeout": 10, "read_timeout": 60}

ACTIONS = {
    # name: the argument's shape (None: no argument)
    "create-container": "NAME",
    "delete-container": "NAME",
    "set-acl": "NAME",
    "list-containers": None,
    "list-blobs": "NAME",
    "upload": "BLOB:SIZE",
    "upload-blocks": "BLOB:SIZE",
    "download": "BLOB",
    "delete-blob": "BLOB",
    "put-text": "JSON",
    "read-text": "BLOB",
    "list-metadata": "NAME",
}


def blob_bytes(name, size):
    """The deterministic content of blob `name` with `size` bytes (see the module doc)."""
    out = bytearray()
    i = 0
    while len(out) < size:
        out += hashlib.sha256(f"{name}:{i}".encode()).digest()
        i += 1
    return bytes(out[:size])


class HashSink:
    """A writable stream that only hashes and counts, so a download is never held whole."""

    def __init__(self):
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data):
        self.sha256.update(data)
        self.size += len(data)
        return len(data)

    def writable(self):
        return True


def split_blob(arg):
    container, sep, blob = arg.partition("/")
    if not sep or not container or not blob:
        raise ValueError(f"expected CONTAINER/BLOB, got {arg!r}")
    return container, blob


def parse_action(text):
    name, sep, arg = text.partition(":")
    if name not in ACTIONS:
        raise ValueError(f"unknown action {name!r} (known: {', '.join(ACTIONS)})")
    shape = ACTIONS[name]
    if shape is None:
        if sep:
            raise ValueError(f"{name} takes no argument")
        return name, None
    if not arg:
        raise ValueError(f"{name} needs {shape}")
    if shape == "BLOB:SIZE":
        path, sep, size = arg.rpartition(":")
        if not sep or not size.isdigit():
            raise ValueError(f"{name} needs CONTAINER/BLOB:SIZE, got {arg!r}")
        return name, (split_blob(path), int(size))
    if shape == "BLOB":
        return name, split_blob(arg)
    if shape == "JSON":
        try:
            spec = json.loads(arg)
        except json.JSONDecodeError as e:
            raise ValueError(f"{name} needs a JSON object: {e}") from e
        if not isinstance(spec, dict) or not isinstance(spec.get("text"), str):
            raise ValueError(f"{name} needs a JSON object with a \"text\" string")
        return name, (split_blob(spec.get("blob", "")), spec["text"], spec.get("metadata", {}))
    return name, arg


def run(service, blocks_service, name, arg):
    """Run one action; return the fields of its result line beyond action/ok."""
    if name == "create-container":
        service.create_container(arg)
        return {}
    if name == "delete-container":
        service.delete_container(arg)
        return {}
    if name == "set-acl":
        service.get_container_client(arg).set_container_access_policy(
            signed_identifiers={}, public_access=None
        )
        return {}
    if name == "list-containers":
        return {"names": [c.name for c in service.list_containers()]}
    if name == "list-blobs":
        return {"names": [b.name for b in service.get_container_client(arg).list_blobs()]}
    if name in ("upload", "upload-blocks"):
        (container, blob), size = arg
        data = blob_bytes(blob, size)
        client = blocks_service if name == "upload-blocks" else service
        blob_client = client.get_blob_client(container, blob)
        blob_client.upload_blob(data, overwrite=True, max_concurrency=1)
        return {"sha256": hashlib.sha256(data).hexdigest(), "size": size}
    if name == "download":
        sink = HashSink()
        service.get_blob_client(*arg).download_blob(max_concurrency=1).readinto(sink)
        return {"sha256": sink.sha256.hexdigest(), "size": sink.size}
    if name == "delete-blob":
        service.get_blob_client(*arg).delete_blob()
        return {}
    if name == "put-text":
        (container, blob), text, metadata = arg
        service.get_blob_client(container, blob).upload_blob(
            text.encode(),
            overwrite=True,
            metadata=metadata,
            content_settings=ContentSettings(content_type="text/plain; charset=utf-8"),
        )
        return {}
    if name == "read-text":
        return {"text": service.get_blob_client(*arg).download_blob().readall().decode()}
    if name == "list-metadata":
        blobs = service.get_container_client(arg).list_blobs(include=["metadata"])
        return {"metadata": {b.name: dict(b.metadata or {}) for b in blobs}}
    raise AssertionError(name)


class FileToken:
    """A TokenCredential that holds one access token: the agent's own identity."""

    def __init__(self, token):
        self.token = token

    def get_token(self, *scopes, **kwargs):
        return AccessToken(self.token, int(time.time()) + 300)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", required=True, help="account URL, path-style")
    parser.add_argument("--ca", help="CA bundle to verify TLS against")
    parser.add_argument("--key", help="account key for Shared Key (default: anonymous)")
    parser.add_argument("--token-file", help="file holding the agent's access token")
    parser.add_argument("actions", nargs="+", metavar="ACTION")
    args = parser.parse_args()
    try:
        actions = [(text, *parse_action(text)) for text in args.actions]
    except ValueError as e:
        parser.error(str(e))

    credential = None
    if args.key:
        account = urlsplit(args.endpoint).path.strip("/").split("/")[0]
        if not account:
            parser.error("--key needs the account in the endpoint's path")
        credential = {"account_name": account, "account_key": args.key}
    if args.token_file:
        if args.key:
            parser.error("--key and --token-file are exclusive")
        with open(args.token_file, encoding="ascii") as f:
            credential = FileToken(f.read().strip())

    sent = []

    def record(request):
        # The pipeline's raw request hook sees each HTTP request, retries included.
        http = request.http_request
        url = urlsplit(http.url)
        query = "&".join(f"{k}={v}" for k, v in parse_qsl(url.query) if k in ("restype", "comp"))
        sent.append(f"{http.method} {url.path}" + (f"?{query}" if query else ""))

    def service(**sizes):
        return BlobServiceClient(
            account_url=args.endpoint,
            credential=credential,
            connection_verify=args.ca or True,
            retry_total=0,
            raw_request_hook=record,
            **TIMEOUTS,
            **sizes,
        )

    gets = {"max_single_get_size": GET_SIZE, "max_chunk_get_size": GET_SIZE}
    single = service(max_single_put_size=SINGLE_PUT_LIMIT, max_block_size=BLOCK_SIZE, **gets)
    blocks = service(max_single_put_size=BLOCKS_SINGLE_PUT_LIMIT, max_block_size=BLOCK_SIZE, **gets)

    for text, name, arg in actions:
        sent.clear()
        try:
            line = {"action": text, "ok": True, **run(single, blocks, name, arg)}
        except HttpResponseError as e:
            line = {
                "action": text,
                "ok": False,
                "status": e.status_code,
                "error_code": e.error_code,
                "message": str(e.message or e),
            }
        except Exception as e:  # noqa: BLE001 - reported, then the next action runs
            line = {"action": text, "ok": False, "exception": type(e).__name__, "message": str(e)}
        line["requests"] = list(sent)
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
