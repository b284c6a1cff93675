"""Build hook: the shipped data folders travel inside the package.

``hardware/``, ``graphs/`` and ``validation/`` at the repository root stay the source of
truth; building the package (a wheel, or a regular ``pip install .``) copies their YAML files
to ``preserve_cp/_data/`` in the build, where ``preserve_cp._yaml.data_dir`` finds them from
any folder. An editable install reads the root folders directly.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

DATA = ("hardware", "graphs", "validation")


class BuildWithData(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        root = Path(__file__).resolve().parent
        for sub in DATA:
            dst = Path(self.build_lib) / "preserve_cp" / "_data" / sub
            dst.mkdir(parents=True, exist_ok=True)
            for f in sorted((root / sub).glob("*.yaml")):
                shutil.copy2(f, dst / f.name)


setup(cmdclass={"build_py": BuildWithData})
