"""Packaging for revssl: every field comes from settings.ini (nbdev 2 layout)."""
from configparser import ConfigParser
from pathlib import Path

import setuptools

cfg = ConfigParser(delimiters=["="])
cfg.read(Path(__file__).parent / "settings.ini", encoding="utf-8")
c = cfg["DEFAULT"]

licenses = {"apache2": ("Apache Software License 2.0", "OSI Approved :: Apache Software License")}
statuses = ["Planning", "Pre-Alpha", "Alpha", "Beta", "Production/Stable", "Mature", "Inactive"]
lic = licenses[c["license"]]
py_versions = ["3.10", "3.11", "3.12", "3.13"]
min_py = c["min_python"]

setuptools.setup(
    name=c["lib_name"],
    version=c["version"],
    description=c["description"],
    long_description=(Path(__file__).parent / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    url=c["git_url"],
    author=c["author"],
    author_email=c["author_email"],
    license=lic[0],
    keywords=c["keywords"],
    classifiers=[
        f"Development Status :: {c['status']} - {statuses[int(c['status'])]}",
        f"Intended Audience :: {c['audience']}",
        f"License :: {lic[1]}",
        f"Natural Language :: {c['language']}",
        *[f"Programming Language :: Python :: {v}" for v in py_versions[py_versions.index(min_py):]],
    ],
    packages=setuptools.find_packages(include=["revssl", "revssl.*"]),
    include_package_data=True,
    python_requires=f">={min_py}",
    install_requires=c.get("requirements", "").split(),
    extras_require={"dev": c.get("dev_requirements", "").split()},
    entry_points={
        "console_scripts": c.get("console_scripts", "").split(),
        "nbdev": [f"{c['lib_path']}={c['lib_path']}._modidx:d"],
    },
    zip_safe=False,
)
