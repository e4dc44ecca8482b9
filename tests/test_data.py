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
from bilstm_cli.data.splits import Dataset, block_split, sentence_split, stratified_split
from bilstm_cli.errors import UserError


def files(path, **kwargs) -> DataConfig:
    # Numbers, not the default `auto`: these tests call the readers and the summary directly,
    # which take a resolved config (api.prepare resolves `auto` first).
    return DataConfig(dataset=None, train=str(path), **{"max_tokens": 20000, "max_length": 200,
                                                         **kwargs})


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


def phrase_treebank(sentences: int) -> Dataset:
    """SST-2's shape: every sentence with its phrases (runs of whole words) as texts of their
    own, with trailing spaces and repeats, in no particular order."""
    rng = np.random.default_rng(0)
    rows: list[tuple[str, str]] = []
    for number in range(sentences):
        label = "pos" if number % 3 else "neg"
        words = [f"w{number}", *rng.choice(["the", "film", "good", "goodness", "a"], 3),
                 f"end{number}"]
        for start in range(len(words)):
            for stop in range(start + 1, len(words) + 1):
                rows.append((" ".join(words[start:stop]) + " ", label))
    rows.append(("the film ", "pos"))  # a repeat, and inside many sentences
    order = rng.permutation(len(rows))
    return Dataset([rows[i][0] for i in order], [rows[i][1] for i in order])


def test_sentence_split_holds_out_whole_sentences_and_nothing_inside_them():
    data = phrase_treebank(60)
    train, validation, left_out = sentence_split(data, 0.1, np.random.default_rng(1))
    # Validation: the longest phrases only (5 words: one per held-out sentence), stratified.
    assert {len(text.split()) for text in validation.texts} == {5}
    assert validation.class_counts() == {"neg": 2, "pos": 4}

    def padded(text: str) -> str:
        return f" {' '.join(text.split())} "

    held = {padded(text) for text in validation.texts}
    sentences = {padded(text) for text in data.texts if len(text.split()) == 5}
    kept = sentences - held
    trained = {padded(text) for text in train.texts}
    # Training: every phrase of a training sentence, shared ones ("the film") included...
    assert trained == {padded(text) for text in data.texts
                       if any(padded(text) in sentence for sentence in kept)}
    assert " the film " in trained and " good " in trained and " goodness " in trained
    # ... and nothing held out: no held-out sentence, nor any phrase only they contain.
    assert not trained & held
    left = {padded(text) for text in data.texts} - trained - held
    assert left and all(any(text in sentence for sentence in held) for text in left)
    assert left_out == sum(padded(text) in left for text in data.texts) >= 6 * 8
    again, _, _ = sentence_split(data, 0.1, np.random.default_rng(1))
    assert again.texts == train.texts


def test_block_split_holds_out_runs_of_consecutive_texts_per_class():
    """IMDB's shape: each class's reviews in groups (movies) of consecutive texts."""
    labels = ["neg" if i < 10_000 else "pos" for i in range(20_000)]
    data = Dataset([f"movie{i // 12} review{i}" for i in range(20_000)], labels)
    train, validation = block_split(data, 0.1, np.random.default_rng(5))
    assert validation.class_counts() == {"pos": 1000, "neg": 1000}
    assert len(train) == 18_000 and not set(train.texts) & set(validation.texts)
    # Held out in blocks of 100, a validation review rarely has its movie in training (only at
    # a block's two edges); held out one by one, nearly always.
    def seen(train: Dataset, validation: Dataset) -> float:
        """The share of validation reviews whose movie has reviews in training."""
        trained = {text.split()[0] for text in train.texts}
        return float(np.mean([text.split()[0] in trained for text in validation.texts]))

    assert seen(train, validation) < 0.2
    assert seen(*stratified_split(data, 0.1, np.random.default_rng(5))) > 0.9
    again, _ = block_split(data, 0.1, np.random.default_rng(5))
    assert again.texts == train.texts
    tiny = Dataset([str(i) for i in range(20)], ["a", "b"] * 10)
    assert block_split(tiny, 0.1, np.random.default_rng(0))[1].class_counts() == {"a": 1, "b": 1}


def test_validation_by_sentence_from_the_config(tmp_path):
    data = phrase_treebank(40)
    path = write_tsv(tmp_path / "phrases.tsv", list(zip(data.texts, data.labels, strict=True)))
    splits = load_splits(files(path, validation_by="sentence"), seed=2)
    assert {len(text.split()) for text in splits.validation.texts} == {5}
    assert "10% of its sentences;" in splits.validation.source
    assert "of their phrases unused" in splits.validation.source
    by_text = load_splits(files(path), seed=2)
    assert len(by_text.validation) > 3 * len(splits.validation)
    by_block = load_splits(files(path, validation_by="block"), seed=2)
    assert "10% held out in blocks" in by_block.validation.source


def test_splits_from_files_and_label_checks(tmp_path):
    train = write_tsv(tmp_path / "train.tsv", toy_examples(100))
    test = write_jsonl(tmp_path / "test.jsonl", toy_examples(10, seed=5))
    splits = load_splits(files(train, test=str(test)), seed=1)
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (90, 10, 10)

    one_class = write_tsv(tmp_path / "one.tsv", [("x y", "pos")] * 10)
    with pytest.raises(UserError, match="only one class"):
        load_splits(files(one_class), seed=1)
    rare = write_tsv(tmp_path / "rare.tsv", [("x y", "pos")] * 50 + [("z", "neg")] * 50
                     + [("w", "odd")])
    with pytest.raises(UserError, match=r"'odd' listed in the training data "
                                        r"\(data.max_examples=10 sampled none of them\)"):
        load_splits(files(rare, max_examples=10), seed=1)
    unseen = write_tsv(tmp_path / "unseen.tsv", [("x", "maybe")])
    with pytest.raises(UserError, match="'maybe' never occur in the training data"):
        load_splits(files(train, test=str(unseen)), seed=1)


def test_a_test_file_that_repeats_the_training_texts_is_noted(tmp_path):
    rows = [(f"text number {i}", "pos" if i % 2 else "neg") for i in range(40)]
    train = write_tsv(tmp_path / "train.tsv", rows)
    same = load_splits(files(train, test=str(train), validation=str(train)), seed=1)
    for name, split in (("test", same.test), ("validation", same.validation)):
        assert len(split.notes) == 1
        assert f"{name} ({train}): 40 of its 40 texts (100%) are training texts" in split.notes[0]
        assert "not how it does on new text" in split.notes[0]
    new = write_tsv(tmp_path / "new.tsv", [(f"another text {i}", "pos") for i in range(200)]
                    + [rows[0]])  # one shared text in 201: the usual duplicates, no note
    assert load_splits(files(train, test=str(new)), seed=1).test.notes == []
    assert load_splits(files(train), seed=1).validation.notes == []  # held out of train


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


def test_a_damaged_or_foreign_builtin_archive_is_a_user_error(tmp_path, monkeypatch):
    """An archive placed in BILSTM_DATA_DIR by hand can be anything: say which and where."""
    monkeypatch.setenv("BILSTM_DATA_DIR", str(tmp_path))
    with zipfile.ZipFile(tmp_path / "SST-2.zip", "w") as archive:
        archive.writestr("SST-2/train.tsv", "sentence\tlabel\nfine\t1\nno label here\n")
        archive.writestr("SST-2/dev.tsv", "sentence\tlabel\nfine\t1\n")
    with pytest.raises(UserError, match=r"SST-2/train.tsv:3: expected a sentence, a tab and a "
                                        r"label 0 or 1"):
        load_builtin("sst2")
    with zipfile.ZipFile(tmp_path / "SST-2.zip", "w") as archive:
        archive.writestr("SST-2/train.tsv", b"sentence\tlabel\n\xff\xfe\t1\n")
        archive.writestr("SST-2/dev.tsv", "")
    with pytest.raises(UserError, match="cannot read the sst2 archive.*is it complete"):
        load_builtin("sst2")
