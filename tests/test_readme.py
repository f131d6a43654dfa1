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


def test_readme_method_options_example_is_valid():
    import yaml

    from stepdistill.config import ExperimentConfig
    from stepdistill.terms import method_of

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    blocks = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", readme, re.S)]
    [options] = [b for b in blocks if set(b) == {"methods"}]
    config = ExperimentConfig.model_validate(options)
    method = method_of(config.method_spec("enhanced", config.candidates("enhanced", n_train=1000)[0]))
    assert method.balancer is not None and method.curriculum is not None
    assert [t.weight.value(4) for t in method.terms if t.name == "rationale"] == [0.1]
