"""Which files the package holds (the rest of the metadata is in pyproject.toml).

The configs stay in the top-level conf/ (one source); the wheel ships them inside the package, as
rnnbench/conf, so an installed rnnbench runs from any folder. A checkout (editable install) reads
conf/ itself: rnnbench.run.config.CONF_DIR takes whichever exists.

The tasks stay in the top-level tasks/ and are imported as `rnnbench.tasks` (the same mapping; an
editable install resolves it through setuptools' finder): no bare top-level name `tasks`, which a
user's own tasks.py in the folder they run from would shadow.
"""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["rnnbench", "rnnbench.*"]), "rnnbench.tasks", "rnnbench.conf"],
    package_dir={"rnnbench.tasks": "tasks", "rnnbench.conf": "conf"},
    package_data={"rnnbench.kernels": ["csrc/*.cpp", "csrc/*.h"], "rnnbench.conf": ["**/*.yaml"]},
)
