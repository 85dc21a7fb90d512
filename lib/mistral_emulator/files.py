"""The Files API: upload (multipart), list, retrieve, delete, download (octet-stream), signed URL."""

from __future__ import annotations

import re
import uuid
from typing import Any

from .errors import query_int, unprocessable
from .state import State, file_view

MAX_FILE_BYTES = 512 * 1000 * 1000  # known limitations: 512 MB


def upload(api: Any, query: dict, body: bytes, headers: Any) -> dict:
    parts = multipart(headers.get("Content-Type", ""), body)
    if "file" not in parts:
        raise unprocessable("Field required", ["body", "file"])
    name, content = parts["file"]
    if len(content) > MAX_FILE_BYTES:
        raise unprocessable(f"file is larger than the {MAX_FILE_BYTES // 1_000_000} MB limit", ["body", "file"])
    purpose = (parts.get("purpose") or (None, b"fine-tune"))[1].decode()
    sample_type = "batch_request" if purpose == "batch" else "instruct"
    state: State = api.state
    meta = state.add_file(name or "upload.jsonl", content, purpose, sample_type, "upload")
    state.record["uploads"].append({"id": meta["id"], "filename": meta["filename"], "bytes": meta["bytes"],
                                    "purpose": purpose, "at": state.now()})
    state.save()
    return file_view(meta)


def list_files(api: Any, query: dict, body: bytes, headers: Any) -> dict:
    files = [f for f in api.state.files.values() if not f["deleted"]
             and api.state.now() <= f.get("_kept_until", float("inf"))]
    for key in ("sample_type", "source", "purpose", "mimetypes"):
        wanted = query.get(key)
        if wanted:
            files = [f for f in files if f.get("mimetype" if key == "mimetypes" else key) in wanted]
    if query.get("search"):
        files = [f for f in files if query["search"][0] in f["filename"]]
    page, size = query_int(query, "page", 0), query_int(query, "page_size", 100)
    return {"data": [file_view(f) for f in files[page * size:(page + 1) * size]], "object": "list",
            "total": len(files)}


def retrieve(api: Any, query: dict, body: bytes, headers: Any, file_id: str) -> dict:
    return {**file_view(api.state.file(file_id)), "deleted": False}


def delete(api: Any, query: dict, body: bytes, headers: Any, file_id: str) -> dict:
    api.state.file(file_id)["deleted"] = True
    api.state.record["deleted_files"].append(file_id)
    api.state.save()
    return {"id": file_id, "object": "file", "deleted": True}


def download(api: Any, query: dict, body: bytes, headers: Any, file_id: str) -> bytes:
    return api.state.content(file_id)


def signed_url(api: Any, query: dict, body: bytes, headers: Any, file_id: str) -> dict:
    api.state.file(file_id)
    expiry = query_int(query, "expiry", 24)
    if not 1 <= expiry <= 168:
        raise unprocessable("expiry must be between 1 and 168 hours", ["query", "expiry"])
    return {"url": f"{api.base_url}/v1/files/{file_id}/content?signature={uuid.uuid4().hex}&expiry={expiry}"}


def multipart(content_type: str, body: bytes) -> dict[str, tuple[str | None, bytes]]:
    """The parts of a multipart/form-data body: name -> (filename, bytes). Split on the boundary directly
    (the email parser takes seconds on a large upload)."""
    found = re.search(r'boundary="?([^";]+)"?', content_type) if content_type.startswith("multipart/form-data") \
        else None
    if not found:
        raise unprocessable("expected multipart/form-data", ["body"])
    parts = {}
    for chunk in body.split(b"--" + found.group(1).encode())[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, data = chunk.partition(b"\r\n\r\n")
        text = head.decode("utf-8", "replace")
        name, filename = re.search(r'\bname="([^"]*)"', text), re.search(r'\bfilename="([^"]*)"', text)
        if name:
            parts[name.group(1)] = (filename.group(1) if filename else None,
                                    data[:-2] if data.endswith(b"\r\n") else data)
    return parts
