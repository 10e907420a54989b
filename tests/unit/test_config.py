"""Configuration: CLI flags > environment variables > defaults; every flag documented."""

from __future__ import annotations

import dataclasses

import pytest

from llava_app.config import DEFAULT_MODEL, Config, build_parser, env_name, parse_config


def test_defaults():
    config = parse_config([], env={})
    assert config == Config()
    assert config.model == DEFAULT_MODEL == "llava-hf/llava-interleave-qwen-0.5b-hf"
    assert config.temperature == 0.0 and config.max_images == 6


def test_env_overrides_defaults_and_cli_overrides_env():
    env = {"LLAVA_APP_MODEL": "from-env", "LLAVA_APP_PORT": "9000", "LLAVA_APP_LOAD_IN_4BIT": "true",
           "LLAVA_APP_TEMPERATURE": "0.7"}
    config = parse_config([], env=env)
    assert (config.model, config.port, config.load_in_4bit, config.temperature) == ("from-env", 9000, True, 0.7)
    config = parse_config(["--model", "from-cli", "--port", "9001", "--no-load-in-4bit"], env=env)
    assert (config.model, config.port, config.load_in_4bit) == ("from-cli", 9001, False)


def test_every_field_has_a_flag_with_help_and_an_env_variable():
    help_text = build_parser().format_help()
    for f in dataclasses.fields(Config):
        assert "--" + f.name.replace("_", "-") in help_text
        assert env_name(f.name) in help_text


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Config().model = "x"  # type: ignore[misc]


@pytest.mark.parametrize("argv, message", [
    (["--max-images", "0"], "max-images"),
    (["--temperature", "3"], "temperature"),
    (["--load-in-4bit", "--load-in-8bit"], "one of"),
    (["--backend", "openai"], "base-url"),
])
def test_bad_settings_stop_with_one_clear_line(argv, message):
    with pytest.raises(SystemExit, match=message):
        parse_config(argv, env={})


def test_bad_env_value_is_a_clear_error():
    with pytest.raises(SystemExit, match="LLAVA_APP_PORT"):
        parse_config([], env={"LLAVA_APP_PORT": "eighty"})
