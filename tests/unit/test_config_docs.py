""".env.example and the README's configuration table say what the settings table (flowline/core/config.py) says."""

from flowline.core import config_docs

FIX = "it differs from the settings table in flowline/core/config.py: run `make docs`"


def test_env_example_is_generated_from_the_settings_table():
    assert config_docs.ENV_EXAMPLE.read_text(encoding="utf-8") == config_docs.render_env_example(), (
        f".env.example: {FIX}"
    )


def test_the_readme_configuration_table_is_generated_from_the_settings_table():
    readme = config_docs.README.read_text(encoding="utf-8")
    assert config_docs.readme_with_table(readme) == readme, f"README.md's configuration table: {FIX}"
