"""What a deployment puts on disk and into systemd: keys never where git commits them or others
read them, and a SuperNode unit that finds its executor and is restarted when it cannot run."""

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.deployment.deploy_keys import KeyProblem, check_private, make_device_key, refuse_committable

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "scripts" / "deployment" / "fednextword-supernode.service"


def _unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read_string(UNIT.read_text().replace("\\\n", " "))
    return parser


def test_private_keys_are_refused_inside_the_repository_unless_git_ignored(tmp_path):
    with pytest.raises(KeyProblem, match="inside the git repository"):
        make_device_key(ROOT / "my-keys", "kitchen-pi")
    assert not (ROOT / "my-keys").exists()
    refuse_committable(ROOT / "deploy" / "keys")  # git-ignored: allowed
    refuse_committable(tmp_path / "keys")  # outside any repository: allowed
    ignored = subprocess.run(["git", "-C", str(ROOT), "check-ignore", "-q", "deploy/certs/ca.key"])
    assert ignored.returncode == 0


def test_a_private_key_readable_by_others_is_refused_before_use(tmp_path):
    private, public = make_device_key(tmp_path, "kitchen-pi")
    assert check_private(private) == private  # written 0600
    private.chmod(0o644)
    with pytest.raises(KeyProblem, match=f"chmod 600 {private}"):
        check_private(private)
    with pytest.raises(KeyProblem, match="No such file"):
        check_private(tmp_path / "missing")
    out = subprocess.run([sys.executable, "scripts/deployment/deploy.py", "supernode", "--superlink", "127.0.0.1:1", "--ca",
                          str(public), "--key", str(private), "--data", str(tmp_path)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "readable by others" in out.stderr + out.stdout


def test_the_supernode_unit_finds_the_executor_and_checks_before_starting():
    service = _unit()["Service"]
    start = service["ExecStart"].split()[0]
    venv_bin = str(Path(start).parent)
    path = next(v for v in UNIT.read_text().splitlines() if v.startswith("Environment=PATH="))
    assert path.split("=", 2)[2].split(":")[0] == venv_bin  # flower-superexec is found next to flower-supernode
    pre = [line for line in UNIT.read_text().splitlines() if line.startswith("ExecStartPre=")]
    assert any(f"test -x {venv_bin}/flower-superexec" in line for line in pre)
    assert any("device-key -perm /077" in line for line in pre)
    assert service["Restart"] == "always" and service["User"] == "fednextword"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed here")
def test_systemd_accepts_the_unit(tmp_path):
    venv = Path(sys.executable).parent.parent
    unit = tmp_path / "fednextword-supernode.service"
    unit.write_text(UNIT.read_text().replace("/opt/fednextword/venv", str(venv)))
    out = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_a_superlink_open_to_the_network_is_refused_unless_asked_for(tmp_path):
    out = subprocess.run([sys.executable, "scripts/deployment/deploy.py", "superlink", "--host", "0.0.0.0", "--insecure",
                          "--state", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "would open the Control API to the network" in out.stderr
    assert "--public HOST:PORT" in out.stderr


def test_the_readme_ray_cluster_recipe_uses_token_authentication():
    """Without a token anyone who reaches the head's port can run code on every node (review O9)."""
    section = (ROOT / "README.md").read_text().split("## A simulation on a Ray cluster", 1)[1].split("\n## ", 1)[0]
    recipe = section.split("```bash\n", 1)[1].split("```", 1)[0].splitlines()
    joining = [line for line in recipe if "ray start" in line or "--ray-address" in line]
    assert sum("ray start" in line for line in joining) >= 2, recipe
    for line in joining:
        assert "RAY_AUTH_MODE=token " in line and "RAY_AUTH_TOKEN=" in line, line
