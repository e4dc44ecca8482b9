"""`auto` settings (auto.py): resolved from the training data, shown by --dry-run, recorded in the
run's config, and the same whether the data comes through --config or --set."""

from __future__ import annotations

import yaml
from conftest import run_cli_without_tensorflow, toy_examples, write_tsv

from bilstm_cli import auto
from bilstm_cli.config import builtin_config_dir, default_config, load_config

AUTO = ["data.max_tokens=auto", "data.max_length=auto", "training.epochs=auto"]


def _config(*overrides: str):
    return load_config(None, ["data.train=unused.tsv", *AUTO, *overrides])


def test_lengths_and_vocabulary_follow_the_training_texts():
    # Text i has i + 1 words: word w0 in every text, w1 from the second on, ... w99 once.
    texts = [" ".join(f"w{j}" for j in range(i + 1)) for i in range(100)]
    resolved, notes = auto.resolve(_config(), texts)
    assert resolved.data.max_length == 96  # p95 of 1..100 is 95.05: rounded up to 8s
    assert resolved.data.max_tokens == 99 + 2  # w0..w98 seen twice or more, plus the specials
    assert resolved.training.epochs == auto.MAX_EPOCHS  # 1 step per epoch: capped
    assert [n.split(" auto:")[0] for n in notes] == [
        "data.max_tokens", "data.max_length", "training.epochs"]


def test_wordpiece_resolves_from_a_bounded_vocabulary():
    # A WordPiece trainer asked for an unbounded vocabulary tried to allocate 70 GB: the words
    # are counted by the word trainer, the lengths measured in the pieces of the real vocabulary.
    texts = [f"unbelievable{i % 7} reading{i % 5} of things" for i in range(200)]
    words, _ = auto.resolve(_config(), texts)
    pieces, notes = auto.resolve(_config("data.tokenizer=wordpiece"), texts)
    assert pieces.data.max_tokens == words.data.max_tokens
    assert pieces.data.max_length >= words.data.max_length
    assert len(notes) == 3


def test_epochs_give_about_the_same_number_of_updates():
    def epochs(texts: int, *overrides: str) -> int:
        return auto.resolve(_config(*overrides), ["a b"] * texts)[0].training.epochs

    assert epochs(12_800) == -(-auto.UPDATES // 100)  # 100 steps of 128 per epoch
    assert epochs(12_800, "training.batch_size=64") == -(-auto.UPDATES // 200)
    assert epochs(200_000) == auto.MIN_EPOCHS
    assert epochs(1_000) == auto.MAX_EPOCHS


def test_a_key_that_names_a_value_keeps_it():
    config = _config("data.max_length=7", "data.max_tokens=50", "training.epochs=2")
    resolved, notes = auto.resolve(config, ["a b c"] * 10)
    assert resolved == config and notes == []


def _dry_run(tmp_path, *args: str) -> dict:
    result = run_cli_without_tensorflow("train", *args, "--dry-run", cwd=tmp_path)
    config_text = result.stdout.split("\ndata\n")[0]  # the YAML before the summary tables
    return yaml.safe_load(config_text), result.stdout


def test_a_config_file_and_set_give_the_same_resolved_config(tmp_path):
    # Your own files, as a config naming only data keys and as `--set` with no --config: both
    # start from the schema's defaults, so they resolve to the same config.
    train = write_tsv(tmp_path / "train.tsv", toy_examples(300, seed=3))
    (tmp_path / "mine.yaml").write_text(f"data:\n  train: {train}\n")
    through_file, _ = _dry_run(tmp_path, "--config", "mine.yaml", "--set",
                               "data.max_length=auto", "--set", "data.max_tokens=auto")
    through_set, shown = _dry_run(tmp_path, "--set", f"data.train={train}", "--set",
                                  "data.max_length=auto", "--set", "data.max_tokens=auto")
    assert through_file == through_set
    assert isinstance(through_set["data"]["max_length"], int)
    assert isinstance(through_set["data"]["max_tokens"], int)
    assert through_set["data"]["dataset"] is None  # data.train alone: your own files
    assert "data.max_length auto:" in " ".join(shown.split())


def test_without_a_config_a_built_in_data_set_starts_from_its_shipped_config():
    shipped = builtin_config_dir()
    assert default_config([]) == shipped / "imdb.yaml"
    assert default_config(["data.dataset=sst2"]) == shipped / "sst2.yaml"
    assert default_config(["data.train=mine.tsv", "model.units=8"]) == {}
    assert default_config(["data.dataset=null", "data.train=mine.tsv"]) == {}
    assert default_config(["data.train=mine.tsv", "data.dataset=imdb"]) == shipped / "imdb.yaml"
