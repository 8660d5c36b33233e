"""Password hashes made without mosquitto_passwd are the ones it makes (the broker
itself accepting them: tests/broker/test_provision.py, every agent logs in with one)."""

from __future__ import annotations

import base64
import shutil
import subprocess
from pathlib import Path

import pytest

from broker.passwords import PasswordFile, hash_password


def mosquitto_passwd_hash(tmp_path: Path, password: str) -> str:
    binary = shutil.which("mosquitto_passwd") or shutil.which("mosquitto_passwd", path="/usr/sbin")
    if binary is None:
        pytest.fail("mosquitto_passwd not found: apt-get install mosquitto", pytrace=False)
    file = tmp_path / "passwd"
    file.write_text(f"pi:{password}\n")
    subprocess.run([binary, "-U", str(file)], check=True, capture_output=True, timeout=30)
    return file.read_text().strip().partition(":")[2]


@pytest.mark.parametrize("password", ["s3cret", "pässwörd with spaces", "x" * 200])
def test_a_hash_with_mosquitto_passwds_salt_is_mosquitto_passwds_hash(
    tmp_path: Path, password: str
) -> None:
    theirs = mosquitto_passwd_hash(tmp_path, password)
    salt = base64.b64decode(theirs.split("$")[3])
    assert hash_password(password, salt=salt) == theirs


def test_two_hashes_of_one_password_have_different_salts() -> None:
    assert hash_password("same") != hash_password("same")


def test_the_password_file_changes_one_accounts_line_and_keeps_the_others() -> None:
    passwd = PasswordFile("gw1:$7$101$a$b\n# a comment\npi:$7$101$c$d\ncloud:$7$101$e$f\n")
    passwd.set("pi", "new")
    passwd.set("pi2", "other")
    assert passwd.remove("cloud") and not passwd.remove("cloud")
    lines = passwd.text().splitlines()
    assert lines[:2] == ["gw1:$7$101$a$b", "# a comment"]
    assert lines[2].startswith("pi:$7$101$") and lines[2] != "pi:$7$101$c$d"
    assert lines[3].startswith("pi2:$7$101$") and len(lines) == 4
    assert "pi" in passwd and "cloud" not in passwd and "# a comment" not in passwd
