"""Teachers: models whose outputs a student learns from, cached by sample id."""

from stepdistill.teachers.base import Samples, Teacher
from stepdistill.teachers.boosting import LightGBMTeacher, XGBoostTeacher, as_categorical_frame, train_lightgbm, train_xgboost
from stepdistill.teachers.cache import InMemoryTeacherCache, TeacherCache, TeacherOutputs, cache_model_outputs
from stepdistill.teachers.collect import cache_teacher, check_teacher_classes
from stepdistill.teachers.file import FileTeacher
from stepdistill.teachers.llm import LLMTeacher
from stepdistill.teachers.module import ModuleTeacher, load_module_weights
from stepdistill.teachers.scikit import SklearnTeacher
from stepdistill.teachers.store import TeacherStore, default_store_directory

__all__ = [
    "FileTeacher",
    "InMemoryTeacherCache",
    "LLMTeacher",
    "LightGBMTeacher",
    "ModuleTeacher",
    "Samples",
    "SklearnTeacher",
    "Teacher",
    "TeacherCache",
    "TeacherOutputs",
    "TeacherStore",
    "XGBoostTeacher",
    "as_categorical_frame",
    "cache_model_outputs",
    "cache_teacher",
    "check_teacher_classes",
    "default_store_directory",
    "load_module_weights",
    "train_lightgbm",
    "train_xgboost",
]
