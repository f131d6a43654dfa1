import re
from pathlib import Path


def test_readme_python_example_runs(capsys):
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    code = re.search(r"## Python API\n\n```python\n(.*?)```", readme, re.S).group(1)
    exec(compile(code, "README.md", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in printed] == ["baseline", "traditional", "step_by_step", "enhanced"]


def test_readme_config_example_is_valid():
    import yaml

    from stepdistill.config import ExperimentConfig

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    example = re.search(r"```yaml\n(.*?)```", readme, re.S).group(1)
    config = ExperimentConfig.model_validate(yaml.safe_load(example))
    config.check()
    assert config.teacher.kind == "lightgbm" and config.tune.grid["temperature"] == [1, 2, 4]
