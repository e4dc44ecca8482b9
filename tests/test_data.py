import io
import tarfile
import zipfile

import numpy as np
import pytest
from conftest import toy_examples, write_jsonl, write_tsv

from bilstm_cli.config import DataConfig
from bilstm_cli.data import load_splits, read_labelled, summarize
from bilstm_cli.data.builtin import load_builtin
from bilstm_cli.data.readers import read_rows
from bilstm_cli.data.splits import Dataset, stratified_split
from bilstm_cli.errors import UserError


def files(path, **kwargs) -> DataConfig:
    return DataConfig(dataset=None, train=str(path), **kwargs)


def test_tsv_with_header_and_named_columns(tmp_path):
    path = tmp_path / "d.tsv"
    path.write_text("id\tlabel\ttext\n1\tpos\tgood film\n2\tneg\tbad film\n")
    assert list(read_rows(str(path))) == [(2, "good film", "pos"), (3, "bad film", "neg")]


def test_csv_quoted_newlines_crlf_and_bom(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes('\ufefftext,label\r\n"line one\nline two, with comma",pos\r\nplain,neg\r\n'
                     .encode())
    rows = list(read_rows(str(path)))
    assert rows == [(2, "line one\nline two, with comma", "pos"), (4, "plain", "neg")]


def test_headerless_columns_by_index(tmp_path):
    path = tmp_path / "d.tsv"
    path.write_text("neg\tawful\npos\tsuperb\n")
    assert list(read_rows(str(path), text_column=1, label_column=0)) == [
        (1, "awful", "neg"), (2, "superb", "pos")]


def test_jsonl(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"review": "fine", "stars": 4}\n\n{"review": "bad", "stars": 1}\n')
    assert list(read_rows(str(path), text_column="review", label_column="stars")) == [
        (1, "fine", "4"), (3, "bad", "1")]


def test_bad_rows_are_listed_with_line_numbers(tmp_path):
    path = tmp_path / "bad.tsv"
    path.write_bytes(b"text\tlabel\nok\tpos\nmissing\t\nthree\tcolumns\there\n\tneg\n"
                     b"bad \xff byte\tpos\n")
    with pytest.raises(UserError) as info:
        list(read_rows(str(path)))
    message = str(info.value)
    assert "4 bad row(s)" in message
    assert f"{path}:3: missing label" in message
    assert f"{path}:4: expected 2 columns, found 3" in message
    assert f"{path}:5: empty text" in message
    assert f"{path}:6: invalid UTF-8" in message


def test_only_first_ten_bad_rows_listed(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text("not json\n" * 25)
    with pytest.raises(UserError) as info:
        list(read_rows(str(path)))
    assert "25 bad row(s)" in str(info.value) and "and 15 more" in str(info.value)


def test_unknown_column_and_extension(tmp_path):
    path = write_tsv(tmp_path / "d.tsv", [("a", "b")], header=("sentence", "label"))
    with pytest.raises(UserError, match="no column named 'text'.*sentence, label"):
        list(read_rows(str(path)))
    with pytest.raises(UserError, match="cannot tell the format"):
        list(read_rows(str(tmp_path / "d.txt")))
    with pytest.raises(UserError, match="file not found"):
        list(read_rows(str(tmp_path / "missing.tsv")))


def test_empty_file_is_an_error(tmp_path):
    path = tmp_path / "empty.tsv"
    path.write_text("text\tlabel\n")
    with pytest.raises(UserError, match="no examples"):
        read_labelled(str(path), files(path))


def test_stratified_split_is_seeded_and_keeps_class_shares():
    data = Dataset([str(i) for i in range(1000)], ["a"] * 800 + ["b"] * 200)
    train, validation = stratified_split(data, 0.1, np.random.default_rng(3))
    assert validation.class_counts() == {"a": 80, "b": 20}
    assert len(train) == 900 and not set(train.texts) & set(validation.texts)
    again, _ = stratified_split(data, 0.1, np.random.default_rng(3))
    assert again.texts == train.texts


def test_splits_from_files_and_label_checks(tmp_path):
    train = write_tsv(tmp_path / "train.tsv", toy_examples(100))
    test = write_jsonl(tmp_path / "test.jsonl", toy_examples(10, seed=5))
    splits = load_splits(files(train, test=str(test)), seed=1)
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (90, 10, 10)

    one_class = write_tsv(tmp_path / "one.tsv", [("x y", "pos")] * 10)
    with pytest.raises(UserError, match="only one class"):
        load_splits(files(one_class), seed=1)
    unseen = write_tsv(tmp_path / "unseen.tsv", [("x", "maybe")])
    with pytest.raises(UserError, match="'maybe' never occur in the training data"):
        load_splits(files(train, test=str(unseen)), seed=1)


def test_summary_counts_lengths_and_truncation(tmp_path):
    train = write_tsv(tmp_path / "train.tsv", [("a b c d e", "x"), ("a b", "y")] * 10)
    from bilstm_cli.config import Config

    config = Config(data=files(train, max_length=3, validation_split=0.5))
    summary = summarize(load_splits(config.data, seed=0), config)
    assert summary["labels"] == ["x", "y"]
    assert summary["splits"]["train"]["classes"] == {"x": 5, "y": 5}
    assert summary["splits"]["train"]["length_percentiles"]["max"] == 5
    assert summary["splits"]["train"]["truncated_share"] == 0.5


def _add(archive: tarfile.TarFile, name: str, text: str) -> None:
    data = text.encode()
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


def test_builtin_imdb_reads_the_archive_and_skips_extras(tmp_path, monkeypatch):
    with tarfile.open(tmp_path / "aclImdb_v1.tar.gz", "w:gz") as archive:
        _add(archive, "aclImdb/README", "readme")
        _add(archive, "aclImdb/train/pos/1_9.txt", "good<br />film")
        _add(archive, "aclImdb/train/neg/2_1.txt", "bad film")
        _add(archive, "aclImdb/train/unsup/3_0.txt", "unlabelled")
        _add(archive, "aclImdb/train/labeledBow.feat", "0:1")
        _add(archive, "aclImdb/train/urls_pos.txt", "http://x")
        _add(archive, "aclImdb/test/pos/4_8.txt", "fine")
        _add(archive, "aclImdb/test/neg/5_2.txt", "dull")
    monkeypatch.setenv("BILSTM_DATA_DIR", str(tmp_path))
    splits = load_builtin("imdb")
    assert sorted(zip(*splits["train"])) == [("bad film", "negative"),
                                            ("good<br />film", "positive")]
    assert len(splits["test"][0]) == 2


def test_builtin_sst2_and_missing_archive_message(tmp_path, monkeypatch):
    with zipfile.ZipFile(tmp_path / "SST-2.zip", "w") as archive:
        archive.writestr("SST-2/train.tsv", "sentence\tlabel\na \"quoted\" gem \t1\ndull \t0\n")
        archive.writestr("SST-2/dev.tsv", "sentence\tlabel\nfine\t1\n")
    monkeypatch.setenv("BILSTM_DATA_DIR", str(tmp_path))
    splits = load_builtin("sst2")
    assert splits["train"] == (['a "quoted" gem ', "dull "], ["positive", "negative"])
    assert splits["test"] == (["fine"], ["positive"])
    monkeypatch.setenv("BILSTM_DATA_DIR", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("BILSTM_DATA_URL_IMDB", "http://127.0.0.1:9/aclImdb_v1.tar.gz")  # closed
    with pytest.raises(UserError, match="Download aclImdb_v1.tar.gz from http://127.0.0.1:9/"):
        load_builtin("imdb")
