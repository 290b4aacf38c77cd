"""Files: PDF upload with its limits and failure classes, metadata, deletion, and extract_text on real PDFs."""

import hashlib
import io

import pytest
from pypdf import PdfReader, PdfWriter

from tests.support import make_pdf

JAPANESE = "日本語のテキスト：ＡＢＣ１２３ ｱｲｳ カタカナ ひらがな 漢字。"
ACCENTED = "café naïve Ærø – “quotes” €42"


def _encrypted(data):
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(data)))
    writer.encrypt("secret")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def _pageless():
    out = io.BytesIO()
    PdfWriter().write(out)
    return out.getvalue()


def test_upload_answers_201_and_metadata_never_carries_the_bytes(client, upload):
    data = make_pdf(JAPANESE, ACCENTED)
    response = upload(data, filename="../../etc/請求書\x07.pdf")
    assert response.status_code == 201
    file_id = response.json["file_id"]
    assert response.json == {"file_id": file_id, "filename": "請求書.pdf", "size": len(data)}
    assert response.headers["Location"] == f"/files/{file_id}"

    meta = client.get(f"/files/{file_id}")
    assert meta.status_code == 200
    assert set(meta.json) == {"file_id", "filename", "content_type", "size", "sha256", "page_count", "created_at"}
    assert meta.json["page_count"] == 2 and meta.json["content_type"] == "application/pdf"
    assert meta.json["sha256"] == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize(
    "make, status, detail",
    [
        (lambda: b"", 422, "the file is empty"),
        (lambda: b"GIF89a not a pdf", 415, "does not start with %PDF-"),
        (lambda: make_pdf("cut short")[:300], 422, "corrupt"),
        (lambda: b"%PDF-1.7\nthis is not a PDF body", 422, "corrupt"),
        (lambda: _encrypted(make_pdf("secret")), 422, "encrypted"),
        (lambda: _pageless(), 422, "no pages"),
    ],
)
def test_every_upload_failure_class_has_its_own_answer(client, upload, sql, make, status, detail):
    response = upload(make(), content_type="application/pdf")
    assert response.status_code == status
    assert detail in response.json["detail"]
    assert sql.execute("SELECT count(*) AS n FROM files").fetchone()["n"] == 0


def test_the_declared_content_type_is_advisory(upload):
    assert upload(make_pdf("x"), filename="scan.bin", content_type="application/octet-stream").status_code == 201
    assert upload(b"<html>", filename="page.pdf", content_type="application/pdf").status_code == 415


def test_uploads_over_the_limit_are_413(make_app):
    client = make_app(MAX_UPLOAD_MB=1).test_client()
    big = make_pdf("x") + b"%" + b"0" * (1024 * 1024)
    response = client.post("/files", data={"file": (io.BytesIO(big), "big.pdf")}, content_type="multipart/form-data")
    assert response.status_code == 413 and "larger than 1 MB" in response.json["detail"]


def test_a_body_declared_too_large_is_refused_before_it_is_read(make_app):
    client = make_app(MAX_UPLOAD_MB=1).test_client()
    stream = io.BytesIO(b"x" * 100)  # the Content-Length below is a lie: nothing past it should be read
    response = client.post(
        "/files",
        input_stream=stream,
        content_type="multipart/form-data; boundary=b",
        environ_overrides={"CONTENT_LENGTH": str(50 * 1024 * 1024)},
    )
    assert response.status_code == 413
    assert stream.tell() == 0


@pytest.mark.parametrize(
    "kwargs, status",
    [
        ({"json": {"file": "x"}}, 415),
        ({"data": {"other": (io.BytesIO(b"%PDF-"), "a.pdf")}, "content_type": "multipart/form-data"}, 422),
    ],
)
def test_a_request_without_a_file_field_is_refused(client, kwargs, status):
    assert client.post("/files", **kwargs).status_code == status


def test_extract_text_returns_japanese_and_accented_text_exactly(client, upload, workflow):
    file_id = upload(make_pdf(JAPANESE, ACCENTED)).json["file_id"]
    workflow_id = workflow([("extract_text", {"file_id": file_id})])
    response = client.post(f"/workflows/{workflow_id}/run")
    assert response.status_code == 200
    assert response.json["final_output"] == f"{JAPANESE}\n{ACCENTED}"
    (step,) = client.get(f"/runs/{response.json['run_id']}").json["steps"]
    assert file_id in step["note"]


def test_extracted_text_feeds_the_next_node(client, upload, workflow):
    file_id = upload(make_pdf("ＩＮＶＯＩＣＥ　ﾃｽﾄ")).json["file_id"]
    workflow_id = workflow([("extract_text", {"file_id": file_id}), ("formatter", {"rules": ["normalize_width"]})])
    assert client.post(f"/workflows/{workflow_id}/run").json["final_output"] == "INVOICE テスト"


def test_a_node_naming_a_missing_file_is_refused_when_added(client, workflow):
    workflow_id = workflow()
    missing = "6f1c2d3e-0000-4000-8000-000000000000"
    response = client.post(
        f"/workflows/{workflow_id}/nodes", json={"node_type": "extract_text", "config": {"file_id": missing}}
    )
    assert response.status_code == 422
    assert "not found" in response.json["errors"]["config"]["file_id"][0]
    assert client.get(f"/workflows/{workflow_id}").json["nodes"] == []


def test_a_file_deleted_later_fails_the_step_with_a_clear_error(client, failing_workflow):
    workflow_id, file_id = failing_workflow()
    assert client.get(f"/files/{file_id}").status_code == 404
    assert client.delete(f"/files/{file_id}").status_code == 404
    response = client.post(f"/workflows/{workflow_id}/run")
    assert response.status_code == 422
    assert response.json["detail"] == f"file {file_id} not found (it may have been deleted)"


def test_a_run_can_name_the_file_its_extract_text_nodes_read(client, upload, workflow, sql):
    file_id = upload(make_pdf(JAPANESE)).json["file_id"]
    workflow_id = workflow([("extract_text", {}), ("formatter", {"rules": ["full_to_half"]})])
    response = client.post(f"/workflows/{workflow_id}/run", json={"file_id": file_id})
    assert response.status_code == 200
    assert response.json["final_output"] == "日本語のテキスト:ABC123 ｱｲｳ カタカナ ひらがな 漢字。"
    step = client.get(f"/runs/{response.json['run_id']}").json["steps"][0]
    assert "the run's input file" in step["note"]
    stored = sql.execute("SELECT input FROM runs WHERE id = %s", (response.json["run_id"],)).fetchone()["input"]
    assert stored == {"input_text": "", "file_id": file_id}

    missing = client.post(f"/workflows/{workflow_id}/run", json={"file_id": "6f1c2d3e-0000-4000-8000-000000000000"})
    assert missing.status_code == 422 and "not found" in missing.json["errors"]["file_id"][0]
