"""Copies the shipped model into the package when a wheel is built, so `pip install .` has it.

Every file in weights/ goes (the weights, their int8 graph, the model card with its pictures,
the weights' license); a checkout and an editable install read weights/ in place
(`tumorseg.shipped`).
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

REQUIRED = ("tumorseg-lgg-unet.safetensors", "tumorseg-lgg-unet.int8.onnx", "MODEL_CARD.md", "LICENSE.md")


class BuildWithWeights(build_py):
    def run(self) -> None:
        super().run()
        if self.editable_mode:  # the package is read from src/, and weights/ beside it
            return
        source = Path(__file__).resolve().parent / "weights"
        for name in REQUIRED:
            if not (source / name).is_file():
                raise SystemExit(f"{source / name}: the shipped model's file is missing; the wheel would lack it")
        target = Path(self.build_lib) / "tumorseg" / "weights"
        target.mkdir(parents=True, exist_ok=True)
        for path in sorted(source.iterdir()):
            if path.is_file():
                shutil.copyfile(path, target / path.name)


setup(cmdclass={"build_py": BuildWithWeights})
