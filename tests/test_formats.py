"""Every input format, bad rows (error or skip), data.labels, lazy reading, and the CLI's answers
to bad input (one clear message, exit code 2, no traceback). Files are written by each test."""

import io
import json
import sys

import pytest
from conftest import TINY, run_cli, toy_examples, write_jsonl, write_tsv

from bilstm_cli.config import Config, DataConfig
from bilstm_cli.data import load_splits, read_labelled, readers, summarize
from bilstm_cli.data.readers import BadRows, detect_format, read_rows
from bilstm_cli.errors import UserError


def files(path, **kwargs) -> DataConfig:
    # Numbers, not the default `auto`: these tests call the readers and the summary directly,
    # which take a resolved config (api.prepare resolves `auto` first).
    return DataConfig(dataset=None, train=str(path), **{"max_tokens": 20000, "max_length": 200,
                                                         **kwargs})


def table_row(output: str, first: str) -> list[str]:
    """The cells of the first row of a plain (ASCII) table that starts with `first`."""
    line = next(ln for ln in output.splitlines() if ln.startswith(f"| {first} "))
    return [cell.strip() for cell in line.strip("|").split("|")]


def rows(path, **kwargs):
    return [(text, label) for _, text, label in read_rows(str(path), **kwargs)]


def test_format_from_extension_folder_or_setting(tmp_path):
    (tmp_path / "classes").mkdir()
    for name, kind in [("a.tsv", "tsv"), ("a.TAB", "tsv"), ("a.csv", "csv"), ("a.jsonl", "jsonl"),
                       ("a.ndjson", "jsonl"), ("a.fasttext", "fasttext"), ("a.ft", "fasttext"),
                       ("a.parquet", "parquet"), ("classes", "folder")]:
        assert detect_format(str(tmp_path / name), "auto") == kind
    assert detect_format("train.txt", "fasttext") == "fasttext"
    with pytest.raises(UserError, match="standard input.*data.format"):
        detect_format("-", "auto")
    with pytest.raises(UserError, match="cannot tell the format.*folder"):
        detect_format("train.txt", "auto")
    # evaluate's fallback, the run's data.format: only where the extension names none
    assert detect_format("test.txt", "auto", "fasttext") == "fasttext"
    assert detect_format("-", "auto", "tsv") == "tsv"
    assert detect_format(str(tmp_path / "a.csv"), "auto", "fasttext") == "csv"
    with pytest.raises(UserError, match="cannot tell the format"):
        detect_format("test.txt", "auto", "folder")


def test_csv_without_header_by_index_and_tsv_by_name(tmp_path):
    plain = tmp_path / "d.csv"
    plain.write_text('pos,"a, b"\nneg,c\n')
    assert rows(plain, text_column=1, label_column=0) == [("a, b", "pos"), ("c", "neg")]
    assert rows(plain, text_column=1, label_column=0, header=True) == [("c", "neg")]
    named = tmp_path / "d.tsv"
    named.write_text("label\tid\ttext\npos\t1\tnice\n")
    assert rows(named) == [("nice", "pos")]
    with pytest.raises(UserError, match="data.header is false"):
        rows(named, header=False)


def test_csv_quoted_newlines_crlf_bom_and_an_unclosed_quote(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes('\ufefftext,label\r\n"one\r\ntwo ""quoted""",pos\r\nthree,neg\r\n'.encode())
    assert list(read_rows(str(path))) == [(2, 'one\r\ntwo "quoted"', "pos"), (4, "three", "neg")]
    broken = tmp_path / "broken.csv"
    broken.write_text('text,label\nfine,pos\n"never closed,neg\n')
    with pytest.raises(UserError, match=r"broken.csv:3: a quote opened in this row is never "
                                        r"closed \(it runs to the end of the file, line 3\)"):
        rows(broken)
    swallowed = tmp_path / "swallowed.csv"
    swallowed.write_text('text,label\nfine,pos\n"never closed,neg\nmore,pos\nlast,neg\n')
    with pytest.raises(UserError, match=r"1 bad row\(s\) in .*\n.*swallowed.csv:3: a quote "
                                        r"opened in this row is never closed \(it runs to the "
                                        r"end of the file, line 5\)"):
        rows(swallowed)
    widened = tmp_path / "widened.csv"  # a quoted field over two lines, one column too many
    widened.write_text('text,label\n"two\nlines",pos,extra\nfine,neg\n')
    with pytest.raises(UserError, match=r"widened.csv:2: expected 2 columns, found 3 \(lines "
                                        r"2-3 read as one row: a quote that is never closed\?\)"):
        rows(widened)


def test_a_carriage_return_inside_a_tsv_row_loses_only_that_row(tmp_path):
    """A stray \\r (a file edited on Windows) is one bad row; the rows after it are read."""
    path = tmp_path / "d.tsv"
    path.write_bytes(b"text\tlabel\ngood one\tpos\nbad\rrow\tneg\nfine\tneg\nlast\tpos\n")
    problems = BadRows(str(path), "skip")
    assert [(t, label) for _, t, label in read_rows(str(path), bad_rows=problems)] == [
        ("good one", "pos"), ("fine", "neg"), ("last", "pos")]
    assert problems.count == 1
    assert problems.messages == [f"{path}:3: a carriage return (\\r) inside the row: remove it"]
    header = tmp_path / "h.tsv"
    header.write_bytes(b"te\rxt\tlabel\ngood\tpos\n")
    with pytest.raises(UserError, match=r"h.tsv:1: cannot read the header row"):
        rows(header)


def test_jsonl_nested_keys_numbers_and_bad_values(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(
        '{"meta": {"review": "fine film"}, "y": {"stars": 4}}\n'
        '{"meta.review": "literal dotted key", "y": {"stars": true}}\n'
        '{"meta": {"review": "x"}, "y": {"stars": [1, 2]}}\n'
        '{"meta": {}, "y": {"stars": 1}}\n'
    )
    with pytest.raises(UserError) as info:
        rows(path, text_column="meta.review", label_column="y.stars")
    message = str(info.value)
    assert f"{path}:3: the label (key 'y.stars') is a list" in message
    assert f"{path}:4: missing or empty text (key 'meta.review')" in message
    bad = BadRows(str(path), "skip")
    assert rows(path, text_column="meta.review", label_column="y.stars", bad_rows=bad) == [
        ("fine film", "4"), ("literal dotted key", "true")]
    assert bad.count == 2


def test_fasttext_labels_prefix_and_several_labels(tmp_path):
    path = tmp_path / "d.ft"
    path.write_text("__label__pos a  fine\tfilm\n\n__label__neg   dull\n__label__pos\tnice\n")
    assert rows(path) == [("a  fine\tfilm", "pos"), ("dull", "neg"), ("nice", "pos")]
    custom = tmp_path / "d.fasttext"
    custom.write_text("#pos nice\n#neg bad\n")
    assert rows(custom, label_prefix="#") == [("nice", "pos"), ("bad", "neg")]
    bad = tmp_path / "bad.ft"
    bad.write_text("__label__pos __label__funny text\nno label here\n__label__pos\n"
                   "__label__ empty label\n")
    with pytest.raises(UserError) as info:
        rows(bad)
    message = str(info.value)
    assert "4 bad row(s)" in message
    assert f"{bad}:1: 2 labels (pos, funny): bilstm trains single-label classifiers" in message
    assert f"{bad}:2: no label" in message and "data.label_prefix" in message
    assert f"{bad}:3: empty text" in message
    assert f"{bad}:4: empty label" in message


def test_folder_of_class_folders_like_aclimdb(tmp_path):
    root = tmp_path / "train"
    for label, texts in [("pos", ["good", "great"]), ("neg", ["bad"]), ("unsup", ["?", "??"])]:
        (root / label).mkdir(parents=True)
        for i, text in enumerate(texts):
            (root / label / f"{i}_5.txt").write_text(text)
    (root / "urls_pos.txt").write_text("http://example.org\n")  # not in a class folder
    (root / "labeledBow.feat").write_text("0:1\n")
    (root / "pos" / "notes.md").write_text("not a text")
    assert sorted(rows(root)) == [("?", "unsup"), ("??", "unsup"), ("bad", "neg"),
                                  ("good", "pos"), ("great", "pos")]
    bad = BadRows(str(root))
    assert sorted(rows(root, labels=["neg", "pos"], bad_rows=bad)) == [
        ("bad", "neg"), ("good", "pos"), ("great", "pos")]
    assert any("unsup" in note and "2 .txt files" in note for note in bad.notes)
    assert any("1 file(s) not ending in .txt" in note for note in bad.notes)
    (root / "neg" / "9_1.txt").write_bytes(b"bad \xff byte")
    (root / "neg" / "8_1.txt").write_text("  \n")
    with pytest.raises(UserError) as info:
        rows(root, labels=["neg", "pos"])
    assert f"{root / 'neg' / '9_1.txt'}: invalid UTF-8" in str(info.value)
    assert f"{root / 'neg' / '8_1.txt'}: empty text" in str(info.value)
    with pytest.raises(UserError, match="no class sub-folders"):
        rows(root / "pos")


def test_parquet_when_pyarrow_is_installed(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"text": ["fine", None, "dull"], "label": [1, 0, 0]}), path)
    with pytest.raises(UserError, match=r"d.parquet: row 2: missing or empty text"):
        rows(path)
    assert rows(path, bad_rows=BadRows(str(path), "skip")) == [("fine", "1"), ("dull", "0")]


def test_parquet_without_pyarrow_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(UserError, match="needs the optional package pyarrow.*pip install pyarrow"):
        rows(tmp_path / "d.parquet")


class EndlessLines(io.RawIOBase):
    """A stream that never ends: only a lazy reader can give its first rows."""

    def __init__(self, first: bytes, line: bytes) -> None:
        self.pending = first
        self.line = line

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if not self.pending:
            self.pending = self.line
        count = min(len(buffer), len(self.pending))
        buffer[:count] = self.pending[:count]
        self.pending = self.pending[count:]
        return count


@pytest.mark.parametrize("kind,first,line", [
    ("tsv", b"text\tlabel\n", b"some text\tpos\n"),
    ("csv", b"text,label\n", b'"some, text",pos\n'),
    ("jsonl", b"", b'{"text": "some text", "label": "pos"}\n'),
    ("fasttext", b"", b"__label__pos some text\n"),
])
def test_reading_is_lazy(monkeypatch, kind, first, line):
    monkeypatch.setattr(readers, "_open_binary", lambda path: io.BufferedReader(
        EndlessLines(first, line)))
    stream = read_rows("-", kind)
    assert [next(stream)[1:] for _ in range(3)] == [("some text" if kind != "csv"
                                                     else "some, text", "pos")] * 3


def test_a_one_megabyte_line(tmp_path):
    text = "word " * 200_000
    path = write_jsonl(tmp_path / "long.jsonl", [(text, "pos"), ("short", "neg")])
    assert [len(t) for t, _ in rows(path)] == [len(text), 5]
    tsv = write_tsv(tmp_path / "long.tsv", [(text, "pos")])
    assert len(rows(tsv)[0][0]) == len(text)


def test_on_bad_row_skip_counts_and_reports(tmp_path):
    path = write_tsv(tmp_path / "d.tsv", toy_examples(40) + [("", "pos"), ("text", "")])
    with open(path, "a") as handle:
        handle.write("three\tcolumns\there\n")
    with pytest.raises(UserError, match="(?s)3 bad row.*on_bad_row=skip"):
        read_labelled(str(path), files(path))
    config = Config(data=files(path, on_bad_row="skip"))
    splits = load_splits(config.data, seed=0)
    assert len(splits.train) + len(splits.validation) == 40
    assert splits.train.skipped == 3 and splits.validation.skipped == 0
    summary = summarize(splits, config)
    assert summary["splits"]["train"]["skipped_rows"] == 3
    assert summary["splits"]["train"]["bad_rows"][0] == f"{path}:42: empty text"


def test_all_rows_bad_is_still_an_error(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text("nope\n" * 3)
    with pytest.raises(UserError, match="all 3 row.*bad and skipped"):
        read_labelled(str(path), files(path, on_bad_row="skip"))


def test_data_labels_fix_the_set_and_order(tmp_path):
    train = write_tsv(tmp_path / "train.tsv", toy_examples(60, classes=3))
    with pytest.raises(UserError, match="label 'meh' is not one of data.labels"):
        load_splits(files(train, labels=["pos", "neg"]), seed=0)
    data = files(train, labels=["pos", "neg"], on_bad_row="skip")
    splits = load_splits(data, seed=0)
    assert splits.labels == ["pos", "neg"] and splits.train.skipped == 20
    assert set(splits.train.labels) == {"pos", "neg"}
    with pytest.raises(UserError, match="no training example has the label.*'good'"):
        load_splits(files(train, labels=["pos", "neg", "meh", "good"]), seed=0)


def test_vocabulary_coverage_in_the_summary(tmp_path):
    train = write_tsv(tmp_path / "train.tsv", [("a b c", "x"), ("a b d", "y")] * 5)
    test = write_tsv(tmp_path / "test.tsv", [("a z z z", "x")])
    config = Config(data=files(train, test=str(test), validation_split=0.2, max_tokens=4))
    summary = summarize(load_splits(config.data, seed=0), config)
    # A vocabulary of 4 (with [PAD], [UNK]) holds a and b only.
    assert summary["vocabulary_size"] == 4
    assert summary["splits"]["train"]["vocabulary_coverage"] == pytest.approx(2 / 3)
    assert summary["splits"]["test"]["vocabulary_coverage"] == pytest.approx(1 / 4)


def test_stdin_and_every_format_through_train_dry_run(tmp_path):
    examples = toy_examples(40)
    tsv = write_tsv(tmp_path / "d.tsv", examples)
    result = run_cli("train", "--dry-run", "--set", "data.dataset=null", "--set", "data.train=-",
                     "--set", "data.format=tsv", cwd=tmp_path, input=tsv.read_text())
    assert result.returncode == 0, result.stderr
    assert table_row(result.stdout, "train") == ["train", "-", "36", "18", "18", "0"]
    (tmp_path / "d.ft").write_text("".join(f"__label__{y} {x}\n" for x, y in examples))
    for i, (text, label) in enumerate(examples):
        (tmp_path / "folder" / label).mkdir(parents=True, exist_ok=True)
        (tmp_path / "folder" / label / f"{i}.txt").write_text(text)
    for source in ("d.ft", "folder"):
        result = run_cli("train", "--dry-run", "--set", "data.dataset=null",
                         "--set", f"data.train={tmp_path / source}", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert table_row(result.stdout, "train")[2:] == ["36", "18", "18", "0"]


BAD_INPUT = {
    "empty file": ("empty.tsv", "text\tlabel\n", [], "no examples"),
    "bad rows": ("bad.tsv", "text\tlabel\nok\tpos\n\tneg\nfine\n", [],
                 "bad.tsv:3: empty text"),
    "invalid UTF-8": ("bad.jsonl", b'{"text": "caf\xe9", "label": "x"}\n', [],
                      "bad.jsonl:1: invalid UTF-8"),
    "one class": ("one.tsv", "text\tlabel\na\tpos\nb\tpos\nc\tpos\n", [], "only one class"),
    "several fastText labels": ("d.ft", "__label__a __label__b text\n", [], "2 labels (a, b)"),
    "label outside data.labels": ("d.tsv", "text\tlabel\nx\tpos\ny\tneg\nz\tmeh\n",
                                  ["--set", "data.labels=[pos, neg]"], "label 'meh' is not one"),
    "stdin without a format": (None, "", ["--set", "data.train=-"], "say its format"),
    "missing folder": (None, "", ["--set", "data.train=nowhere/", "--set", "data.format=folder"],
                       "folder not found: nowhere/"),
    "unknown class weight label": ("d.tsv", "text\tlabel\nx\tpos\ny\tneg\nz\tpos\nw\tneg\n",
                                   ["--set", "training.class_weight={pos: 2, good: 1}"],
                                   "'good' is not a label"),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_is_one_message_exit_2(tmp_path, case):
    name, content, extra, expected = BAD_INPUT[case]
    args = ["train", "--dry-run", "--set", "data.dataset=null", *extra]
    if name is not None:
        path = tmp_path / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        args += ["--set", f"data.train={path}"]
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_unseen_test_label_is_an_error_before_training(tmp_path):
    train = write_tsv(tmp_path / "train.tsv", toy_examples(20))
    test = write_tsv(tmp_path / "test.tsv", [("x", "maybe")])
    result = run_cli("train", *TINY, "--set", f"data.train={train}", "--set",
                     f"data.test={test}", "--output", str(tmp_path / "runs"), cwd=tmp_path)
    assert result.returncode == 2 and "'maybe' never occur in the training data" in result.stderr
    assert not (tmp_path / "runs").exists()


def test_train_skips_bad_rows_weights_classes_and_records_both(tmp_path):
    """A real (tiny) training: the run folder's data_summary.json has the skipped rows."""
    examples = toy_examples(60)
    imbalanced = [e for e in examples if e[1] == "pos"] + [e for e in examples
                                                           if e[1] == "neg"][:10]
    train = write_tsv(tmp_path / "train.tsv", imbalanced + [("", "pos"), ("orphan", "")])
    result = run_cli("train", *TINY, "--epochs", "1", "--set", f"data.train={train}",
                     "--set", "data.on_bad_row=skip", "--set", "training.class_weight=balanced",
                     "--output", str(tmp_path / "runs"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "class weights: neg 2, pos 0.6667" in result.stderr
    summary = json.loads((tmp_path / "runs" / "latest" / "data_summary.json").read_text())
    assert summary["splits"]["train"]["skipped_rows"] == 2
    assert summary["splits"]["train"]["bad_rows"] == [f"{train}:42: empty text",
                                                      f"{train}:43: missing label"]
    assert summary["class_weight"] == {"neg": 2.0, "pos": pytest.approx(2 / 3)}

    folder = tmp_path / "eval"
    for label in ("pos", "neg"):
        (folder / label).mkdir(parents=True)
        for i, (text, _) in enumerate(e for e in examples if e[1] == label):
            (folder / label / f"{i}.txt").write_text(text)
    result = run_cli("evaluate", "--data", str(folder), "--json", "--model",
                     str(tmp_path / "runs" / "latest"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["examples"] == 60


def test_evaluate_reads_a_file_as_the_run_read_its_training_file(tmp_path):
    """A run trained on `.txt` files in TSV with a header and columns by index: `evaluate` reads
    its test file the same way (format, header, columns) without being told again."""
    examples = toy_examples(40)
    header = ("id", "review", "sentiment")
    for name, rows_ in (("train.txt", examples), ("test.txt", examples[:12])):
        write_tsv(tmp_path / name, [(str(i), t, y) for i, (t, y) in enumerate(rows_)], header)
    result = run_cli("train", *TINY, "--epochs", "1", "--set", "data.train=train.txt",
                     "--set", "data.format=tsv", "--set", "data.header=true",
                     "--set", "data.text_column=1", "--set", "data.label_column=2",
                     "--output", "runs", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    result = run_cli("evaluate", "--data", "test.txt", "--json", "--model", "runs/latest",
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["examples"] == 12  # the header row is not an example

    with open(tmp_path / "test.txt", "a") as handle:
        handle.write("12\tno label column\n")
    result = run_cli("evaluate", "--data", "test.txt", "--model", "runs/latest", cwd=tmp_path)
    assert result.returncode == 2 and "test.txt:14: expected 3 columns, found 2" in result.stderr
    assert "pass --on-bad-row skip" in result.stderr
    result = run_cli("evaluate", "--data", "test.txt", "--json", "--on-bad-row", "skip",
                     "--model", "runs/latest", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["skipped_rows"] == 1 and "1 bad row(s)" in result.stderr
    write_tsv(tmp_path / "plain.txt", [(str(i), t, y) for i, (t, y) in enumerate(examples[:5])],
              header=None)
    result = run_cli("evaluate", "--data", "plain.txt", "--json", "--no-header", "--model",
                     "runs/latest", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["examples"] == 5  # the first row is an example too

    (tmp_path / "runs" / "latest" / "labels.json").write_text('{"labels": ')  # damaged
    result = run_cli("evaluate", "--data", "test.txt", "--on-bad-row", "skip", "--model",
                     "runs/latest", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "labels.json cannot be read" in result.stderr and "damaged" in result.stderr


def test_a_label_with_a_tab_or_line_break_is_a_bad_row(tmp_path):
    """predict writes label<TAB>probability, one line per text: such a label would break it."""
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a", "label": "x\\ty"}\n{"text": "b", "label": "two\\nlines"}\n'
                    '{"text": "c", "label": "fine"}\n')
    problems = BadRows(str(path), "skip")
    assert rows(path, bad_rows=problems) == [("c", "fine")]
    assert problems.count == 2 and "holds a tab or a line break" in problems.messages[0]
