"""Which files the package holds (the rest of the metadata is in pyproject.toml).

The configs stay in the top-level conf/ (one source); the wheel ships them inside the package, as
rnnbench/conf, so an installed rnnbench runs from any folder. A checkout (editable install) reads
conf/ itself: rnnbench.app.CONF_DIR takes whichever exists.
"""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["rnnbench", "rnnbench.*", "tasks", "tasks.*"]), "rnnbench.conf"],
    package_dir={"rnnbench.conf": "conf"},
    package_data={"rnnbench": ["csrc/*.cpp", "csrc/*.h"], "rnnbench.conf": ["**/*.yaml"]},
)
