"""The lab's demo stage (`rebuild.py`): rebuilds the weights `simplegvr demo` runs, the one writer
of its assets."""

from .rebuild import (
    STUDENT_SAMPLING,
    STUDENT_STEPS,
    TRAIN_REPEATS,
    TUNE_GRID,
    WORK_MARKER,
    command_line,
    fresh_work_folder,
    install_assets,
    record_test_margins,
    retrain,
    retrain_commands,
    retune,
    run_stage,
    student_commands,
    student_entry,
    tune,
    write_train_list,
)

__all__ = [
    "STUDENT_SAMPLING",
    "STUDENT_STEPS",
    "TRAIN_REPEATS",
    "TUNE_GRID",
    "WORK_MARKER",
    "command_line",
    "fresh_work_folder",
    "install_assets",
    "record_test_margins",
    "retrain",
    "retrain_commands",
    "retune",
    "run_stage",
    "student_commands",
    "student_entry",
    "tune",
    "write_train_list",
]
