"""Teachers: models whose outputs a student learns from, cached by sample id."""

from stepdistill.teachers.cache import InMemoryTeacherCache, TeacherCache, TeacherOutputs, cache_model_outputs

__all__ = ["InMemoryTeacherCache", "TeacherCache", "TeacherOutputs", "cache_model_outputs"]
