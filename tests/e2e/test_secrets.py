from __future__ import annotations

import base64
import stat
from pathlib import Path

from eventflow.system import SECRETS, load_secrets


def test_keys_are_made_once_in_a_private_file_and_reused(tmp_path: Path) -> None:
    first = load_secrets(tmp_path, {})
    assert set(first) == set(SECRETS)
    assert all(len(base64.b64decode(value)) == 32 for value in first.values())
    assert stat.S_IMODE((tmp_path / "secrets.env").stat().st_mode) == 0o600
    assert load_secrets(tmp_path, {}) == first


def test_keys_from_the_environment_win_and_are_not_written(tmp_path: Path) -> None:
    mine = base64.b64encode(b"k" * 32).decode()
    keys = load_secrets(tmp_path, {"EVENTFLOW_MASTER_KEY": mine})
    assert keys["EVENTFLOW_MASTER_KEY"] == mine
    assert mine not in (tmp_path / "secrets.env").read_text()
    assert load_secrets(tmp_path, {})["EVENTFLOW_PSEUDONYM_KEY"] == keys["EVENTFLOW_PSEUDONYM_KEY"]
