"""Built-in data sets: look-up, download from a local HTTP server, checksum, interruption, offline.

The server runs on 127.0.0.1 in a thread and serves a tiny archive that the test builds: no test
touches the internet.
"""

import dataclasses
import hashlib
import io
import os
import tarfile
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import run_cli

from bilstm_cli.data import download
from bilstm_cli.data.builtin import load_builtin
from bilstm_cli.errors import UserError


def imdb_archive() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, text in [("aclImdb/train/pos/1_9.txt", "good film"),
                           ("aclImdb/train/neg/2_1.txt", "bad film"),
                           ("aclImdb/test/pos/3_8.txt", "fine"),
                           ("aclImdb/test/neg/4_2.txt", "dull")]:
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue() + b"\0" * 200_000  # padding: several chunks, so progress moves


class Server:
    """Serves `body` at any path; `cut` sends only that many bytes of it, then hangs up."""

    def __init__(self) -> None:
        self.body = b""
        self.cut: int | None = None
        self.status = 200
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                if server.status != 200:
                    self.send_error(server.status)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(server.body)))
                self.end_headers()
                self.wfile.write(server.body[: server.cut])
                self.wfile.flush()
                self.close_connection = True

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/aclImdb_v1.tar.gz"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    serving = Server()
    yield serving
    serving.close()


@pytest.fixture
def folders(tmp_path, monkeypatch):
    """An empty cache and no BILSTM_DATA_DIR, so every look-up ends in a download."""
    monkeypatch.delenv("BILSTM_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "bilstm"


def trust(monkeypatch, body: bytes) -> None:
    """Make the tiny archive the expected one (the real checksum is that of the real file)."""
    info = download.BUILTIN["imdb"]
    digest = hashlib.sha256(body).hexdigest()
    monkeypatch.setitem(download.BUILTIN, "imdb",
                        dataclasses.replace(info, checksum=("sha256", digest)))


def test_download_progress_verify_and_cache(server, folders, monkeypatch):
    server.body = imdb_archive()
    monkeypatch.setenv("BILSTM_DATA_URL_IMDB", server.url)
    trust(monkeypatch, server.body)
    seen = []
    splits = load_builtin("imdb", progress=lambda done, total: seen.append((done, total)))
    assert sorted(zip(*splits["train"])) == [("bad film", "negative"), ("good film", "positive")]
    assert seen[0] == (0, len(server.body)) and seen[-1] == (len(server.body), len(server.body))
    assert len(seen) > 3 and [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert sorted(p.name for p in folders.iterdir()) == ["aclImdb_v1.tar.gz"]
    assert download.locate("imdb") == download.Located(folders / "aclImdb_v1.tar.gz", "cache")
    server.status = 500  # the cached copy is used from now on: no second request needed
    assert len(load_builtin("imdb")["test"][0]) == 2


def test_checksum_mismatch_keeps_nothing(server, folders, monkeypatch):
    server.body = imdb_archive()
    monkeypatch.setenv("BILSTM_DATA_URL_IMDB", server.url)
    with pytest.raises(UserError, match="not the expected file: its SHA256 is") as info:
        download.fetch("imdb", progress=lambda done, total: None)
    assert download.BUILTIN["imdb"].checksum[1] in str(info.value)
    assert list(folders.iterdir()) == []  # no temporary file, nothing under the final name


def test_interrupted_transfer_keeps_nothing(server, folders, monkeypatch):
    server.body = imdb_archive()
    server.cut = 70_000
    monkeypatch.setenv("BILSTM_DATA_URL_IMDB", server.url)
    trust(monkeypatch, server.body)
    with pytest.raises(UserError, match=r"interrupted: 70,000 of [\d,]+ bytes arrived"):
        download.fetch("imdb", progress=lambda done, total: None)
    assert list(folders.iterdir()) == []


def test_a_killed_downloads_part_file_is_removed_by_the_next_download(server, folders,
                                                                     monkeypatch):
    """kill -9 leaves a hidden .part file; the next download removes it, unless it is fresh
    (another process may be downloading right now)."""
    server.body = imdb_archive()
    monkeypatch.setenv("BILSTM_DATA_URL_IMDB", server.url)
    trust(monkeypatch, server.body)
    folders.mkdir(parents=True)
    stale, live = folders / ".aclImdb_v1.tar.gz.abc123.part", folders / ".aclImdb_v1.tar.gz.x.part"
    stale.write_bytes(b"half")
    live.write_bytes(b"in progress")
    old = time.time() - download.STALE_PART_SECONDS - 60
    os.utime(stale, (old, old))
    download.fetch("imdb", progress=lambda done, total: None)
    assert sorted(p.name for p in folders.iterdir()) == [live.name, "aclImdb_v1.tar.gz"]


def test_offline_and_http_errors_say_what_to_do(server, folders, monkeypatch):
    server.close()  # nothing listens on that port any more: as offline as it gets
    monkeypatch.setenv("BILSTM_DATA_URL_IMDB", server.url)
    with pytest.raises(UserError) as info:
        load_builtin("imdb")
    message = str(info.value)
    assert "aclImdb_v1.tar.gz" in message and server.url in message
    assert f"put it in {folders}" in message and "BILSTM_DATA_DIR" in message
    assert list(folders.iterdir()) == []

    other = Server()
    other.status = 404
    monkeypatch.setenv("BILSTM_DATA_URL_IMDB", other.url)
    try:
        with pytest.raises(UserError, match="answered HTTP 404"):
            download.fetch("imdb", progress=lambda done, total: None)
    finally:
        other.close()


def test_user_file_needs_no_checksum_but_its_layout_is_checked(tmp_path, monkeypatch):
    monkeypatch.setenv("BILSTM_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (tmp_path / "aclImdb_v1.tar.gz").write_bytes(imdb_archive())  # not the published bytes
    assert download.ensure_archive("imdb") == tmp_path / "aclImdb_v1.tar.gz"
    download.check_layout("imdb", tmp_path / "aclImdb_v1.tar.gz")
    with zipfile.ZipFile(tmp_path / "SST-2.zip", "w") as archive:
        archive.writestr("SST-2/train.tsv", "sentence\tlabel\nfine\t1\n")
    with pytest.raises(UserError, match="SST-2/dev.tsv missing"):
        download.check_layout("sst2", tmp_path / "SST-2.zip")
    (tmp_path / "SST-2.zip").write_bytes(b"not a zip")
    with pytest.raises(UserError, match="cannot read the sst2 archive"):
        download.check_layout("sst2", tmp_path / "SST-2.zip")


def test_plain_progress_lines_when_not_a_terminal():
    from rich.console import Console

    from bilstm_cli.console import download_progress

    out = io.StringIO()
    with download_progress("downloading x", Console(file=out, force_terminal=False)) as report:
        for done in range(0, 1_000_001, 50_000):
            report(done, 1_000_000)
    lines = out.getvalue().splitlines()
    assert len(lines) == 11  # 0%, 10%, ..., 100%
    assert lines[0].startswith("downloading x: 0.0 MB of 1.0 MB (0%)")
    assert lines[-1].startswith("downloading x: 1.0 MB of 1.0 MB (100%)")
    assert "ETA" in lines[5] and "MB/s" in lines[5]


def test_cli_data_list_and_get(server, tmp_path):
    server.body = imdb_archive()
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache"), "BILSTM_DATA_DIR": "",
           "BILSTM_DATA_URL_IMDB": server.url}
    listed = run_cli("data", "list", cwd=tmp_path, env=env)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[0].split("\t")[:2] == ["imdb", "not downloaded"]
    assert server.url in listed.stdout

    got = run_cli("data", "get", "imdb", cwd=tmp_path, env=env)  # the real checksum: mismatch
    assert got.returncode == 2 and "Traceback" not in got.stderr
    assert "not the expected file" in got.stderr and "downloading aclImdb_v1.tar.gz" in got.stderr
    assert not (tmp_path / "cache" / "bilstm" / "aclImdb_v1.tar.gz").exists()

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "aclImdb_v1.tar.gz").write_bytes(server.body)
    env["BILSTM_DATA_DIR"] = str(tmp_path / "data")
    got = run_cli("data", "get", "imdb", cwd=tmp_path, env=env)
    assert got.returncode == 0, got.stderr
    assert got.stdout == f"{tmp_path / 'data' / 'aclImdb_v1.tar.gz'}\n"
    listed = run_cli("data", "list", cwd=tmp_path, env=env)
    assert "available (BILSTM_DATA_DIR)" in listed.stdout


def test_cli_data_get_downloads_with_progress(server, folders, monkeypatch, capsys):
    """In-process (the test trusts the tiny archive's checksum), as `bilstm data get imdb`."""
    from typer.testing import CliRunner

    from bilstm_cli.cli import app

    server.body = imdb_archive()
    monkeypatch.setenv("BILSTM_DATA_URL_IMDB", server.url)
    trust(monkeypatch, server.body)
    result = CliRunner().invoke(app, ["data", "get", "imdb"])
    assert result.exit_code == 0, result.output
    assert (folders / "aclImdb_v1.tar.gz").read_bytes() == server.body
    assert str(folders / "aclImdb_v1.tar.gz") in result.output


def test_data_commands_do_not_import_tensorflow(tmp_path):
    from conftest import run_cli_without_tensorflow

    run_cli_without_tensorflow("data", "list", cwd=tmp_path)
