"""Configs are schemas apart from what builds and trains: loading and validating one (every method
checked, teacher and student kinds, tuning, text records, token budgets) imports no torch, so a
bad config is refused in the time it takes to read it."""

import subprocess
import sys
import textwrap

import pytest
import yaml

CONFIGS = {
    "run.yaml": {
        "data": {"path": "data.csv", "label": "y"},
        "teacher": {"kind": "lightgbm", "params": {"n_estimators": 10}},
        "student": {"kind": "mlp", "hidden": [8]},
        "methods": {"baseline": {}, "enhanced": {"balancer": {"kind": "dwa"}, "curriculum": {"start_fraction": 0.5}}},
        "tune": {"grid": {"temperature": [1, 2]}},
    },
    "text.yaml": {
        "data": {"path": "data.csv", "label": "y", "text": ["a", "b"]},
        "teacher": {"kind": "llm", "outputs": "outputs.jsonl", "privileged": {"hidden": [8]}},
        "student": {"kind": "mlp"},
    },
    "lm.yaml": {
        "data": {"task": "cqa", "labelled_fraction": 0.5},
        "student": {"tiny": {"hidden": 16}},
        "methods": {"baseline": {}, "traditional": {"alpha": 0}, "enhanced": {"alpha": 0, "consistency": 0}},
        "training": {"lr": 0.001, "scheduler": "plateau", "max_prompt_tokens": 256},
    },
    "teach.yaml": {"data": {"path": "data.csv"}, "template": "nli", "backend": {"kind": "openai", "model": "m"}},
}


def test_loading_and_validating_a_config_imports_no_torch(tmp_path):
    for name, config in CONFIGS.items():
        (tmp_path / name).write_text(yaml.safe_dump(config))
    (tmp_path / "data.csv").write_text("a,b,y\nx,z,1\n")
    program = textwrap.dedent(
        """
        import sys
        from pathlib import Path

        from stepdistill.config import load_config
        from stepdistill.lm.config import load_lm_train_config
        from stepdistill.lm_teach.config import load_lm_teach_config

        load_config(Path("run.yaml")).check()
        load_config(Path("text.yaml")).check()
        config = load_lm_train_config(Path("lm.yaml"))
        assert config.training.max_prompt_tokens == 256 and config.method_spec("enhanced", config.candidates("enhanced", 100)[0]).needs_rationale
        load_lm_teach_config(Path("teach.yaml"))
        heavy = sorted(name for name in ("torch", "transformers", "sentence_transformers") if name in sys.modules)
        print(" ".join(heavy) or "none")
        """
    )
    result = subprocess.run([sys.executable, "-c", program], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "none"


def test_a_method_a_generative_student_cannot_train_is_refused_by_the_config_alone():
    """Validation itself refuses what the LM engine would: a consistency term (numeric inputs),
    a curriculum, GradNorm; the message names the fix."""
    from stepdistill.errors import StepDistillError
    from stepdistill.lm.config import LMTrainConfig

    for settings, fix in (
        ({"alpha": 0}, "consistency: 0"),
        ({"consistency": 0, "curriculum": {}}, "remove its curriculum"),
        ({"consistency": 0, "balancer": {"kind": "gradnorm"}}, "choose balancer kind"),
    ):
        config = LMTrainConfig.model_validate({"methods": {"baseline": {}, "enhanced": settings}})
        with pytest.raises(StepDistillError) as refused:
            config.check()
        assert fix in str(refused.value) and "\n" not in str(refused.value)
