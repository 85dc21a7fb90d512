"""The floor `make bench` compares make batch with: one Python process with the SDK doing the same local work
and nothing more. It selects the pending rows, reads each text file and writes the same request line
objbatch would send, uploads them, creates the job, polls every second, downloads the results, parses each
answer with json.loads and writes the rows with one executemany: no validation, no ledger, no recovery.

    python tests/bench_floor.py DB      (MISTRAL_SERVER_URL and MISTRAL_API_KEY set)
"""

from __future__ import annotations

import io
import json
import os
import sqlite3
import sys
import time
from pathlib import Path

from mistralai.client import Mistral

from objbatch import prompt

MODEL = "mistral-small-latest"


def requests(conn: sqlite3.Connection) -> tuple[bytes, dict[str, str]]:
    buffer, paths = io.BytesIO(), {}
    rows = conn.execute("SELECT file_path, filename, metadata_json FROM files WHERE COALESCE(is_deleted, 0) = 0 "
                        "AND COALESCE(ai_metadata_status, 'pending') = 'pending' ORDER BY file_path")
    for index, (path, name, scanner) in enumerate(rows):
        if not path.endswith((".txt", ".md")):
            continue
        try:
            data = Path(path).read_bytes()
        except OSError:
            continue
        if len(data) >= 830_000:
            continue
        record = {"file_path": path, "filename": name, "scanner_metadata": json.loads(scanner or "{}")}
        body, _ = prompt.request_body(MODEL, record, data.decode("utf-8", "replace"), prompt.DEFAULT_TEXT_TOKENS)
        buffer.write((json.dumps({"custom_id": str(index), "body": body}) + "\n").encode())
        paths[str(index)] = path
    return buffer.getvalue(), paths


def main(db: str) -> None:
    conn = sqlite3.connect(db)
    if "ai_metadata_json" not in {r[1] for r in conn.execute("PRAGMA table_info(files)")}:
        conn.execute("ALTER TABLE files ADD COLUMN ai_metadata_json TEXT")
    data, paths = requests(conn)
    sdk = Mistral(api_key=os.environ["MISTRAL_API_KEY"], server_url=os.environ["MISTRAL_SERVER_URL"])
    upload = sdk.files.upload(file={"file_name": "requests.jsonl", "content": data}, purpose="batch")
    job = sdk.batch.jobs.create(endpoint="/v1/chat/completions", input_files=[upload.id], model=MODEL)
    while job.status in ("QUEUED", "RUNNING", "CANCELLATION_REQUESTED"):
        time.sleep(1)
        job = sdk.batch.jobs.get(job_id=job.id)
    response = sdk.files.download(file_id=job.output_file)
    rows = []
    for line in response.read().splitlines():
        result = json.loads(line)
        answer = result["response"]["body"]["choices"][0]["message"]["content"]
        rows.append((answer, "extracted", paths[result["custom_id"]]))
    conn.executemany("UPDATE files SET ai_metadata_json = ?, ai_metadata_status = ? WHERE file_path = ?", rows)
    conn.commit()


if __name__ == "__main__":
    main(sys.argv[1])
