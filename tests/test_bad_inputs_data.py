"""Hostile config and data inputs (issue 29): each is one clear error naming the file, line or
key (exit 2, no traceback), a counted bad row, or a warning; never a silent wrong answer."""

from __future__ import annotations

import io
import json
import os
import tarfile
import zipfile
from pathlib import Path

import pytest
from conftest import run_cli, toy_examples, write_tsv

from bilstm_cli.config import DataConfig, load_config, parse_override
from bilstm_cli.data import download, load_splits, read_labelled, summarize
from bilstm_cli.data.builtin import load_builtin
from bilstm_cli.data.readers import BadRows, read_rows
from bilstm_cli.errors import UserError
from bilstm_cli.runs import run_data_section
from bilstm_cli.runstate import describe_run

BINARY = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8  # not UTF-8


def clean_exit_2(result, *expected: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    for text in expected:
        assert text in result.stderr, result.stderr


# 1. Config files that are not YAML text, not a mapping, or not readable.

def test_a_binary_config_is_one_clear_error(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_bytes(BINARY)
    result = run_cli("train", "-c", str(config), "--dry-run", cwd=tmp_path)
    clean_exit_2(result, f"{config}: not UTF-8 text", "a config is a YAML text file")
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("content, expected", [
    (b"- data\n- model\n", "the config must be a mapping of sections"),
    (b"just a string\n", "the config must be a mapping of sections"),
    (b"data:\n  max_tokens: 10\x00\n", ":2:17: not YAML text: the character U+0000"),
    (b"model: " + b"[" * 5000 + b"]" * 5000 + b"\n", "nested too deeply"),
    (b"model: !!python/object/apply:os.system [echo hi]\n", "YAML syntax error"),
], ids=["list", "scalar", "NUL", "deep", "python tag"])
def test_a_config_that_is_not_a_yaml_mapping_is_a_user_error(tmp_path, content, expected):
    config = tmp_path / "c.yaml"
    config.write_bytes(content)
    with pytest.raises(UserError) as info:
        load_config(config)
    message = str(info.value)
    assert str(config) in message and expected in message
    assert "\n" not in message


def test_a_folder_or_unreadable_config(tmp_path):
    result = run_cli("train", "-c", str(tmp_path), "--dry-run", cwd=tmp_path)
    clean_exit_2(result, "is a folder: give a YAML config file")
    with pytest.raises(UserError, match="cannot read config .*: Is a directory"):
        load_config(tmp_path)
    if os.geteuid() != 0:  # root reads any file
        config = tmp_path / "c.yaml"
        config.write_text("model:\n  units: 8\n")
        config.chmod(0)
        with pytest.raises(UserError, match="cannot read config .*Permission denied"):
            load_config(config)


def fake_run(folder: Path, config: bytes) -> Path:
    """A run folder as far as `evaluate` and `train --resume` look before reading the model."""
    folder.mkdir()
    (folder / "config.yaml").write_bytes(config)
    (folder / "tokenizer.json").write_text("{}")
    (folder / "labels.json").write_text('{"labels": ["neg", "pos"]}')
    return folder


@pytest.mark.parametrize("config, expected", [
    (BINARY, "not UTF-8 text"),
    (b"model:\n  units: 8\n  units: 16\n", "model.units is given twice (lines 2 and 3)"),
    (b"- a list\n", "must be a mapping"),
], ids=["binary", "duplicate key", "list"])
def test_a_damaged_run_config_is_a_user_error_where_it_is_read(tmp_path, config, expected):
    run = fake_run(tmp_path / "run", config)
    with pytest.raises(UserError) as info:
        run_data_section(run)
    assert f"{run / 'config.yaml'}" in str(info.value) and expected in str(info.value)
    assert "the run folder is damaged" in str(info.value)
    data = write_tsv(tmp_path / "d.tsv", toy_examples(4))
    result = run_cli("evaluate", "--model", str(run), "--data", str(data), cwd=tmp_path)
    clean_exit_2(result, str(run / "config.yaml"), expected)
    result = run_cli("train", "--resume", str(run), cwd=tmp_path)
    clean_exit_2(result, str(run / "config.yaml"), expected)
    assert describe_run(run)["name"] == "run"  # `bilstm runs` lists it regardless
    result = run_cli("runs", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr


# 11. Duplicate keys, in the config file and in --set values.

def test_a_duplicate_key_is_refused_with_both_lines(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("data:\n  dataset: null\nmodel:\n  units: 64\n  layers: 1\n  units: 128\n")
    with pytest.raises(UserError) as info:
        load_config(config)
    assert str(info.value) == (f"{config}:6: model.units is given twice (lines 4 and 6): keep "
                               "one")
    config.write_text("model:\n  units: 64\ntraining:\n  epochs: 2\nmodel:\n  layers: 2\n")
    with pytest.raises(UserError, match=r"c.yaml:5: model is given twice \(lines 1 and 5\)"):
        load_config(config)
    result = run_cli("train", "-c", str(config), "--dry-run", cwd=tmp_path)
    clean_exit_2(result, "model is given twice (lines 1 and 5)")
    with pytest.raises(UserError, match=r"--set 'training.class_weight=\{a: 1, a: 2\}': .*'a' "
                                        r"is given twice"):
        parse_override("training.class_weight={a: 1, a: 2}")


def test_yaml_merge_keys_are_not_duplicates_and_python_tags_stay_refused(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("base: &base {units: 8, layers: 1}\n")
    with pytest.raises(UserError, match="base: unknown key"):
        load_config(config)
    config.write_text("model:\n  <<: {units: 8, layers: 2}\n  units: 16\n")
    model = load_config(config).model
    assert (model.units, model.layers) == (16, 2)
    config.write_text("model: !!python/name:os.system\n")
    with pytest.raises(UserError, match="could not determine a constructor"):
        load_config(config)


# 2. Built-in archives that cannot be read: an unsupported compression method, a damaged file.

def sst2_zip(members: dict[str, str] | None = None) -> bytes:
    members = members or {"SST-2/train.tsv": "sentence\tlabel\nfine\t1\ndull\t0\n",
                          "SST-2/dev.tsv": "sentence\tlabel\ngood\t1\nbad\t0\n"}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, text in members.items():
            archive.writestr(name, text)
    return buffer.getvalue()


def with_compression_method(body: bytes, method: int) -> bytes:
    """The zip with every member marked as compressed by `method` (9: Deflate64, as Windows'
    Explorer writes large archives), in the local and the central headers."""
    data = bytearray(body)
    for signature, offset in ((b"PK\x03\x04", 8), (b"PK\x01\x02", 10)):
        start = data.find(signature)
        while start != -1:
            data[start + offset:start + offset + 2] = method.to_bytes(2, "little")
            start = data.find(signature, start + 4)
    return bytes(data)


def imdb_tar() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for index, name in enumerate(["train/pos", "train/neg", "test/pos", "test/neg"] * 50):
            data = f"review {index} {'good' if 'pos' in name else 'bad'} film".encode() * 40
            info = tarfile.TarInfo(f"aclImdb/{name}/{index}_5.txt")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_a_deflate64_sst2_zip_is_a_clear_error_and_not_available(tmp_path, monkeypatch):
    archive = tmp_path / "SST-2.zip"
    archive.write_bytes(with_compression_method(sst2_zip(), 9))
    monkeypatch.setenv("BILSTM_DATA_DIR", str(tmp_path))
    with pytest.raises(UserError) as info:
        load_builtin("sst2")
    message = str(info.value)
    assert message.startswith(f"{archive}: SST-2/train.tsv is compressed with a method Python "
                              "cannot read (Deflate64, method 9)")
    assert "repack" in message and "bilstm data get sst2" in message
    env = {"BILSTM_DATA_DIR": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    got = run_cli("data", "get", "sst2", cwd=tmp_path, env=env)
    clean_exit_2(got, f"{archive}: SST-2/train.tsv is compressed with a method")
    assert "already here" not in got.stderr and got.stdout == ""
    listed = run_cli("data", "list", cwd=tmp_path, env=env)
    assert listed.returncode == 0 and "Traceback" not in listed.stderr, listed.stderr
    assert listed.stdout.splitlines()[1].split("\t")[:2] == ["sst2", "unreadable (BILSTM_DATA_DIR)"]
    assert "Deflate64" in listed.stderr
    trained = run_cli("train", "--dry-run", "-c", "sst2", cwd=tmp_path, env=env)
    clean_exit_2(trained, "Deflate64")


def damaged(body: bytes, how: str) -> bytes:
    if how == "truncated":
        return body[: len(body) * 2 // 3]
    middle = len(body) // 2
    return body[:middle] + bytes(b ^ 0x5A for b in body[middle:middle + 64]) + body[middle + 64:]


@pytest.mark.parametrize("name, how", [("sst2", "truncated"), ("sst2", "corrupt"),
                                       ("imdb", "truncated"), ("imdb", "corrupt")])
def test_a_damaged_archive_in_the_data_dir_is_named(tmp_path, monkeypatch, name, how):
    info = download.BUILTIN[name]
    archive = tmp_path / info.filename
    archive.write_bytes(damaged(sst2_zip({"SST-2/train.tsv": "sentence\tlabel\n" + "fine\t1\n"
                                          * 3000, "SST-2/dev.tsv": "sentence\tlabel\nok\t1\n"})
                                if name == "sst2" else imdb_tar(), how))
    monkeypatch.setenv("BILSTM_DATA_DIR", str(tmp_path))
    with pytest.raises(UserError, match=f"^{archive}: "):
        download.verify_archive(name, download.locate(name))
    with pytest.raises(UserError, match=f"^{archive}: "):
        load_builtin(name)
    env = {"BILSTM_DATA_DIR": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    got = run_cli("data", "get", name, cwd=tmp_path, env=env)
    clean_exit_2(got, f"{archive}: ")
    assert "already here" not in got.stderr


def test_a_sound_user_archive_is_still_here(tmp_path, monkeypatch):
    (tmp_path / "aclImdb_v1.tar.gz").write_bytes(imdb_tar())
    (tmp_path / "SST-2.zip").write_bytes(sst2_zip())
    env = {"BILSTM_DATA_DIR": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    for name in ("imdb", "sst2"):
        got = run_cli("data", "get", name, cwd=tmp_path, env=env)
        assert got.returncode == 0 and "already here" in got.stderr, got.stderr
    listed = run_cli("data", "list", cwd=tmp_path, env=env)
    assert [line.split("\t")[1] for line in listed.stdout.splitlines()] == [
        "available (BILSTM_DATA_DIR)"] * 2


def test_a_damaged_cached_archive_is_downloaded_again(tmp_path, monkeypatch):
    cache = tmp_path / "cache" / "bilstm"
    cache.mkdir(parents=True)
    (cache / "SST-2.zip").write_bytes(sst2_zip())  # not the published file: checksum differs
    monkeypatch.delenv("BILSTM_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(UserError, match=r"SST-2.zip: the cached sst2 archive is damaged \(its "
                                        r"MD5 is [0-9a-f]{32}, expected 9f81648d"):
        download.verify_archive("sst2", download.locate("sst2"))
    env = {"BILSTM_DATA_DIR": "", "XDG_CACHE_HOME": str(tmp_path / "cache"),
           "BILSTM_DATA_URL_SST2": "http://127.0.0.1:9/SST-2.zip"}  # a closed port
    got = run_cli("data", "get", "sst2", cwd=tmp_path, env=env)
    clean_exit_2(got, "the cached sst2 archive is damaged", "downloading it again",
                 "cannot reach http://127.0.0.1:9/SST-2.zip")


def test_an_encrypted_sst2_zip_is_a_clear_error(tmp_path, monkeypatch):
    data = bytearray(sst2_zip())
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):  # the encrypted flag
        start = data.find(signature)
        while start != -1:
            data[start + offset] |= 1
            start = data.find(signature, start + 4)
    (tmp_path / "SST-2.zip").write_bytes(bytes(data))
    monkeypatch.setenv("BILSTM_DATA_DIR", str(tmp_path))
    with pytest.raises(UserError, match="SST-2/train.tsv is encrypted"):
        load_builtin("sst2")


# 9. A quote that is never closed.

def swallowing_csv(path: Path, rows: int = 100, broken: int = 50) -> Path:
    """`rows` rows; row `broken` (line broken + 1) opens a quote it never closes, and the next
    row holds a quoted word: Python's csv reads both as one row of the right width."""
    lines = ["text,label"]
    for index, (text, label) in enumerate(toy_examples(rows), start=1):
        if index == broken:
            text = f'"{text}'
        elif index == broken + 1:
            text = f'{text} "quoted" word'
        lines.append(f"{text},{label}")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_an_unclosed_quote_is_a_bad_row_not_a_swallowed_one(tmp_path):
    path = swallowing_csv(tmp_path / "d.csv")
    problems = BadRows(str(path), "skip")
    read = list(read_rows(str(path), bad_rows=problems))
    assert len(read) == 99 and problems.count == 1
    assert problems.messages == [f"{path}:51: a quote opened in this row is never closed (line 52 "
                                 "has a quote that neither closes a field nor is doubled); "
                                 "double a quote inside a quoted field (\"\"), or remove it"]
    assert [number for number, _, _ in read][49:51] == [52, 53]
    with pytest.raises(UserError, match=f"{path}:51: a quote opened in this row is never closed"):
        list(read_rows(str(path)))
    result = run_cli("train", "--dry-run", "--set", "data.dataset=null", "--set",
                     f"data.train={path}", cwd=tmp_path)
    clean_exit_2(result, f"{path}:51: a quote opened in this row is never closed")


def test_a_quote_that_runs_to_the_end_of_the_file_loses_only_its_row(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('text,label\nfine,pos\n"never closed,neg\nmore,pos\nlast,neg\n')
    problems = BadRows(str(path), "skip")
    assert [(n, t) for n, t, _ in read_rows(str(path), bad_rows=problems)] == [
        (2, "fine"), (4, "more"), (5, "last")]
    assert problems.messages == [f"{path}:3: a quote opened in this row is never closed (it "
                                 "runs to the end of the file, line 5); close it, or remove it"]


def test_a_field_of_too_many_lines_is_a_bad_row(tmp_path):
    path = tmp_path / "d.csv"
    many = "\n".join(f"line {i}" for i in range(150))
    path.write_text(f'text,label\nfine,pos\n"{many}",neg\nafter,pos\n"two\nlines",neg\n')
    problems = BadRows(str(path), "skip")
    assert [(n, t) for n, t, _ in read_rows(str(path), bad_rows=problems)] == [
        (2, "fine"), (153, "after"), (154, "two\nlines")]
    assert problems.messages == [f"{path}:3: lines 3-152 read as one row (150 lines; a text "
                                 "spans at most 100): a quote that is never closed?"]


def test_a_stray_quote_in_one_line_and_json_too_deep_or_too_long_are_bad_rows(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text('text,label\n"the "best" film",pos\nfine,neg\n')
    problems = BadRows(str(path), "skip")
    assert [(n, t) for n, t, _ in read_rows(str(path), bad_rows=problems)] == [(3, "fine")]
    assert problems.messages == [f"{path}:2: a quote inside a quoted field is neither doubled "
                                 'nor followed by the delimiter; double it (""), or remove it']
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text('{"text": ' + "[" * 100_000 + "]" * 100_000 + ', "label": "a"}\n'
                     '{"text": "x", "label": ' + "1" * 5000 + '}\n{"text": "ok", "label": "b"}\n')
    problems = BadRows(str(jsonl), "skip")
    assert [(n, t) for n, t, _ in read_rows(str(jsonl), bad_rows=problems)] == [(3, "ok")]
    assert problems.messages[0] == f"{jsonl}:1: not valid JSON (nested too deeply)"
    assert problems.messages[1].startswith(f"{jsonl}:2: not valid JSON (Exceeds the limit")


# 10. Control characters in labels.

@pytest.mark.parametrize("name, content, line", [
    ("d.tsv", "text\tlabel\ngood film\tpos\nbad film\t\x001\nok film\tneg\n", 3),
    ("d.csv", "text,label\ngood film,pos\nbad film,neg\x07\nok film,neg\n", 3),
    ("d.jsonl", '{"text": "good film", "label": "pos"}\n{"text": "bad", "label": "\\u0000neg"}\n'
                '{"text": "ok film", "label": "neg"}\n', 2),
    ("d.ft", "__label__pos good film\n__label__ne\x1bg bad film\n__label__neg ok film\n", 2),
], ids=["tsv", "csv", "jsonl", "fasttext"])
def test_a_control_character_in_a_label_is_a_bad_row(tmp_path, name, content, line):
    path = tmp_path / name
    path.write_text(content)
    problems = BadRows(str(path), "skip")
    assert sorted(label for _, _, label in read_rows(str(path), bad_rows=problems)) == [
        "neg", "pos"]
    assert problems.count == 1
    assert problems.messages[0].startswith(f"{path}:{line}: label ")
    assert "holds a control character (U+00" in problems.messages[0]
    result = run_cli("train", "--dry-run", "--set", "data.dataset=null", "--set",
                     f"data.train={path}", cwd=tmp_path)
    clean_exit_2(result, f"{path}:{line}: label", "control character")


def test_control_characters_and_bad_bytes_in_folder_names_and_data_labels(tmp_path):
    root = tmp_path / "train"
    for label in ("pos", "neg", "ne\x01g"):
        (root / label).mkdir(parents=True)
        (root / label / "1.txt").write_text(f"text of {label!r}")
    os.mkdir(os.path.join(os.fsencode(root), b"po\xffs"))
    with open(os.path.join(os.fsencode(root), b"po\xffs", b"1.txt"), "w") as handle:
        handle.write("some text")
    problems = BadRows(str(root), "skip")
    assert sorted(label for _, _, label in read_rows(str(root), bad_rows=problems)) == [
        "neg", "pos"]
    assert problems.count == 2
    assert any("holds a control character (U+0001)" in m for m in problems.messages)
    assert any("is not valid UTF-8" in m for m in problems.messages)
    with pytest.raises(UserError, match=r"data.labels: Value error|data.labels: label 'a\\x00b' "
                                        r"holds a control character"):
        load_config(None, ["data.labels=[pos, \"a\\0b\"]"])


# 12. Keys that have no effect in the config as given.

def warnings_for(tmp_path: Path, text: str, overrides: list[str] | None = None) -> list[str]:
    config = tmp_path / "c.yaml"
    config.write_text(text)
    seen: list[str] = []
    load_config(config, overrides, warn=seen.append)
    return seen


def test_keys_without_effect_are_warned_about_once_each(tmp_path):
    train = write_tsv(tmp_path / "train.tsv", toy_examples(20))
    ft = tmp_path / "train.ft"
    ft.write_text("__label__pos good\n__label__neg bad\n")
    files = f"data:\n  dataset: null\n  train: {train}\n"
    assert warnings_for(tmp_path, files + "model:\n  merge_mode: sum\n") == [
        "model.merge_mode has no effect: it merges the two directions of a bidirectional LSTM, "
        "and model.bidirectional is false"]
    assert warnings_for(tmp_path, files + "model:\n  merge_mode: sum\n",
                        ["model.bidirectional=true"]) == []
    assert warnings_for(tmp_path, files, ["model.merge_mode=ave"]) == [
        "model.merge_mode has no effect: it merges the two directions of a bidirectional LSTM, "
        "and model.bidirectional is false"]
    assert warnings_for(tmp_path, files + "model:\n  embedding_init: random\n"
                                          "  embedding_init_scale: 2.0\n") == [
        "model.embedding_init_scale has no effect: it scales the co-occurrence vectors, and "
        "model.embedding_init is random"]
    assert warnings_for(tmp_path, files + "  label_prefix: '#'\n  header: true\n") == [
        "data.label_prefix has no effect: only fastText files have label prefixes, and "
        f"{train} is read as tsv"]
    assert warnings_for(tmp_path, f"data:\n  dataset: null\n  train: {ft}\n  header: false\n"
                                  "  text_column: 1\n  label_prefix: '__label__'\n") == [
        f"data.text_column has no effect: fastText files and class folders have no columns, and "
        f"{ft} is read as fasttext",
        f"data.header has no effect: only tsv and csv files have a header row, and {ft} is "
        "read as fasttext"]
    valid = write_tsv(tmp_path / "valid.tsv", toy_examples(6))
    assert warnings_for(tmp_path, files + f"  validation: {valid}\n  validation_split: 0.2\n"
                                          "  validation_by: block\n") == [
        "data.validation_split has no effect: data.validation gives the validation set",
        "data.validation_by has no effect: data.validation gives the validation set"]
    assert warnings_for(tmp_path, "data:\n  dataset: sst2\n  format: csv\n  on_bad_row: skip\n"
                        ) == [
        "data.format has no effect: data.dataset (sst2) is read from its own archive",
        "data.on_bad_row has no effect: data.dataset (sst2) is read from its own archive"]


def test_no_warning_for_defaults_shipped_configs_or_a_runs_own_config(tmp_path):
    from bilstm_cli.config import builtin_config_dir, config_to_yaml

    for name in ("imdb", "sst2", "reference"):
        seen: list[str] = []
        load_config(builtin_config_dir() / f"{name}.yaml", warn=seen.append)
        assert seen == [], name
    train = write_tsv(tmp_path / "train.tsv", toy_examples(20))
    dumped = config_to_yaml(load_config(None, ["data.dataset=null", f"data.train={train}"]))
    assert warnings_for(tmp_path, dumped) == []
    assert warnings_for(tmp_path, f"data:\n  dataset: null\n  train: {train}\n",
                        ["model.merge_mode=concat"]) == []


def test_train_prints_the_no_effect_warning(tmp_path):
    train = write_tsv(tmp_path / "train.tsv", toy_examples(20))
    result = run_cli("train", "--dry-run", "--set", "data.dataset=null", "--set",
                     f"data.train={train}", "--set", "model.merge_mode=sum",
                     "--unidirectional", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "warning: model.merge_mode has no effect" in result.stderr


# 13. An empty class folder.

def test_an_empty_class_folder_is_noted_in_the_summary(tmp_path):
    root = tmp_path / "train"
    for label in ("pos", "neg"):
        (root / label).mkdir(parents=True)
        for index, (text, _) in enumerate(toy_examples(10, seed=len(label))):
            (root / label / f"{index}.txt").write_text(text)
    (root / "meh").mkdir()
    (root / "misc").mkdir()
    (root / "misc" / "notes.md").write_text("not a text")
    (root / "pos" / "extra").mkdir()
    data = DataConfig(dataset=None, train=str(root), max_tokens=100, max_length=50)
    splits = load_splits(data, seed=0)
    assert splits.labels == ["neg", "pos"]
    notes = splits.train.notes
    assert f"{root / 'meh'}: empty class folder (no .txt files), not used as a label" in notes
    assert f"{root / 'misc'}: empty class folder (no .txt files), not used as a label" in notes
    assert f"{root / 'pos'}: 1 sub-folder(s) inside a class folder were not read" in notes
    from bilstm_cli.config import Config

    summary = summarize(splits, Config(data=data))
    assert any("meh: empty class folder" in n for n in summary["splits"]["train"]["notes"])
    assert read_labelled(str(root), data).notes == notes
    result = run_cli("train", "--dry-run", "--set", "data.dataset=null", "--set",
                     "data.train=train", cwd=tmp_path)  # relative: the table fits the line
    assert result.returncode == 0, result.stderr
    assert "train/meh: empty class folder (no .txt files), not used as a label" in result.stdout
    assert json.loads(json.dumps(summary))  # the summary stays JSON (data_summary.json)


def test_resume_with_a_binary_run_config_is_one_clear_error(tmp_path):
    """`train --resume RUN -c other.yaml`: the run's own config.yaml is read as any config."""
    from bilstm_cli.checkpoint import check_resume
    from bilstm_cli.config import Config
    from bilstm_cli.errors import UserError

    (tmp_path / "config.yaml").write_bytes(b"model:\n  units: \xff\xfe\x00\n")
    with pytest.raises(UserError, match="config.yaml: not UTF-8 text"):
        check_resume(tmp_path, Config().model_dump(mode="json"), force=False)
