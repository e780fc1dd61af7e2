"""Packaging: a library declares compatible ranges; the exact pins live in requirements*.txt."""

import os
import re
import tomllib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _pyproject():
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)["project"]


def test_dependencies_are_ranges_not_pins():
    project = _pyproject()
    declared = project["dependencies"] + [d for group in project["optional-dependencies"].values() for d in group
                                          if not d.startswith("larq==")]  # the test reference: one exact release
    assert declared and not [d for d in declared if "==" in d]
    assert not re.search(r"<\s*3\.12", project["requires-python"])


def test_requirements_pin_every_runtime_dependency_within_the_ranges():
    from packaging.requirements import Requirement

    with open(os.path.join(REPO, "requirements.txt")) as f:
        pins = dict(line.strip().split("==") for line in f if "==" in line)
    pins = {k.lower().replace("_", "-"): v for k, v in pins.items()}
    for dependency in _pyproject()["dependencies"]:
        requirement = Requirement(dependency)
        name = requirement.name.lower().replace("_", "-")
        assert name in pins, f"requirements.txt does not pin {name}"
        assert requirement.specifier.contains(pins[name]), (dependency, pins[name])
