"""Tests of the fake's Batch API (files, batches, lifecycle, faults) over real HTTP with httpx.

Why: evalkit's batch executor is written and tested against this fake, so the fake must speak
the real API's objects, line shapes and errors, and every fault a batch test scripts must
happen as documented.
"""

from __future__ import annotations

import json
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fake_openai import FakeOpenAI
from fake_openai.batch_state import BatchFault
from tests.openapi_spec import assert_valid, spec_errors

REPO_ROOT = Path(__file__).resolve().parent.parent
CHAT = "/v1/chat/completions"
FINAL = {"completed", "failed", "expired", "cancelled"}
ORDER = ["validating", "in_progress", "finalizing", "completed"]


@pytest.fixture(scope="module")
def shared() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(batch_seconds=0.2) as srv:
        yield srv


@pytest.fixture
def server(shared: FakeOpenAI) -> FakeOpenAI:
    shared.reset()
    shared.api_key = None
    return shared


@pytest.fixture
def client(server: FakeOpenAI) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10.0) as c:
        yield c


def chat_body(i: int, model: str = "fake-model", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": f"ANSWER: a{i}"}], **extra}


def line(custom_id: str, body: Any, url: str = CHAT, method: str = "POST") -> str:
    return json.dumps({"custom_id": custom_id, "method": method, "url": url, "body": body})


def jsonl(bodies: list[dict[str, Any]], url: str = CHAT) -> bytes:
    return "\n".join(line(f"c{i}", b, url) for i, b in enumerate(bodies)).encode() + b"\n"


def upload(
    client: httpx.Client, data: bytes, filename: str = "in.jsonl", purpose: str = "batch"
) -> httpx.Response:
    return client.post("/files", data={"purpose": purpose}, files={"file": (filename, data)})


def create(client: httpx.Client, file_id: str, endpoint: str = CHAT, **extra: Any) -> Any:
    body = {"input_file_id": file_id, "endpoint": endpoint, "completion_window": "24h", **extra}
    assert_valid("batches", body)
    r = client.post("/batches", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def submit(client: httpx.Client, bodies: list[dict[str, Any]], endpoint: str = CHAT) -> Any:
    r = upload(client, jsonl(bodies, endpoint))
    assert r.status_code == 200, r.text
    return create(client, r.json()["id"], endpoint)


def wait(client: httpx.Client, batch_id: str, until: set[str] = FINAL) -> tuple[Any, list[str]]:
    """Poll until the batch's status is in `until`; the statuses seen, in order."""
    seen: list[str] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        batch = client.get(f"/batches/{batch_id}").json()
        if not seen or seen[-1] != batch["status"]:
            seen.append(batch["status"])
        if batch["status"] in until:
            return batch, seen
        time.sleep(0.01)
    raise AssertionError(f"batch {batch_id} stayed {seen[-1]}")


def records(client: httpx.Client, file_id: str | None) -> list[Any]:
    assert file_id is not None
    text = client.get(f"/files/{file_id}/content").text
    return [json.loads(x) for x in text.splitlines()]


def strip(payload: dict[str, Any]) -> dict[str, Any]:
    """An answer without what differs between two calls (its id and creation time)."""
    return {k: v for k, v in payload.items() if k not in ("id", "created")}


# ----------------------------------------------------------------------------- files


def test_upload_download_round_trip_and_delete(client: httpx.Client) -> None:
    data = jsonl([chat_body(0), chat_body(1)])
    meta = upload(client, data).json()
    assert meta["id"].startswith("file-") and meta["object"] == "file"
    assert (meta["bytes"], meta["filename"], meta["purpose"]) == (len(data), "in.jsonl", "batch")
    assert meta["status"] == "processed" and isinstance(meta["created_at"], int)
    assert client.get(f"/files/{meta['id']}").json() == meta
    assert client.get(f"/files/{meta['id']}/content").content == data
    assert [f["id"] for f in client.get("/files").json()["data"]] == [meta["id"]]
    deleted = client.delete(f"/files/{meta['id']}").json()
    assert deleted == {"id": meta["id"], "object": "file", "deleted": True}
    for path in (f"/files/{meta['id']}", f"/files/{meta['id']}/content"):
        r = client.get(path)
        assert r.status_code == 404
        assert r.json()["error"]["message"] == f"No such File object: {meta['id']}"


@pytest.mark.parametrize(
    ("fields", "files", "param"),
    [
        ({}, {"file": ("in.jsonl", b"{}\n")}, "purpose"),
        ({"purpose": "nonsense"}, {"file": ("in.jsonl", b"{}\n")}, "purpose"),
        ({"purpose": "fine-tune"}, {"file": ("in.jsonl", b"{}\n")}, "purpose"),
        ({"purpose": "batch"}, {"other": ("x", b"")}, "file"),
        ({"purpose": "batch"}, {"file": ("in.csv", b"a,b\n")}, "file"),
        ({"purpose": "batch"}, {"file": ("in.jsonl", b"\xff\xfe")}, "file"),
    ],
)
def test_upload_errors_are_400_with_param(
    client: httpx.Client, fields: dict[str, str], files: dict[str, Any], param: str
) -> None:
    r = client.post("/files", data=fields, files=files)
    assert r.status_code == 400
    assert r.json()["error"]["param"] == param
    assert client.get("/files").json()["data"] == []


def test_upload_needs_multipart(client: httpx.Client) -> None:
    assert client.post("/files", json={"purpose": "batch"}).status_code == 400


def test_upload_needs_the_key(server: FakeOpenAI, client: httpx.Client) -> None:
    server.api_key = "sk-batch"
    assert upload(client, b"{}\n").status_code == 401
    assert client.get("/batches").status_code == 401
    r = client.post(
        "/files",
        data={"purpose": "batch"},
        files={"file": ("in.jsonl", b"{}\n")},
        headers={"Authorization": "Bearer sk-batch"},
    )
    assert r.status_code == 200


def test_scripted_429_hits_an_upload_then_it_goes_through(
    server: FakeOpenAI, client: httpx.Client
) -> None:
    server.script([{"status": 429, "retry_after": "0.05"}])
    limited = upload(client, jsonl([chat_body(0)]))
    assert limited.status_code == 429
    assert limited.headers["retry-after"] == "0.05"
    assert server.batch_stats()["uploads"] == 0
    assert upload(client, jsonl([chat_body(0)])).status_code == 200
    assert server.batch_stats()["uploads"] == 1


# ----------------------------------------------------------------------------- create


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"endpoint": None}, "endpoint"),
        ({"completion_window": "1h"}, "completion_window"),
        ({"endpoint": "/v1/nonsense"}, "endpoint"),
        ({"input_file_id": 7}, "input_file_id"),
        ({"metadata": {"k": 1}}, "metadata.k"),
    ],
)
def test_create_rejects_what_the_spec_rejects(
    client: httpx.Client, change: dict[str, Any], param: str
) -> None:
    file_id = upload(client, jsonl([chat_body(0)])).json()["id"]
    body = {"input_file_id": file_id, "endpoint": CHAT, "completion_window": "24h", **change}
    body = {k: v for k, v in body.items() if v is not None}
    assert spec_errors("batches", body)
    r = client.post("/batches", json=body)
    assert r.status_code == 400
    assert r.json()["error"]["param"] == param


@pytest.mark.parametrize("purpose_file", ["unknown", "output"])
def test_create_needs_an_uploaded_batch_file(client: httpx.Client, purpose_file: str) -> None:
    file_id = "file-nope"
    if purpose_file == "output":  # an output file exists but is not an input
        batch = submit(client, [chat_body(0)])
        file_id = wait(client, batch["id"])[0]["output_file_id"]
    body = {"input_file_id": file_id, "endpoint": CHAT, "completion_window": "24h"}
    r = client.post("/batches", json=body)
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "input_file_id"


def test_create_refuses_unknown_keys_and_unserved_endpoints(client: httpx.Client) -> None:
    file_id = upload(client, jsonl([chat_body(0)])).json()["id"]
    base = {"input_file_id": file_id, "endpoint": CHAT, "completion_window": "24h"}
    r = client.post("/batches", json={**base, "priority": "high"})
    assert (r.status_code, r.json()["error"]["param"]) == (400, "priority")
    r = client.post("/batches", json={**base, "endpoint": "/v1/embeddings"})
    assert (r.status_code, r.json()["error"]["param"]) == (400, "endpoint")
    crowded = {f"k{i}": "v" for i in range(17)}  # the description's text says at most 16
    r = client.post("/batches", json={**base, "metadata": crowded})
    assert (r.status_code, r.json()["error"]["param"]) == (400, "metadata")
    kept = create(client, file_id, metadata={"suite": "triage"})
    assert kept["metadata"] == {"suite": "triage"}


# ----------------------------------------------------------------------------- lifecycle


def test_batch_completes_with_the_online_answers(server: FakeOpenAI, client: httpx.Client) -> None:
    bodies = [chat_body(i, max_tokens=5) for i in range(4)]
    for body in bodies:
        assert_valid("chat", body)
    batch = submit(client, bodies)
    assert batch["status"] == "validating" and batch["id"].startswith("batch_")
    assert batch["request_counts"] == {"total": 0, "completed": 0, "failed": 0}
    assert (batch["errors"], batch["output_file_id"], batch["metadata"]) == (None, None, None)
    done, seen = wait(client, batch["id"])
    assert seen == [s for s in ORDER if s in seen] and seen[-1] == "completed"
    assert done["request_counts"] == {"total": 4, "completed": 4, "failed": 0}
    assert done["model"] == "fake-model" and done["error_file_id"] is None
    for stamp in ("in_progress_at", "finalizing_at", "completed_at", "expires_at"):
        assert done[stamp] >= done["created_at"]
    assert done["failed_at"] is None and done["cancelled_at"] is None
    assert done["usage"]["total_tokens"] > 0
    out = records(client, done["output_file_id"])
    assert client.get(f"/files/{done['output_file_id']}").json()["purpose"] == "batch_output"
    by_id = {r["custom_id"]: r for r in out}
    assert sorted(by_id) == ["c0", "c1", "c2", "c3"]
    for i, body in enumerate(bodies):
        rec = by_id[f"c{i}"]
        assert rec["id"].startswith("batch_req_") and rec["error"] is None
        assert rec["response"]["status_code"] == 200
        assert rec["response"]["request_id"].startswith("req_")
        online = client.post("/chat/completions", json=body).json()
        assert strip(rec["response"]["body"]) == strip(online)
    assert server.count("/v1/chat/completions") == 4  # only the comparisons above went online


@pytest.mark.parametrize(
    ("endpoint", "body"),
    [
        ("/v1/completions", {"model": "m", "prompt": "def f():", "suffix": "\n", "max_tokens": 3}),
        ("/v1/completions", {"model": "m", "prompt": "ANSWER: x", "logprobs": 2}),
        ("/v1/moderations", {"model": "omni-moderation-latest", "input": ["FLAG_ME", "ok"]}),
        (CHAT, {"model": "m", "messages": []}),  # a 400 online is a 400 line
        (CHAT, {"model": "o3", "messages": [{"role": "user", "content": "x"}], "max_tokens": 9}),
    ],
)
def test_each_line_answers_as_online(client: httpx.Client, endpoint: str, body: Any) -> None:
    done, _ = wait(client, submit(client, [body], endpoint)["id"])
    online = client.post(endpoint.removeprefix("/v1"), json=body)
    file_id = done["output_file_id"] if online.status_code == 200 else done["error_file_id"]
    (rec,) = records(client, file_id)
    assert rec["response"]["status_code"] == online.status_code
    assert strip(rec["response"]["body"]) == strip(online.json())
    assert rec["error"] is None


def test_output_order_is_shuffled(client: httpx.Client) -> None:
    done, _ = wait(client, submit(client, [chat_body(i) for i in range(30)])["id"])
    order = [r["custom_id"] for r in records(client, done["output_file_id"])]
    assert sorted(order) == sorted(f"c{i}" for i in range(30))
    assert order != [f"c{i}" for i in range(30)]


def test_get_list_and_pagination(client: httpx.Client) -> None:
    ids = [submit(client, [chat_body(i)], CHAT)["id"] for i in range(3)]
    listed = client.get("/batches").json()
    assert listed["object"] == "list" and not listed["has_more"]
    assert [b["id"] for b in listed["data"]] == ids[::-1]  # newest first
    page = client.get("/batches", params={"limit": 2}).json()
    assert [b["id"] for b in page["data"]] == [ids[2], ids[1]] and page["has_more"]
    assert page["last_id"] == ids[1]
    rest = client.get("/batches", params={"limit": 2, "after": page["last_id"]}).json()
    assert [b["id"] for b in rest["data"]] == [ids[0]] and not rest["has_more"]
    assert client.get("/batches", params={"limit": 0}).status_code == 400
    assert client.get(f"/batches/{ids[0]}").json()["id"] == ids[0]
    missing = client.get("/batches/batch_nope")
    assert missing.status_code == 404 and missing.json()["error"]["param"] == "batch_id"
    assert client.post("/batches/batch_nope/cancel").status_code == 404


def test_cancel_keeps_the_lines_done(server: FakeOpenAI, client: httpx.Client) -> None:
    server.script_batches([{"stuck_after": 0.5}])
    batch = submit(client, [chat_body(i) for i in range(10)])
    deadline = time.monotonic() + 30
    while client.get(f"/batches/{batch['id']}").json()["request_counts"]["completed"] < 5:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert client.get(f"/batches/{batch['id']}").json()["status"] == "in_progress"
    cancelling = client.post(f"/batches/{batch['id']}/cancel").json()
    assert cancelling["status"] == "cancelling" and cancelling["cancelling_at"] is not None
    done, _ = wait(client, batch["id"])
    assert done["status"] == "cancelled" and done["cancelled_at"] is not None
    assert done["request_counts"] == {"total": 10, "completed": 5, "failed": 5}
    kept = records(client, done["output_file_id"])
    assert sorted(r["custom_id"] for r in kept) == [f"c{i}" for i in range(5)]
    unrun = records(client, done["error_file_id"])
    assert sorted(r["custom_id"] for r in unrun) == [f"c{i}" for i in range(5, 10)]
    assert {(r["response"], r["error"]["code"]) for r in unrun} == {(None, "batch_cancelled")}
    again = client.post(f"/batches/{batch['id']}/cancel")
    assert again.status_code == 409 and "cancelled" in again.json()["error"]["message"]


def test_cancel_while_validating(server: FakeOpenAI, client: httpx.Client) -> None:
    server.script_batches([{"seconds": 3600}])  # validating for six minutes
    batch = submit(client, [chat_body(0)])
    assert client.post(f"/batches/{batch['id']}/cancel").json()["status"] == "cancelling"
    done, _ = wait(client, batch["id"])
    assert done["status"] == "cancelled" and done["output_file_id"] is None
    assert records(client, done["error_file_id"])[0]["error"]["code"] == "batch_cancelled"


def test_expired_batch_keeps_half_and_expires_the_rest(
    server: FakeOpenAI, client: httpx.Client
) -> None:
    server.script_batches([{"expire_after": 0.5}])
    done, seen = wait(client, submit(client, [chat_body(i) for i in range(10)])["id"])
    assert done["status"] == "expired" and "finalizing" not in seen
    assert done["expired_at"] is not None and done["completed_at"] is None
    assert done["request_counts"] == {"total": 10, "completed": 5, "failed": 5}
    assert len(records(client, done["output_file_id"])) == 5
    expired = records(client, done["error_file_id"])
    assert len(expired) == 5
    for rec in expired:
        assert rec["response"] is None and rec["error"]["code"] == "batch_expired"
        assert rec["error"]["message"]


def test_scripted_validation_failure(server: FakeOpenAI, client: httpx.Client) -> None:
    server.script_batches([{"fail_validation": True}])
    done, seen = wait(client, submit(client, [chat_body(0)])["id"])
    assert seen[-1] == "failed" and "in_progress" not in seen
    assert done["failed_at"] is not None and done["output_file_id"] is None
    assert done["request_counts"] == {"total": 0, "completed": 0, "failed": 0}
    assert done["errors"]["object"] == "list"
    assert [e["code"] for e in done["errors"]["data"]] == ["token_limit_exceeded"]
    assert server.batch_stats()["lines"] == 0


def test_bad_input_lines_fail_validation(server: FakeOpenAI, client: httpx.Client) -> None:
    text = "\n".join(
        [
            line("a", chat_body(0)),
            "{not json",
            line("a", chat_body(1)),
            line("b", chat_body(2), url="/v1/completions"),
            line("c", chat_body(3), method="GET"),
            line("d", chat_body(4, model="other-model")),
            json.dumps({"custom_id": "e", "method": "POST", "url": CHAT}),
        ]
    )
    batch = create(client, upload(client, text.encode()).json()["id"])
    done, _ = wait(client, batch["id"])
    assert done["status"] == "failed"
    found = [(e["code"], e["line"], e["param"]) for e in done["errors"]["data"]]
    assert found == [
        ("invalid_json_line", 2, None),
        ("duplicate_custom_id", 3, "custom_id"),
        ("url_mismatch", 4, "url"),
        ("invalid_method", 5, "method"),
        ("model_mismatch", 6, "body.model"),
        ("missing_required_parameter", 7, "body"),
    ]
    assert all(e["message"] for e in done["errors"]["data"])
    assert server.batch_stats()["lines"] == 0


@pytest.mark.parametrize(("count", "code"), [(0, "empty_file"), (50_001, "too_many_tasks")])
def test_empty_and_oversized_files_fail(client: httpx.Client, count: int, code: str) -> None:
    text = "".join(line(f"c{i}", {"model": "m"}) + "\n" for i in range(count)) or "\n"
    done, _ = wait(client, create(client, upload(client, text.encode()).json()["id"])["id"])
    assert done["status"] == "failed"
    assert [e["code"] for e in done["errors"]["data"]] == [code]


# ----------------------------------------------------------------------------- line faults


def test_error_rate_lines_answer_500(server: FakeOpenAI, client: httpx.Client) -> None:
    server.script_batches([{"error_rate": 0.2}])
    done, _ = wait(client, submit(client, [chat_body(i) for i in range(10)])["id"])
    assert done["status"] == "completed"
    assert done["request_counts"] == {"total": 10, "completed": 8, "failed": 2}
    failed = records(client, done["error_file_id"])
    assert len(failed) == 2 and len(records(client, done["output_file_id"])) == 8
    for rec in failed:
        assert rec["response"]["status_code"] == 500 and rec["error"] is None
        assert rec["response"]["body"]["error"]["type"] == "server_error"


def test_stream_lines_are_refused(client: httpx.Client) -> None:
    done, _ = wait(client, submit(client, [chat_body(0, stream=True)])["id"])
    (rec,) = records(client, done["error_file_id"])
    assert rec["response"]["status_code"] == 400
    assert rec["response"]["body"]["error"]["param"] == "stream"


def test_truncated_output_file_ends_mid_line(server: FakeOpenAI, client: httpx.Client) -> None:
    server.script_batches([{"truncate_output": True}])
    done, _ = wait(client, submit(client, [chat_body(i) for i in range(4)])["id"])
    text = client.get(f"/files/{done['output_file_id']}/content").text
    assert not text.endswith("\n")
    *whole, cut = text.split("\n")
    assert len(whole) == 3 and all(json.loads(x)["response"] for x in whole)
    with pytest.raises(json.JSONDecodeError):
        json.loads(cut)


def test_extra_output_line_with_an_unsent_custom_id(
    server: FakeOpenAI, client: httpx.Client
) -> None:
    server.script_batches(["ok", {"extra_custom_id": "ghost-1"}])
    plain, _ = wait(client, submit(client, [chat_body(0)])["id"])
    assert [r["custom_id"] for r in records(client, plain["output_file_id"])] == ["c0"]
    done, _ = wait(client, submit(client, [chat_body(i) for i in range(3)])["id"])
    ids = sorted(r["custom_id"] for r in records(client, done["output_file_id"]))
    assert ids == ["c0", "c1", "c2", "ghost-1"]


@pytest.mark.parametrize(
    "bad",
    ["nope", 3, {"stuck_after": 2}, {"expire_after": 0.5, "stuck_after": 0.5}, {"typo": 1}],
)
def test_invalid_batch_faults_fail_at_scripting(
    server: FakeOpenAI, client: httpx.Client, bad: Any
) -> None:
    with pytest.raises(ValueError):
        server.script_batches([bad])
    with pytest.raises(ValueError):
        BatchFault.parse(bad)
    assert client.post(server.base_url + "/_batch_script", json=[bad]).status_code == 400


# ----------------------------------------------------------------------------- counting


def test_stats_tell_online_requests_from_batch_lines(
    server: FakeOpenAI, client: httpx.Client
) -> None:
    assert client.post("/chat/completions", json=chat_body(9)).status_code == 200
    batch = submit(client, [chat_body(i) for i in range(3)])
    with httpx.Client(base_url=server.url, timeout=10.0) as other:  # a client that re-attaches
        done, _ = wait(other, batch["id"])
        assert [b["id"] for b in other.get("/batches").json()["data"]] == [batch["id"]]
    assert done["status"] == "completed"
    assert server.count("/v1/chat/completions") == 1
    assert server.batch_stats() == {"created": 1, "lines": 3, "uploads": 1}
    assert client.get(server.base_url + "/_batch_stats").json() == server.batch_stats()
    creates = [r for r in server.requests if (r.method, r.path) == ("POST", "/v1/batches")]
    assert [r.body["input_file_id"] for r in creates] == [batch["input_file_id"]]
    server.reset()
    assert server.batch_stats() == {"created": 0, "lines": 0, "uploads": 0}
    assert client.get(f"/batches/{batch['id']}").status_code == 404


def test_batch_script_over_http(server: FakeOpenAI, client: httpx.Client) -> None:
    r = client.post(server.base_url + "/_batch_script", json=[{"fail_validation": True}])
    assert r.json() == {"scripted": 1}
    assert client.post(server.base_url + "/_batch_script", json={"a": 1}).status_code == 400
    done, _ = wait(client, submit(client, [chat_body(0)])["id"])
    assert done["status"] == "failed"


def test_cli_batch_seconds() -> None:
    cmd = [sys.executable, "-m", "fake_openai", "--port", "0", "--batch-seconds", "0.1"]
    with subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE) as proc:
        try:
            assert proc.stdout is not None
            ready, _, _ = select.select([proc.stdout], [], [], 20.0)
            assert ready, "the CLI printed nothing"
            base = proc.stdout.readline().decode().split()[-1]
            with httpx.Client(base_url=base + "/v1", timeout=10.0) as c:
                done, _ = wait(c, submit(c, [chat_body(0)])["id"])
                assert done["status"] == "completed"
            proc.terminate()
            assert proc.wait(timeout=20) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
    bad = subprocess.run([*cmd[:-1], "0"], cwd=REPO_ROOT, capture_output=True, timeout=60)
    assert bad.returncode == 2 and b"--batch-seconds" in bad.stderr
