"""envs/*.yaml (conda, `--sdm conda`) install what pyproject.toml declares; the rules use them."""

import re
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
ENV_FILES = sorted((ROOT / "envs").glob("*.yaml"))
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def groups() -> dict[str, list[str]]:
    return {"dependencies": PYPROJECT["dependencies"], **PYPROJECT.get("optional-dependencies", {})}


def as_map(requirements) -> dict[str, SpecifierSet]:
    out = {}
    for line in requirements:
        req = Requirement(line)
        name = canonicalize_name(req.name)
        assert name not in out, f"{name} listed twice"
        out[name] = req.specifier
    return out


def declared_groups(env_file: Path) -> list[str]:
    m = re.search(r"^# pyproject: (.+)$", env_file.read_text(), re.M)
    assert m, f"{env_file.name}: needs a '# pyproject: <group> + <group>' line naming what it mirrors"
    return [g.strip() for g in m.group(1).split("+")]


def pip_section(env: dict) -> list[str]:
    for dep in env["dependencies"]:
        if isinstance(dep, dict) and "pip" in dep:
            return dep["pip"]
    return []


def no_deps_installs(script: Path) -> dict[str, SpecifierSet]:
    """Requirements a shell script installs with `pip install --no-deps` (editable installs aside)."""
    found = []
    for line in script.read_text().splitlines():
        if re.search(r"\bpip install\b.*--no-deps", line) and not line.lstrip().startswith("#"):
            found += [w for w in line.split() if re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]*[=<>~!]=", w)]
    return as_map(found)


def test_there_is_an_env_and_rules_use_only_existing_ones():
    assert ENV_FILES, "no envs/*.yaml"
    used = set()
    for smk in (ROOT / "rules").glob("*.smk"):
        for path in re.findall(r"conda:\s*\n\s*\"([^\"]+)\"", smk.read_text()):
            env = (smk.parent / path).resolve()
            assert env.exists(), f"{smk.name}: conda env {path} does not exist"
            used.add(env)
    assert set(ENV_FILES) <= used, f"unused env files: {set(ENV_FILES) - used}"


@pytest.mark.parametrize("env_file", ENV_FILES, ids=lambda p: p.name)
def test_env_pip_section_equals_pyproject(env_file):
    env = yaml.safe_load(env_file.read_text())
    wanted = {}
    for g in declared_groups(env_file):
        assert g in groups(), f"{env_file.name}: pyproject.toml has no group {g!r}"
        wanted.update(as_map(groups()[g]))
    pip = pip_section(env)
    options = [r for r in pip if r.startswith("-") or " -" in r]
    # a pip section becomes a requirements file in .snakemake/conda/: per-requirement --no-deps is
    # invalid there, and relative paths (-e ..) point into .snakemake/, not at this repository
    assert not options, f"{env_file.name}: pip options in the pip section: {options}"
    have = as_map(pip)
    missing = sorted(set(wanted) - set(have))
    extra = sorted(set(have) - set(wanted))
    differ = sorted(n for n in set(wanted) & set(have) if wanted[n] != have[n])
    assert not (missing or extra or differ), (
        f"{env_file.name} vs pyproject.toml: missing {missing}, extra {extra}, "
        f"different versions {[(n, str(have[n]), str(wanted[n])) for n in differ]}"
    )


@pytest.mark.parametrize("env_file", ENV_FILES, ids=lambda p: p.name)
def test_env_python_and_channels(env_file):
    env = yaml.safe_load(env_file.read_text())
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    assert "pip" in conda
    python = [d for d in conda if d.startswith("python")]
    assert len(python) == 1, conda
    version = python[0].split("=", 1)[1]
    assert SpecifierSet(PYPROJECT["requires-python"]).contains(version + ".0"), (version, PYPROJECT["requires-python"])
    assert "defaults" not in env["channels"]


def test_no_deps_packages_match_setup():
    """The --no-deps installs of the conda post-deploy scripts and of setup.sh (the venv) agree."""
    setup = no_deps_installs(ROOT / "setup.sh")
    conda = {}
    for script in (ROOT / "envs").glob("*.post-deploy.sh"):
        assert (ROOT / "envs" / script.name.replace(".post-deploy.sh", ".yaml")).exists(), script.name
        conda.update(no_deps_installs(script))
    assert setup, "setup.sh installs nothing with --no-deps (the embedded model)?"
    assert conda == setup, f"post-deploy {conda} vs setup.sh {setup}"
    for name, spec in conda.items():
        assert str(spec).startswith("=="), f"{name}: a --no-deps install must be pinned"


def test_requirements_txt_pins_satisfy_pyproject():
    """requirements.txt (the tested versions setup.sh installs) satisfies every pyproject requirement."""
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            pins[canonicalize_name(req.name)] = req.specifier
    for group, reqs in groups().items():
        for name, spec in as_map(reqs).items():
            assert name in pins, f"{name} (pyproject {group}) is not in requirements.txt"
            exact = [s.version for s in pins[name] if s.operator == "=="]
            if exact and spec:
                assert spec.contains(exact[0], prereleases=True), f"{name}: requirements.txt =={exact[0]} violates {spec}"
