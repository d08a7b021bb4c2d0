"""Image inputs: parts in chat messages, files read at plan time, checked at validate time,
hashed into the cache key by content, kept in the records as hashes, shown in the report."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image as PILImage

from evalkit import check_suite, load_run, load_suite, run_suite, write_reports
from evalkit.models.catalog import lookup
from evalkit.models.tokens import Counter, image_tokens
from evalkit.planning.planner import Planner
from evalkit.records.images import REF_PREFIX
from evalkit.records.store import read_journal
from evalkit.suite.images import MAX_IMAGE_BYTES, NotAnImage, data_url_size, dimensions
from evalkit.suite.load import load_suite as load_any
from fake_openai import FakeOpenAI
from tests.conftest import run_settings
from tests.openapi_spec import assert_valid

Write = Callable[[str, str], Path]


def picture(fmt: str, width: int, height: int, color: str = "red") -> bytes:
    out = io.BytesIO()
    mode = "P" if fmt == "GIF" else "RGB"
    PILImage.new(mode, (width, height), color).save(out, format=fmt)
    return out.getvalue()


def save(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


SUITE = """\
models: [openai/gpt-4o]
params: {max_tokens: 8, temperature: 0}
prompt:
  - role: system
    content: Describe the picture in one word.
  - role: user
    content:
      - "What colour is {{ name }}?"
      - image: photos/{{ name }}.png
        detail: low
cases:
  - {id: red, vars: {name: red}}
  - {id: blue, vars: {name: blue}}
"""


def first_bodies(suite_path: Path) -> list[dict[str, object]]:
    suite = load_suite(suite_path)
    planner = Planner(suite, [lookup_target(suite)])
    return [
        request.body
        for case in planner.walk()
        for group in case.groups
        for request in group.first_round()
    ]


def lookup_target(suite: object) -> object:
    from evalkit.models.targets import resolve

    return resolve(suite.models[0], suite.endpoints)  # type: ignore[attr-defined]


# ---------------------------------------------------------------- headers and tokens


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "WEBP"])
@pytest.mark.parametrize("size", [(1, 1), (640, 480), (333, 1999)])
def test_dimensions_are_read_from_the_header(fmt: str, size: tuple[int, int]) -> None:
    kind, width, height = dimensions(picture(fmt, *size))
    assert kind == {"PNG": "png", "JPEG": "jpeg", "GIF": "gif", "WEBP": "webp"}[fmt]
    assert (width, height) == size


def test_a_jpeg_with_a_large_metadata_block_before_its_frame() -> None:
    out = io.BytesIO()
    PILImage.new("RGB", (300, 200), "green").save(
        out, format="JPEG", exif=b"Exif\0\0" + b"x" * 60000
    )
    data = out.getvalue()
    assert dimensions(data)[1:] == (300, 200)
    url = "data:image/jpeg;base64," + base64.b64encode(data).decode()
    assert data_url_size(url) == (300, 200)


@pytest.mark.parametrize(
    "data", [b"", b"hello, not a picture", b"\x89PNG\r\n\x1a\n" + b"\0" * 4, b"\xff\xd8\xff\xe0"]
)
def test_what_is_not_an_image_says_so(data: bytes) -> None:
    with pytest.raises(NotAnImage):
        dimensions(data)


@pytest.mark.parametrize(
    ("width", "height", "detail", "tokens"),
    [
        (1024, 1024, "high", 765),  # OpenAI's worked examples
        (2048, 4096, "high", 1105),
        (4096, 8192, "low", 85),
        (512, 512, "auto", 255),
        (100, 100, "high", 255),
    ],
)
def test_image_tokens_follow_the_documented_rule(
    width: int, height: int, detail: str, tokens: int
) -> None:
    assert image_tokens(width, height, detail) == tokens


def test_the_token_count_of_a_body_counts_its_images_by_size_and_detail() -> None:
    counter = Counter(lookup("openai/gpt-4o"))
    url = "data:image/png;base64," + base64.b64encode(picture("PNG", 2048, 4096)).decode()
    text_only = {"messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]}
    with_image = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Hi"},
                    {"type": "image_url", "image_url": {"url": url}},
                    {"type": "image_url", "image_url": {"url": url, "detail": "low"}},
                ],
            }
        ]
    }
    assert counter.body(with_image) == counter.body(text_only) + 1105 + 85


# ---------------------------------------------------------------- bodies


def test_short_and_long_forms_send_data_urls_of_the_files(write: Write, tmp_path: Path) -> None:
    red, blue = picture("PNG", 4, 4, "red"), picture("PNG", 4, 4, "blue")
    save(tmp_path, "photos/red.png", red)
    save(tmp_path, "photos/blue.png", blue)
    bodies = first_bodies(write("s.yaml", SUITE))
    assert len(bodies) == 2
    for body, data in zip(bodies, [red, blue], strict=True):
        assert_valid("chat", body)
        user = body["messages"][1]  # type: ignore[index]
        text, image = user["content"]
        assert text["type"] == "text" and text["text"].startswith("What colour")
        assert image["image_url"]["detail"] == "low"
        assert (
            image["image_url"]["url"] == "data:image/png;base64," + base64.b64encode(data).decode()
        )


def test_a_remote_url_is_sent_as_given_and_auto_detail_is_not_sent(
    write: Write, tmp_path: Path
) -> None:
    path = write(
        "s.yaml",
        """\
models: [openai/gpt-4o]
cases:
  - id: a
    messages:
      - role: user
        content:
          - {type: text, text: Look}
          - {type: image_url, image_url: {url: "https://example.com/cat.jpg"}}
""",
    )
    (body,) = first_bodies(path)
    assert_valid("chat", body)
    part = body["messages"][0]["content"][1]  # type: ignore[index]
    assert part == {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}


def test_jsonl_and_openai_evals_cases_carry_parts(write: Write, tmp_path: Path) -> None:
    save(tmp_path, "cat.gif", picture("GIF", 8, 8))
    sample = {
        "input": [
            {
                "role": "user",
                "content": [{"type": "text", "text": "Animal?"}, {"image": "cat.gif"}],
            }
        ],
        "ideal": "cat",
    }
    path = write("cases.jsonl", json.dumps(sample) + "\n")
    write("s.yaml", "models: [openai/gpt-4o]\ncases: cases.jsonl\n")
    for suite_file in (path, tmp_path / "s.yaml"):
        suite = load_any(suite_file)
        assert check_suite(suite, environ={}) == []
        (body,) = first_bodies(suite_file) if suite_file.name == "s.yaml" else [None]
        if body is not None:
            assert_valid("chat", body)
            url = body["messages"][0]["content"][1]["image_url"]["url"]  # type: ignore[index]
            assert url.startswith("data:image/gif;base64,")


# ---------------------------------------------------------------- validation


def problems(path: Path) -> list[str]:
    return [str(p) for p in check_suite(load_suite(path), environ={})]


def test_a_missing_file_is_a_located_problem(write: Write, tmp_path: Path) -> None:
    save(tmp_path, "photos/red.png", picture("PNG", 4, 4))
    found = problems(write("s.yaml", SUITE))
    assert len(found) == 1, found
    assert "s.yaml:9:" in found[0]  # the line of the image part
    assert "case 'blue'" in found[0] and "photos/blue.png: no such file" in found[0]


def test_an_image_over_the_limit_says_what_the_limit_is(write: Write, tmp_path: Path) -> None:
    for name in ("red", "blue"):
        save(tmp_path, f"photos/{name}.png", picture("PNG", 4, 4))
    with (tmp_path / "photos/blue.png").open("r+b") as big:
        big.truncate(MAX_IMAGE_BYTES + 1)  # sparse: the size is checked before reading
    (found,) = problems(write("s.yaml", SUITE))
    assert "case 'blue'" in found and "over the 20 MB limit per image" in found


def test_a_file_that_is_not_an_image_is_a_located_problem(write: Write, tmp_path: Path) -> None:
    save(tmp_path, "photos/red.png", picture("PNG", 4, 4))
    save(tmp_path, "photos/blue.png", b"<html>not a picture</html>")
    (found,) = problems(write("s.yaml", SUITE))
    assert "photos/blue.png: not a png, jpeg, gif or webp image" in found


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('[{image: "https://x.test/a.png", size: 3}]', "an image part takes image and detail"),
        ("[{type: video, url: x}]", "type"),
        ("[]", "content is an empty list of parts"),
        ('[{image: "https://x.test/a.png", detail: huge}]', "'auto', 'low' or 'high'"),
    ],
)
def test_malformed_parts_are_located_errors(write: Write, content: str, expected: str) -> None:
    from evalkit import SuiteError

    path = write(
        "s.yaml",
        f"models: [openai/gpt-4o]\ncases:\n  - id: a\n    messages:\n"
        f"      - role: user\n        content: {content}\n",
    )
    with pytest.raises(SuiteError) as raised:
        load_suite(path)
    assert "s.yaml:5" in str(raised.value) or "s.yaml:6" in str(raised.value)
    assert expected in str(raised.value)


def test_an_image_in_a_system_message_is_refused(write: Write) -> None:
    from evalkit import SuiteError

    path = write(
        "s.yaml",
        "models: [openai/gpt-4o]\nprompt:\n  - role: system\n"
        '    content: [{image: "https://x.test/a.png"}]\ncases: [{id: a}]\n',
    )
    with pytest.raises(SuiteError, match="only a user message may carry images"):
        load_suite(path)


def test_a_data_url_that_is_no_image_is_a_problem(write: Write) -> None:
    path = write(
        "s.yaml",
        "models: [openai/gpt-4o]\ncases:\n  - id: a\n    messages:\n      - role: user\n"
        '        content: [{image: "data:image/png;base64,aGVsbG8="}]\n',
    )
    (found,) = problems(path)
    assert "s.yaml:6" in found and "the data URL's image: not a png" in found


# ---------------------------------------------------------------- a run


def test_a_run_sends_the_pictures_records_their_hashes_and_shows_thumbnails(
    openai: FakeOpenAI, write: Write, tmp_path: Path
) -> None:
    red = picture("PNG", 64, 32, "red")
    save(tmp_path, "photos/red.png", red)
    save(tmp_path, "photos/blue.png", picture("JPEG", 40, 40, "blue"))
    suite = load_suite(write("s.yaml", SUITE))
    result = run_suite(suite, run_settings(tmp_path, cache=True, cache_dir=tmp_path / "cache"))
    sent = [r.body for r in openai.requests if r.path.endswith("/chat/completions")]
    assert len(sent) == 2
    urls = [b["messages"][1]["content"][1]["image_url"]["url"] for b in sent]
    assert "data:image/png;base64," + base64.b64encode(red).decode() in urls
    assert any(u.startswith("data:image/jpeg;base64,") for u in urls)

    journal = (result.run_dir / "journal.jsonl").read_text()
    assert "base64" not in journal  # recorded as hashes, not megabytes per line
    import hashlib

    digest = hashlib.sha256(red).hexdigest()
    assert REF_PREFIX + digest in journal
    assert (result.run_dir / "images" / f"{digest}.png").is_file()
    frame = load_run(result.run_dir)
    assert frame["prompt"].str.contains(REF_PREFIX).all()
    assert not frame["error"].notna().any()

    (html,) = write_reports(result.run_dir, formats=["html"])
    page = Path(html).read_text()
    assert page.count('<img class="thumb" src="data:image/png;base64,') == 2
    assert "[image]" in page


def test_the_cache_tells_pictures_apart_by_content(
    openai: FakeOpenAI, write: Write, tmp_path: Path
) -> None:
    save(tmp_path, "photos/red.png", picture("PNG", 4, 4, "red"))
    save(tmp_path, "photos/blue.png", picture("PNG", 4, 4, "blue"))
    path = write("s.yaml", SUITE)
    settings = run_settings(tmp_path, cache=True, cache_dir=tmp_path / "cache")

    def cached() -> list[bool]:
        run = run_suite(load_suite(path), settings)
        entries = sorted(read_journal(run.run_dir), key=lambda e: str(e["case_id"]))
        return [bool(e["cached"]) for e in entries]

    assert cached() == [False, False]
    assert cached() == [True, True]
    save(tmp_path, "photos/red.png", picture("PNG", 4, 4, "green"))  # same path, new picture
    assert cached() == [True, False]  # blue, red
    assert "base64" not in (tmp_path / "cache").joinpath("cache.sqlite").read_bytes().decode(
        "latin-1"
    )


def test_the_local_model_refuses_images_at_validate_time(write: Write, tmp_path: Path) -> None:
    for name in ("red", "blue"):
        save(tmp_path, f"photos/{name}.png", picture("PNG", 4, 4))
    path = write("s.yaml", SUITE.replace("openai/gpt-4o", "local/gemma-3-270m"))
    found = problems(path)
    assert found and all("reads text only and cannot take the case's images" in p for p in found)


def test_a_judge_reads_the_prompt_with_images_as_placeholders(write: Write, tmp_path: Path) -> None:
    from evalkit.scoring.grading import prompt_text

    for name in ("red", "blue"):
        save(tmp_path, f"photos/{name}.png", picture("PNG", 4, 4))
    suite = load_suite(write("s.yaml", SUITE))
    planner = Planner(suite, [lookup_target(suite)])
    group = next(iter(planner.walk())).groups[0]
    assert prompt_text(group).splitlines()[1] == "user: What colour is red? [image]"


def test_on_the_responses_api_pictures_are_input_images_kept_as_hashes(
    openai: FakeOpenAI, write: Write, tmp_path: Path
) -> None:
    import hashlib

    red = picture("PNG", 8, 8, "red")
    save(tmp_path, "photos/red.png", red)
    save(tmp_path, "photos/blue.png", picture("PNG", 8, 8, "blue"))
    text = SUITE.replace(
        "models: [openai/gpt-4o]", "models: [{id: openai/gpt-4o, kind: responses}]"
    )
    text = text.replace("max_tokens: 8", "max_tokens: 16")
    result = run_suite(load_suite(write("s.yaml", text)), run_settings(tmp_path))
    sent = [r.body for r in openai.requests if r.path.endswith("/responses")]
    assert len(sent) == 2
    for body in sent:
        assert_valid("responses", body)
    parts = [p for b in sent for p in b["input"][0]["content"] if p["type"] == "input_image"]
    assert {p["detail"] for p in parts} == {"low"}
    assert "data:image/png;base64," + base64.b64encode(red).decode() in [
        p["image_url"] for p in parts
    ]
    journal = (result.run_dir / "journal.jsonl").read_text()
    assert "base64" not in journal
    assert REF_PREFIX + hashlib.sha256(red).hexdigest() in journal
    (html,) = write_reports(result.run_dir, formats=["html"])
    assert Path(html).read_text().count('<img class="thumb"') == 2
