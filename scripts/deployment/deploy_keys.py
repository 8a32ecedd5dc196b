"""Certificates and keys for a deployment: a CA and the SuperLink's TLS certificate, and one
authentication key pair per device. Private keys are written 0600 before any byte of them, never
where git could commit them, and are checked (0600, owned by whoever uses them) before use."""

from __future__ import annotations

import datetime
import ipaddress
import os
import stat
import subprocess
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

DEPLOY_HOME = Path(os.environ.get("FEDNEXTWORD_DEPLOY") or Path.home() / "fednextword-deploy")


class KeyProblem(SystemExit):
    """A private key in a place or with permissions that would give it away."""


def refuse_committable(out: Path) -> None:
    """Private keys never go inside a git work tree unless git ignores them there."""
    out = out.resolve()
    top = next((p for p in (out, *out.parents) if (p / ".git").exists()), None)
    if top is None:
        return
    probe = out / "private.key"
    ignored = subprocess.run(["git", "-C", str(top), "check-ignore", "-q", str(probe)], capture_output=True).returncode == 0
    if not ignored:
        raise KeyProblem(f"{out} is inside the git repository {top} and not git-ignored: its private keys "
                         f"could be committed. Use a folder outside it (default {DEPLOY_HOME}) or git-ignore it.")


def check_private(path: Path) -> Path:
    """A private key must be a file only its owner, the user about to use it, can read."""
    try:
        info = path.stat()
    except OSError as e:
        raise KeyProblem(f"private key {path}: {e.strerror or e}") from e
    if info.st_mode & 0o077:
        raise KeyProblem(f"private key {path} is readable by others (mode {stat.filemode(info.st_mode)}); "
                         f"chmod 600 {path}")
    if info.st_uid != os.getuid():
        raise KeyProblem(f"private key {path} belongs to uid {info.st_uid}, not to the user using it "
                         f"(uid {os.getuid()}); chown it to that user")
    return path


def make_certs(out: Path, addresses: list[str], days: int = 365) -> dict[str, Path]:
    """A private CA and a SuperLink certificate whose names cover `addresses` (IPs or DNS names)."""
    refuse_committable(out)
    out.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fednextword CA")])
    ca_cert = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
               .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .sign(ca_key, hashes.SHA256()))
    names = []
    for a in addresses:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(a)))
        except ValueError:
            names.append(x509.DNSName(a))
    server_key = ec.generate_private_key(ec.SECP384R1())
    server_cert = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, addresses[0])]))
                   .issuer_name(ca_name).public_key(server_key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=days))
                   .add_extension(x509.SubjectAlternativeName(names), critical=False)
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .sign(ca_key, hashes.SHA256()))
    paths = {"ca": out / "ca.crt", "cert": out / "server.pem", "key": out / "server.key"}
    paths["ca"].write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    paths["cert"].write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    _write_private(paths["key"], server_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                          serialization.NoEncryption()))
    _write_private(out / "ca.key", ca_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                        serialization.NoEncryption()))
    return paths


def make_device_key(out: Path, name: str) -> tuple[Path, Path]:
    """A device's SuperNode authentication key pair (EC P-384, OpenSSH format)."""
    refuse_committable(out)
    out.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP384R1())
    private, public = out / name, out / f"{name}.pub"
    _write_private(private, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                              serialization.NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                     serialization.PublicFormat.OpenSSH) + f" {name}\n".encode())
    return private, public


def _write_private(path: Path, data: bytes) -> None:
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_bytes(data)
