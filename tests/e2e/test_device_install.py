"""A device installed from requirements-device.txt alone runs the ClientApp (issue: it once lacked
dp-accounting, so `import client_app.app` failed on every device)."""

import subprocess
import sys
from pathlib import Path

from scripts.deployment.device_requirements import main as device_requirements
from scripts.deployment.device_requirements import uv_command

ROOT = Path(__file__).resolve().parents[2]


def test_the_device_requirements_are_the_locked_closure():
    assert device_requirements(["--check"]) == 0


def test_a_clean_venv_from_the_device_file_alone_trains_in_every_privacy_mode(tmp_path):
    venv = tmp_path / "device-venv"
    # The base interpreter, not this project's venv: nothing of it may leak into the device's.
    base = Path(getattr(sys, "_base_executable", sys.executable))
    subprocess.run([str(base), "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    # uv installs the same pinned file as pip --no-deps would, from its cache (no 600 MB download).
    install = subprocess.run([*uv_command(), "pip", "install", "--python", str(python), "--no-deps", "-r",
                              str(ROOT / "requirements-device.txt")], capture_output=True, text=True, timeout=1200)
    assert install.returncode == 0, install.stderr[-3000:]
    leak = subprocess.run([str(python), "-c", "import importlib.util as u; print(u.find_spec('ray'), "
                           "u.find_spec('datasets'), u.find_spec('pytest'))"], capture_output=True, text=True)
    assert leak.stdout.split() == ["None", "None", "None"], leak.stdout + leak.stderr  # only the device's packages
    check = subprocess.run([str(python), "scripts/deployment/check_device.py"], cwd=ROOT, capture_output=True, text=True,
                           timeout=1200, env={"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert check.returncode == 0, check.stdout[-3000:] + check.stderr[-3000:]
    for mode in ("no DP", "clipping on the device", "local DP", "DP-SGD"):
        assert f"{mode}    train: ok" in check.stdout and f"{mode} evaluate: ok" in check.stdout
