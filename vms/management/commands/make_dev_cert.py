"""Create a self-signed TLS certificate for serving the portal on this machine (the Azure CLI needs https)."""

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from django.conf import settings
from django.core.management.base import BaseCommand


def write_self_signed(cert_path: Path, key_path: Path, hosts: list[str], days: int = 397) -> None:
    """A certificate for `hosts` (names and IP addresses in subjectAltName), valid from now."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Hotpatch Portal (local)")])
    alt_names = []
    for host in hosts:
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            alt_names.append(x509.DNSName(host))
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        # A CA:TRUE self-signed leaf passes strict X.509 verification as its own trust anchor.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_path.chmod(0o600)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


class Command(BaseCommand):
    help = "Create a self-signed certificate (var/tls/) for https on this machine, and say how to trust it."

    def add_arguments(self, parser):
        parser.add_argument("--dir", default=str(settings.VAR_DIR / "tls"), help="Where to write cert.pem and key.pem.")
        parser.add_argument(
            "--host",
            action="append",
            dest="hosts",
            help="A host name or IP address (repeatable). Default: 127.0.0.1, ::1 and localhost.",
        )
        parser.add_argument("--force", action="store_true", help="Replace an existing certificate.")

    def handle(self, *args, dir: str, hosts: list[str] | None, force: bool, **options):
        folder = Path(dir)
        cert, key = folder / "cert.pem", folder / "key.pem"
        if cert.exists() and key.exists() and not force:
            self.stdout.write(f"Using the existing certificate {cert} (--force makes a new one).")
        else:
            write_self_signed(cert, key, hosts or ["127.0.0.1", "::1", "localhost"])
            self.stdout.write(self.style.SUCCESS(f"Wrote {cert} and {key}."))
        self.stdout.write(
            "Serve over https:  gunicorn portal.wsgi:application --bind 127.0.0.1:8443 "
            f"--certfile {cert} --keyfile {key}\n"
            f"Trust it (Azure CLI, Azure SDK, requests):  export REQUESTS_CA_BUNDLE={cert.resolve()}"
        )
