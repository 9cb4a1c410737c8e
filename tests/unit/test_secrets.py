"""Redaction: structured data before serialising, every spelling in text, refusal of short secrets."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import pytest
from pydantic import BaseModel

from deploy.errors import ConfigError
from deploy.model.schema import SecretRef
from deploy.secrets import (
    MASK,
    REDACTOR,
    Redactor,
    redact,
    redact_file,
    redact_text,
    resolve_secret,
    spellings,
)

UMLAUT = "pässwörd-ümlaut"
QUOTES = 'a"b\\c\'d'
REGEX = "p.a*s+s?(w)[o]{r}d|^$\\1"
PEM = ("-----BEGIN OPENSSH PRIVATE KEY-----\n"
       "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
       "QyNTUxOQAAACDvQ8mXkz1oQnS0cKj6Yb7sGmP3tq3v2aG1kqX6b8nWbQAAAJgqk1xJKpNc\n"
       "-----END OPENSSH PRIVATE KEY-----\n")


@pytest.fixture
def redactor() -> Redactor:
    redactor = Redactor()
    for value in (UMLAUT, QUOTES, REGEX, PEM):
        assert redactor.add(value)
    return redactor


@dataclasses.dataclass
class Login:
    user: str
    password: str


class Spec(BaseModel):
    host: str
    token: str


@pytest.mark.parametrize("secret", [UMLAUT, QUOTES, REGEX, PEM])
def test_structured_data_is_redacted_before_json_escapes_it(redactor: Redactor, secret: str) -> None:
    data = {"outputs": {"login": f"admin:{secret}@host", secret: [1, (secret, None)], "n": 3},
            "items": {secret}, "login": Login("root", secret), "spec": Spec(host="h", token=secret)}
    text = json.dumps(redactor.redact(data), sort_keys=True)
    for form in spellings(secret):
        assert form not in text
    assert secret not in json.loads(text)["outputs"]["login"]
    back = json.loads(text)
    assert back["outputs"]["login"] == f"admin:{MASK}@host"
    assert back["outputs"][MASK] == [1, [MASK, None]]
    assert back["login"] == {"user": "root", "password": MASK}
    assert back["spec"] == {"host": "h", "token": MASK}
    assert back["outputs"]["n"] == 3


def test_the_old_way_leaks_what_structured_redaction_catches(redactor: Redactor) -> None:
    """Why redact before serialising: JSON's escapes hide the raw value from a text search."""
    text = json.dumps({"password": UMLAUT})
    assert UMLAUT not in text  # json wrote p\u00e4ssw\u00f6rd: a raw substring replace misses it
    assert json.loads(text)["password"] == UMLAUT
    assert json.loads(json.dumps(redactor.redact({"password": UMLAUT}))) == {"password": MASK}


@pytest.mark.parametrize("secret", [UMLAUT, QUOTES, REGEX, PEM])
def test_text_is_masked_in_every_spelling(redactor: Redactor, secret: str) -> None:
    for form in spellings(secret) | {repr(secret), json.dumps(secret), json.dumps(secret, ensure_ascii=False)}:
        masked = redactor.redact_text(f"before {form} after")
        assert masked.startswith("before ")
        assert masked.endswith(" after")
        for spelled in spellings(secret):
            assert spelled not in masked


def test_each_line_of_a_multi_line_secret_is_masked(redactor: Redactor) -> None:
    line = PEM.splitlines()[1]
    assert redactor.redact_text(f"key line: {line}!") == f"key line: {MASK}!"
    crlf = PEM.replace("\n", "\r\n")
    assert all(part not in redactor.redact_text(crlf) for part in PEM.splitlines()[1:3])


def test_pem_armour_lines_are_not_secret(redactor: Redactor) -> None:
    assert redactor.redact_text("-----END OPENSSH PRIVATE KEY-----") == "-----END OPENSSH PRIVATE KEY-----"


def test_overlapping_secrets_are_masked_as_one_span() -> None:
    redactor = Redactor()
    redactor.add("abcdef")
    redactor.add("defghi")
    assert redactor.redact_text("x abcdefghi y") == f"x {MASK} y"
    assert redactor.redact_text("abcabcdef") == f"abc{MASK}"


def test_regex_metacharacters_are_literal(redactor: Redactor) -> None:
    assert redactor.redact_text("ps?(w)") == "ps?(w)"
    assert redactor.redact_text(f"<{REGEX}>") == f"<{MASK}>"


def test_contains_finds_a_secret_anywhere(redactor: Redactor) -> None:
    assert redactor.contains({"outputs": [{"url": f"https://u:{QUOTES}@h"}]})
    assert redactor.contains({UMLAUT: 1})
    assert not redactor.contains({"outputs": [{"url": "https://h"}], "n": 1, "p": Path("/x")})


def test_redact_file_masks_a_log_another_tool_wrote(tmp_path: Path) -> None:
    log = tmp_path / "pytest.log"
    log.write_text("E   AssertionError: token grüße-aus-köln-file\n")
    log.chmod(0o640)
    resolve_secret_value = "grüße-aus-köln-file"
    REDACTOR.add(resolve_secret_value)
    redact_file(log)
    assert log.read_text() == f"E   AssertionError: token {MASK}\n"
    assert log.stat().st_mode & 0o777 == 0o640


def test_nothing_registered_is_a_no_op() -> None:
    data = {"a": [1, 2.5, None, True], "b": "text"}
    assert Redactor().redact(data) == data
    assert Redactor().redact_text("text") == "text"


def test_unknown_objects_become_their_masked_str(redactor: Redactor) -> None:
    assert redactor.redact(Path(f"/tmp/{UMLAUT}")) == f"/tmp/{MASK}"


def test_short_secrets_are_not_masked_and_warned_about_once(caplog: pytest.LogCaptureFixture) -> None:
    redactor = Redactor()
    with caplog.at_level(logging.WARNING, logger="deploy.secrets"):
        assert not redactor.add("ab")
        assert not redactor.add(" x\n")
    assert redactor.redact_text("abc x") == "abc x"  # masking "ab" would shred unrelated text
    assert len([r for r in caplog.records if "cannot be redacted" in r.getMessage()]) == 1


def test_resolve_refuses_a_secret_too_short_to_mask(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHORT_SECRET", "q7")
    with pytest.raises(ConfigError, match="SHORT_SECRET is shorter than 3 characters") as info:
        resolve_secret(SecretRef(env="SHORT_SECRET"))
    assert "q7" not in info.value.message + info.value.hint
    monkeypatch.setenv("EMPTY_SECRET", "")
    with pytest.raises(ConfigError, match="EMPTY_SECRET"):
        resolve_secret(SecretRef(env="EMPTY_SECRET"))


def test_resolved_secrets_are_registered_process_wide(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("UMLAUT_SECRET", "grüße-aus-köln")
    (tmp_path / "token").write_text("file-token-\"quoted\"\n")
    assert resolve_secret(SecretRef(env="UMLAUT_SECRET")) == "grüße-aus-köln"
    assert resolve_secret(SecretRef(file="token"), tmp_path) == 'file-token-"quoted"'
    assert resolve_secret(SecretRef(cmd="printf 'cmd-s3cret'")) == "cmd-s3cret"
    assert json.dumps(redact({"x": ["grüße-aus-köln", 'file-token-"quoted"', "cmd-s3cret"]})) == \
        json.dumps({"x": [MASK, MASK, MASK]})
    assert redact_text("a grüße-aus-köln b") == f"a {MASK} b"
    assert REDACTOR("cmd-s3cret") == MASK
