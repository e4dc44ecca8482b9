"""The data cache (data/cache.py): a second preparation of the same data comes from it; a
changed file, a damaged entry, an unwritable folder and two trainings at once are handled."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_CONFIG, toy_examples, write_tsv

from bilstm_cli import api
from bilstm_cli.data import cache as data_cache

SETTINGS = ["model.embedding_init=random"]


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    """An empty cache folder of this test's own (the fused kernels stay where they are)."""
    folder = tmp_path / "cache"
    kernels = Path(os.environ["BILSTM_CACHE_DIR"]) / "kernels"
    folder.mkdir()
    (folder / "kernels").symlink_to(kernels, target_is_directory=True)
    monkeypatch.setenv("BILSTM_CACHE_DIR", str(folder))
    monkeypatch.delenv("BILSTM_DATA_CACHE", raising=False)
    return folder / "data"


@pytest.fixture
def data_files(tmp_path):
    return (write_tsv(tmp_path / "train.tsv", toy_examples(120, seed=1)),
            write_tsv(tmp_path / "test.tsv", toy_examples(30, seed=2)))


def _prepare(train, test, *extra, log=None, warn=None):
    logs, warnings = [], []
    config = api.config(TINY_CONFIG, [f"data.train={train}", f"data.test={test}", *SETTINGS,
                                      *extra])
    training = api.prepare(config, check_folders=False, log=log or logs.append,
                           warn=warn or warnings.append)
    return training, logs, warnings


def _same(a, b):
    assert a.config == b.config
    assert a.summary == b.summary
    assert a.tokenizer.to_str() == b.tokenizer.to_str()
    for name, dataset in a.splits.items():
        other = dict(b.splits.items())[name]
        assert (dataset.texts, dataset.labels, dataset.source) == \
            (other.texts, other.labels, other.source)
    for mine, theirs in ((a.tokens.train_ids, b.tokens.train_ids),
                         (a.tokens.validation_ids, b.tokens.validation_ids)):
        assert len(mine) == len(theirs)
        assert all(np.array_equal(x, y) for x, y in zip(mine, theirs))


def _entries(folder, kind="*"):
    return sorted(folder.glob(f"{kind}-*.npz"))


def test_a_second_preparation_comes_from_the_cache_and_equals_the_first(cache_dir,
                                                                         data_files):
    first, logs, _ = _prepare(*data_files)
    assert not any("from the data cache" in line for line in logs)
    assert [p.name.split("-")[0] for p in _entries(cache_dir)] == ["splits", "tokens"]
    second, logs, warnings = _prepare(*data_files)
    assert sum("from the data cache" in line for line in logs) == 2, logs
    assert warnings == []
    _same(first, second)
    # Off: read and tokenized again, the same
    os.environ["BILSTM_DATA_CACHE"] = "0"
    try:
        third, logs, _ = _prepare(*data_files)
    finally:
        del os.environ["BILSTM_DATA_CACHE"]
    assert not any("cache" in line for line in logs)
    _same(first, third)


def test_a_changed_file_is_read_again(cache_dir, data_files):
    train, test = data_files
    first, _, _ = _prepare(train, test)
    with open(train, "a", encoding="utf-8") as handle:
        handle.write("superb brilliant excellent new words\tpos\n")
    second, logs, _ = _prepare(train, test)
    assert not any("data read from the data cache" in line for line in logs)
    assert len(second.splits.train) + len(second.splits.validation) == \
        len(first.splits.train) + len(first.splits.validation) + 1
    assert len(_entries(cache_dir, "splits")) == 2
    # The same size and content, a new mtime: read again too (the key has the identity).
    os.utime(test, ns=(1, 1))
    _, logs, _ = _prepare(train, test)
    assert not any("data read from the data cache" in line for line in logs)


def test_settings_and_seed_are_part_of_the_key(cache_dir, data_files):
    _prepare(*data_files)
    _, logs, _ = _prepare(*data_files, "data.max_length=7")
    assert any("data read from" in line for line in logs)  # the same splits
    assert not any("token ids from" in line for line in logs)  # another tokenizer
    _, logs, _ = _prepare(*data_files, "training.seed=7")
    assert not any("from the data cache" in line for line in logs)  # another split


def test_auto_settings_are_keyed_by_their_resolved_values(cache_dir, data_files):
    """data.max_tokens/max_length auto are resolved from the training texts before the key is
    made: the entry is the one the resolved numbers would have."""
    automatic, _, _ = _prepare(*data_files, "data.max_tokens=auto", "data.max_length=auto")
    data = automatic.config.data
    assert isinstance(data.max_tokens, int) and isinstance(data.max_length, int)
    explicit, logs, _ = _prepare(*data_files, f"data.max_tokens={data.max_tokens}",
                                 f"data.max_length={data.max_length}")
    assert any("token ids from the data cache" in line for line in logs)
    assert explicit.tokenizer.to_str() == automatic.tokenizer.to_str()


@pytest.mark.parametrize("damage", ["truncated", "garbage", "flipped byte", "other key",
                                    "wrong content"])
def test_a_damaged_entry_is_rebuilt_never_used(cache_dir, data_files, damage):
    first, _, _ = _prepare(*data_files)
    originals = {entry: entry.read_bytes() for entry in _entries(cache_dir)}
    for entry, content in originals.items():
        raw = bytearray(content)
        if damage == "truncated":
            raw = raw[: len(raw) // 2]
        elif damage == "garbage":
            raw = bytearray(b"\x93NUMPY garbage" * 10)
        elif damage == "flipped byte":  # inside the arrays: zip's CRC or the checksum
            raw[len(raw) // 3] ^= 0xFF
        elif damage == "other key":  # a valid entry of another key, copied over this one
            raw = bytearray(next(v for k, v in originals.items() if k != entry))
        else:  # a consistent file with the right key, one value changed: the checksum says so
            with np.load(entry) as stored:
                arrays = {name: stored[name].copy() for name in stored.files}
            name = next(n for n in arrays if n.endswith((".text", ".ids")))
            arrays[name][0] = 50 if arrays[name][0] != 50 else 51  # "2" or "3": still valid
            with open(entry, "wb") as handle:
                np.savez(handle, **arrays)
            continue
        entry.write_bytes(bytes(raw))
    second, logs, warnings = _prepare(*data_files)
    assert sum("is damaged" in line for line in logs) == 2, logs
    assert not any("from the data cache" in line for line in logs)
    _same(first, second)
    third, logs, _ = _prepare(*data_files)  # rebuilt and stored again
    assert sum("from the data cache" in line for line in logs) == 2, logs
    _same(first, third)


def test_an_unwritable_cache_is_warned_about_once_and_training_data_is_ready(
        tmp_path, monkeypatch, data_files):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder would go")
    monkeypatch.setenv("BILSTM_CACHE_DIR", str(blocker))
    training, _, warnings = _prepare(*data_files)
    assert len(warnings) == 1 and "data cache cannot be written" in warnings[0], warnings
    assert len(training.tokens.train_ids) == len(training.splits.train)


def test_a_full_disk_is_warned_about_once_and_leaves_no_temporary_file(
        cache_dir, data_files, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(data_cache.np, "savez", full)
    first, _, warnings = _prepare(*data_files)
    assert len(warnings) == 1 and "No space left on device" in warnings[0], warnings
    assert list(cache_dir.iterdir()) == []
    monkeypatch.undo()


def test_entries_beyond_the_limit_are_pruned(cache_dir, data_files, monkeypatch):
    monkeypatch.setattr(data_cache, "MAX_ENTRIES", 2)
    for length in (5, 6, 7):
        _prepare(*data_files, f"data.max_length={length}")
    assert len(_entries(cache_dir, "tokens")) == 2
    assert len(_entries(cache_dir, "splits")) == 1


_TRAIN = """
import json, sys
from bilstm_cli import api
config = api.config(sys.argv[1], sys.argv[2:])
result = api.prepare(config, log=print).run(log=print)
print(json.dumps({"run": str(result.run_dir), "test": result.metrics["test"]["loss"],
                  "validation": result.metrics["validation"]["loss"]}))
"""


def test_two_trainings_on_a_cold_cache_both_finish_with_the_same_result(
        cache_dir, data_files, tmp_path, fused_kernel):
    """Both read, tokenize and make the word vectors at once, and both write every entry
    (a temporary file renamed over the other's): neither fails, and they train alike; a
    third training then takes all three entries from the cache, and trains alike too."""
    train, test = data_files
    overrides = [f"data.train={train}", f"data.test={test}", "training.epochs=1",
                 "model.embedding_init=cooccurrence"]

    def start(name):
        return subprocess.Popen(
            [sys.executable, "-c", _TRAIN, str(TINY_CONFIG), *overrides,
             f"output.dir={tmp_path / name}"], cwd=tmp_path, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    processes = [start("a"), start("b")]
    outputs = [process.communicate(timeout=600) for process in processes]
    for process, (_, stderr) in zip(processes, outputs):
        assert process.returncode == 0, stderr
    results = [json.loads(stdout.splitlines()[-1]) for stdout, _ in outputs]
    assert results[0]["test"] == results[1]["test"]
    assert results[0]["validation"] == results[1]["validation"]
    assert [p.name.split("-")[0] for p in _entries(cache_dir)] == ["splits", "tokens",
                                                                    "vectors"]
    assert not [p for p in cache_dir.iterdir() if p.name.startswith(".")]  # no temporaries
    third = start("c")
    stdout, stderr = third.communicate(timeout=600)
    assert third.returncode == 0, stderr
    assert stdout.count("from the data cache") == 3, stdout
    assert json.loads(stdout.splitlines()[-1])["test"] == results[0]["test"]
    run_a, run_c = Path(results[0]["run"]), Path(json.loads(stdout.splitlines()[-1])["run"])
    for name in ("tokenizer.json", "data_summary.json", "labels.json"):
        assert (run_a / name).read_bytes() == (run_c / name).read_bytes(), name


def test_a_pipe_is_read_every_time_never_cached(cache_dir, data_files, tmp_path):
    import threading

    train, test = data_files
    pipe = tmp_path / "train.pipe"
    for _ in range(2):
        os.mkfifo(pipe)
        writer = threading.Thread(target=lambda: pipe.write_bytes(train.read_bytes()))
        writer.start()
        _, logs, warnings = _prepare(f"{pipe}", test, "data.format=tsv")
        writer.join()
        pipe.unlink()
        assert not any("from the data cache" in line for line in logs)
        assert warnings == []
    assert _entries(cache_dir) == []
