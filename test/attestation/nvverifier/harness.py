"""Drive NVIDIA's nv-local-gpu-verifier offline, one check at a time, and print its result per check.

The tool's entry point (verifier.cc_admin.attest) collects evidence through NVML and fetches RIMs and
OCSP answers from NVIDIA's services, so it cannot run here. This harness calls the same functions
that attest() calls, in the same order and with the same arguments, and records what each returns
or raises instead of stopping at the first failure (so every check can be compared on every case).
Nothing of NVIDIA's logic is reimplemented here; where a step is glue (which file is the root), the
comment says which line of attest() or of NVIDIA's constructors it mirrors.

Input (stdin): {"cases": [{"id", "report_hex", "chain_pem", "nonce_hex", "device_root_pem",
"rim_root_pem", "at" (RFC 3339), "driver_rim_xml"?, "vbios_rim_xml"?}]}.
Output (stdout): {"version": <nv-local-gpu-verifier version from its package metadata>, "results": [...]}, one entry per case.
"""

import contextlib
import json
import logging
import os
import re
import sys
import tempfile
from datetime import datetime
from importlib.metadata import version as _package_version

# verifier.config writes verifier.log into the working directory and logs to stdout at import:
# import it from a scratch directory and keep stdout for our JSON.
_SCRATCH = tempfile.mkdtemp(prefix="nvverifier-")
_cwd = os.getcwd()
os.chdir(_SCRATCH)
with contextlib.redirect_stdout(sys.stderr):
    from OpenSSL import crypto

    from verifier.attestation import AttestationReport
    from verifier.cc_admin_utils import CcAdminUtils
    from verifier.config import BaseSettings, HopperSettings, event_log, info_log
    from verifier.nvml.gpu_cert_chains import GpuCertificateChains
    from verifier.nvml.test_handle import TestHandle
    from verifier.rim import RIM
    from verifier.utils import format_vbios_version
    from verifier.verifier import Verifier
os.chdir(_cwd)

# The event log is a debug file (slow, and nothing we compare); the info log is captured because
# the only place NVIDIA's Verifier.verify() reports *which* indices mismatch is its info log.
for handler in list(event_log.handlers):
    event_log.removeHandler(handler)
event_log.addHandler(logging.NullHandler())
event_log.propagate = False


class _Capture(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


_capture = _Capture()
for handler in list(info_log.handlers):
    info_log.removeHandler(handler)
info_log.addHandler(_capture)
info_log.propagate = False

# The clock. NVIDIA validates every certificate path with OpenSSL at the current time (its own
# chain checks through crypto.X509StoreContext, and signxml's RIM-signer check, which imports
# X509StoreContext from OpenSSL.crypto at call time). Pinning the store's verification time before
# each context is built evaluates exactly those checks "as of" the case's instant, which is what
# our verifier's --at does. Nothing else in the compared checks reads the clock.
_AT = {"time": None}
_RealContext = crypto.X509StoreContext


class _PinnedTimeContext(_RealContext):
    def __init__(self, store, certificate, chain=None):
        if _AT["time"] is not None:
            store.set_time(_AT["time"])
        super().__init__(store, certificate, chain)


crypto.X509StoreContext = _PinnedTimeContext

_MISMATCH_LINE = re.compile(r"^\s*(\d+) \[(Driver|Firmware)\]\s*$")


def _error(e):
    return f"{type(e).__name__}: {e}".strip()[:300]


def _write(directory, name, text):
    path = os.path.join(directory, name)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path


def _settings(directory, case):
    """A fresh HopperSettings whose root files are the case's trust anchors (NVIDIA's by default)."""
    settings = HopperSettings()
    # rim/__init__.py reads ROOT_CERT_DIR/RIM_ROOT_CERT; signxml gets RIM_ROOT_CERT as ca_pem_file and
    # ROOT_CERT_DIR as ca_path, so the directory holds only this case's roots.
    settings.ROOT_CERT_DIR = directory
    settings.RIM_ROOT_CERT = _write(directory, "rim_root.pem", case["rim_root_pem"])
    # GpuCertificateChains.__init__ reads the class attribute BaseSettings.DEVICE_ROOT_CERT.
    BaseSettings.DEVICE_ROOT_CERT = _write(directory, "device_root.pem", case["device_root_pem"])
    return settings


def _device_chain(chain_pem):
    # GpuCertificateChains drops the presented root and appends the pinned one, exactly as for a
    # GPU; TestHandle is NVIDIA's own way of feeding it a chain without NVML.
    return GpuCertificateChains(TestHandle(chain_pem.encode())).GpuAttestationCertificateChain


def _rim_checks(name, xml, version, settings, directory):
    """NVIDIA's RIM.verify() steps minus OCSP: schema, version, signer chain, XML signature."""
    out = {"present": True}
    try:
        path = _write(directory, f"{name}.xml", xml)
        rim = RIM(rim_name=name, settings=settings, rim_path=path)
    except Exception as e:
        return None, {"present": True, "parsed": False, "error": _error(e)}
    out["parsed"] = True
    out["version"] = rim.colloquialVersion
    try:
        out["schema"] = bool(rim.validate_schema())
    except Exception as e:
        out["schema"] = False
        out["schemaError"] = _error(e)
    # RIM.verify(): `version != self.colloquialVersion.lower()` marks the version as not matching.
    out["versionMatch"] = version is not None and version == rim.colloquialVersion
    try:
        chain = rim.extract_certificates()  # drops the RIM's own root, as verify() does
        with open(settings.RIM_ROOT_CERT, "r") as f:
            chain.append(crypto.load_certificate(crypto.FILETYPE_PEM, f.read()))
        mode = (
            BaseSettings.Certificate_Chain_Verification_Mode.DRIVER_RIM_CERT
            if name == "driver"
            else BaseSettings.Certificate_Chain_Verification_Mode.VBIOS_RIM_CERT
        )
        ok, expired, earliest = CcAdminUtils.verify_certificate_chain(chain, settings, mode)
        out["chain"] = bool(ok)
        out["chainExpired"] = bool(expired)
    except Exception as e:
        out["chain"] = False
        out["chainExpired"] = False
        out["chainError"] = _error(e)
    try:
        out["signature"] = bool(rim.verify_signature(settings))
    except Exception as e:
        out["signature"] = False
        out["signatureError"] = _error(e)
    return rim, out


def check(case):
    directory = tempfile.mkdtemp(dir=_SCRATCH)
    _AT["time"] = datetime.strptime(case["at"], "%Y-%m-%dT%H:%M:%SZ")
    settings = _settings(directory, case)
    result = {"id": case["id"]}

    # Parsing: cc_admin.attest() builds AttestationReport(bytes, settings).
    try:
        report = AttestationReport(bytes.fromhex(case["report_hex"]), settings)
        opaque = report.get_response_message().get_opaque_data()
        driver = opaque.get_data("OPAQUE_FIELD_ID_DRIVER_VERSION").decode()
        if driver.endswith("\0"):  # as verify_attestation_report() strips it
            driver = driver[:-1]
        vbios_raw = opaque.get_data("OPAQUE_FIELD_ID_VBIOS_VERSION")
        vbios = format_vbios_version(vbios_raw) if vbios_raw else ""
        measurements = report.get_measurements()
        result["parse"] = {
            "ok": True,
            "nonce": report.get_request_message().get_nonce().hex(),
            "driverVersion": driver,
            "vbiosVersion": vbios,
            "measurementCount": len(measurements),
            "fwid": opaque.get_data("OPAQUE_FIELD_ID_FWID").hex(),
        }
    except Exception as e:
        result["parse"] = {"ok": False, "error": _error(e)}
        return result

    # verify_attestation_report() compares request nonce and expected nonce byte for byte.
    result["nonce"] = report.get_request_message().get_nonce() == bytes.fromhex(case["nonce_hex"])

    try:
        chain = _device_chain(case["chain_pem"])
    except Exception as e:
        chain = None
        result["deviceChain"] = {"ok": False, "error": _error(e)}
    if chain is not None:
        _device_checks(report, chain, result, settings)
    _rim_and_measurement_checks(report, driver, vbios, case, settings, directory, result)
    return result


def _device_checks(report, chain, result, settings):
    # verify_gpu_certificate_chain() = FWID comparison (skipped when the report has none) followed
    # by verify_certificate_chain(); both halves are called separately so each can be compared.
    fwid = result["parse"]["fwid"]
    if fwid == "":
        result["fwid"] = True
    else:
        try:
            result["fwid"] = CcAdminUtils.extract_fwid(chain[0], settings) == fwid
        except Exception:
            result["fwid"] = False
    try:
        ok, expired, _ = CcAdminUtils.verify_certificate_chain(
            list(chain), settings, BaseSettings.Certificate_Chain_Verification_Mode.GPU_ATTESTATION
        )
        result["deviceChain"] = {"ok": bool(ok), "expired": bool(expired)}
    except Exception as e:
        result["deviceChain"] = {"ok": False, "error": _error(e)}
    # The report signature, with the leaf of the presented chain (attest() passes chain[0]).
    result["reportSignature"] = bool(
        report.verify_signature(chain[0].to_cryptography(), settings.signature_length, settings.HashFunction)
    )



def _rim_and_measurement_checks(report, driver, vbios, case, settings, directory, result):
    rims = {}
    # attest() passes the report's versions to RIM.verify() (as NVML would report them), lower-cased
    # for the VBIOS, so a RIM "matches" when its colloquialVersion equals the report's.
    versions = {"driver": driver, "vbios": vbios.lower()}
    for name in ("driver", "vbios"):
        xml = case.get(f"{name}_rim_xml")
        if xml is None:
            result[f"{name}Rim"] = {"present": False}
            continue
        rim, out = _rim_checks(name, xml, versions[name], settings, directory)
        result[f"{name}Rim"] = out
        if rim is not None:
            rims[name] = rim

    # Verifier needs both RIMs; without one NVIDIA would fetch it from the RIM service.
    if "driver" in rims and "vbios" in rims:
        _capture.lines.clear()
        try:
            verifier = Verifier(report, rims["driver"], rims["vbios"], settings)
            ok = verifier.verify(settings)
            mismatched = sorted(
                int(m.group(1)) for m in map(_MISMATCH_LINE.match, _capture.lines) if m is not None
            )
            result["measurements"] = {"ok": bool(ok), "mismatched": mismatched}
        except Exception as e:
            result["measurements"] = {"ok": False, "mismatched": [], "error": _error(e)}


def main():
    cases = json.load(sys.stdin)["cases"]
    results = []
    for case in cases:
        with contextlib.redirect_stdout(sys.stderr):
            try:
                results.append(check(case))
            except Exception as e:  # a harness bug, reported as such rather than as a verdict
                results.append({"id": case.get("id"), "harnessError": _error(e)})
    json.dump({"version": _package_version("nv-local-gpu-verifier"), "results": results}, sys.stdout)


if __name__ == "__main__":
    main()
