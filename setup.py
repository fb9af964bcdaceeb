"""Copies the shipped model into the package when a wheel is built, so `pip install .` has it.

A source checkout (and an editable install) reads `weights/` in place; see `tumorseg.infer`.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

# the weights, their int8 graph, and the model card with its pictures and the weights' license
SHIPPED = ("tumorseg-lgg-unet.safetensors", "tumorseg-lgg-unet.int8.onnx", "MODEL_CARD.md", "curves.png",
           "failure_modes.png", "LICENSE.md")  # fmt: skip


class BuildWithWeights(build_py):
    def run(self) -> None:
        super().run()
        source = Path(__file__).resolve().parent / "weights"
        target = Path(self.build_lib) / "tumorseg" / "weights"
        target.mkdir(parents=True, exist_ok=True)
        for name in SHIPPED:
            if not (source / name).is_file():
                raise SystemExit(f"{source / name}: the shipped model's file is missing; the wheel would lack it")
            shutil.copyfile(source / name, target / name)


setup(cmdclass={"build_py": BuildWithWeights})
