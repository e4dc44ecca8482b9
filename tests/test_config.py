from pathlib import Path

import pytest
import yaml

from bilstm_cli.config import Config, load_config, parse_override, resolve_config_path
from bilstm_cli.errors import UserError

CONFIGS = Path(__file__).parent.parent / "configs"


def test_defaults_are_the_documented_reference():
    reference = yaml.safe_load((CONFIGS / "reference.yaml").read_text())
    assert Config.model_validate(reference) == Config()


def test_shipped_configs_validate():
    assert load_config(CONFIGS / "imdb.yaml").data.dataset == "imdb"
    sst2 = load_config(resolve_config_path("sst2"))
    assert sst2.data.dataset == "sst2"
    assert resolve_config_path(None).name == "imdb.yaml"


def test_overrides_and_shortcuts_apply_in_order(tmp_path):
    config = load_config(
        CONFIGS / "imdb.yaml",
        ["model.units=32", "data.truncate=start", "training.clipnorm=null",
         "training.weight_decay=0.05"],
        {"model.bidirectional": True, "training.epochs": 2},
    )
    assert config.model.units == 32
    assert config.data.truncate == "start"
    assert config.training.clipnorm is None
    assert config.training.weight_decay == 0.05
    assert config.model.bidirectional is True
    assert config.training.epochs == 2


def test_all_problems_listed_with_key_path_line_and_suggestion(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(
        "data:\n  max_tokns: 100\n  max_length: -5\nmodel:\n  units: many\n  pooling: median\n"
    )
    with pytest.raises(UserError) as info:
        load_config(path)
    message = str(info.value)
    assert "4 problems" in message
    assert "data.max_tokns: unknown key (did you mean data.max_tokens?)" in message
    assert f"[{path}:2]" in message
    assert "data.max_length: expected auto or a whole number >= 1 (got -5)" in message
    assert f"[{path}:3]" in message
    assert "model.units" in message and "'many'" in message
    assert "model.pooling" in message and "'last', 'max', 'mean' or 'max_mean'" in message


def test_unknown_section_and_set_source():
    with pytest.raises(UserError) as info:
        load_config(None, ["modle.units=3"])
    assert "modle: unknown key (did you mean model?) [--set]" in str(info.value)


def test_yaml_syntax_error_names_the_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("data:\n  max_tokens: 100\n model: [\n")
    with pytest.raises(UserError) as info:
        load_config(path)
    assert f"{path}:3" in str(info.value)
    assert "YAML syntax error" in str(info.value)


def test_dataset_and_files_are_exclusive():
    # data.train alone means your own files; naming a data set beside them is an error.
    assert load_config(None, ["data.train=x.tsv"]).data.dataset is None
    with pytest.raises(UserError, match="data.dataset and data.train are both set"):
        load_config(None, ["data.train=x.tsv", "data.dataset=imdb"])
    with pytest.raises(UserError, match="give data.dataset"):
        load_config(None, ["data.dataset=null"])
    # a built-in data set has its own test split: a file given beside it would be ignored
    for key in ("validation", "test"):
        with pytest.raises(UserError, match=f"data.{key} is read only with your own data.train"):
            load_config(None, [f"data.{key}=x.tsv"])
    config = load_config(None, ["data.dataset=null", "data.train=a.tsv", "data.test=b.tsv"])
    assert config.data.test == "b.tsv"


def test_labels_are_distinct_and_not_empty():
    with pytest.raises(UserError, match="a label is listed twice"):
        load_config(None, ["data.labels=[a, a]"])
    with pytest.raises(UserError, match="a label is empty"):
        load_config(None, ['data.labels=[a, " "]'])


@pytest.mark.parametrize("item", ["nokey", "units=3", "model.=3"])
def test_malformed_overrides(item):
    with pytest.raises(UserError, match="--set"):
        parse_override(item)


def test_override_values_are_yaml():
    assert parse_override("data.labels=[a, b]") == (("data", "labels"), ["a", "b"])
    assert parse_override("data.text_column=2") == (("data", "text_column"), 2)


def test_missing_config_file():
    with pytest.raises(UserError, match="config file not found: nope.yaml"):
        resolve_config_path("nope.yaml")


def test_a_folder_named_like_a_shipped_config_is_not_taken_for_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sst2").mkdir()  # e.g. a data folder
    assert resolve_config_path("sst2").name == "sst2.yaml"
    (tmp_path / "mine").mkdir()
    with pytest.raises(UserError, match="--config mine is a folder: give a YAML config file"):
        resolve_config_path("mine")
