#!/usr/bin/env python3
"""Collect every local GPU's confidential-computing evidence for one nonce, through NVML.

    python3 nvml_collector.py <nonce: 64 lower-case hex digits>

Prints exactly one JSON document on stdout and nothing else (attestation/agent/nvml-collector.ts
reads it and refuses any other shape):

    exit 0  {"apiVersion": API_VERSION, "nonce": hex, "driverVersion": str,
             "confidentialCompute": {"environment", "ccFeature", "devToolsMode": int,
                                     "multiGpuMode", "gpusReadyState": int or null},
             "gpus": [{"index": int, "uuid": str, "attestationReport": hex,
                       "certificateChain": PEM text}]}
    exit 3  {"apiVersion": API_VERSION, "error": {"code": str, "message": str, "gpu": int?}}
    exit 2  usage error (no JSON)

It only reads: it never sets the GPUs' ready state, which is the verifier's decision, not the
collector's. Standard library and pynvml (the nvidia-ml-py package) only, so the agent image needs
nothing else. It is all or nothing: a GPU that does not answer fails the whole collection, because
evidence for some GPUs of a node would only make the member refuse the node as incomplete.
"""

import json
import re
import sys

API_VERSION = "sovereign.ai/nvml-collector/v1"
NONCE_HEX = re.compile(r"[0-9a-f]{64}")
PEM_BEGIN = "-----BEGIN CERTIFICATE-----"
# NVML_CC_SYSTEM_MULTIGPU_PROTECTED_PCIE: with it, NVIDIA's verifier accepts a node whose
# ccFeature is 0 (the GPUs are attested together with the NVSwitches).
MULTIGPU_PROTECTED_PCIE = 1


def emit(doc, status):
    sys.stdout.write(json.dumps(doc, separators=(",", ":")))
    sys.stdout.write("\n")
    sys.stdout.flush()
    sys.exit(status)


def fail(code, message, gpu=None):
    error = {"code": code, "message": message}
    if gpu is not None:
        error["gpu"] = gpu
    emit({"apiVersion": API_VERSION, "error": error}, 3)


def text(value):
    # pynvml returns str on Python 3 (convertStrBytes), bytes on older releases.
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def init_failure(pynvml, err):
    """Why nvmlInit failed, as (code, what to check)."""
    value = getattr(err, "value", None)
    if value == getattr(pynvml, "NVML_ERROR_LIBRARY_NOT_FOUND", 12):
        return (
            "NvmlLibraryNotFound",
            "NVML's shared library libnvidia-ml.so.1 is not found; run the agent with the NVIDIA "
            "container runtime (runtimeClassName, NVIDIA_DRIVER_CAPABILITIES=utility) or mount the "
            "host driver's libnvidia-ml.so.1 and /dev/nvidia* into the pod",
        )
    if value == getattr(pynvml, "NVML_ERROR_DRIVER_NOT_LOADED", 9):
        return ("NvmlDriverNotLoaded", "the NVIDIA kernel driver is not loaded on this node")
    if value == getattr(pynvml, "NVML_ERROR_NO_PERMISSION", 4):
        return (
            "NvmlNoPermission",
            "NVML refused this user; the agent needs access to /dev/nvidiactl and /dev/nvidia*",
        )
    if value == getattr(pynvml, "NVML_ERROR_LIB_RM_VERSION_MISMATCH", 18):
        return (
            "NvmlDriverMismatch",
            "libnvidia-ml.so.1 in the pod is not the loaded kernel driver's version; mount the host's",
        )
    return ("NvmlInitFailed", "check the NVIDIA driver on this node (nvidia-smi)")


def confidential_compute(pynvml):
    state = pynvml.nvmlSystemGetConfComputeState()
    # Settings carry the multi-GPU (protected PCIe) mode; older drivers lack the call, and
    # pynvml returns its status instead of raising, so both ways mean "unknown".
    multi = None
    settings_type = getattr(pynvml, "c_nvmlSystemConfComputeSettings_v1_t", None)
    if settings_type is not None:
        try:
            import ctypes

            settings = settings_type()  # its constructor sets the v1 version word
            if pynvml.nvmlSystemGetConfComputeSettings(ctypes.byref(settings)) == 0:
                multi = int(settings.multiGpuMode)
        except pynvml.NVMLError:
            multi = None
    try:
        ready = int(pynvml.nvmlSystemGetConfComputeGpusReadyState())
    except pynvml.NVMLError:
        ready = None
    return {
        "environment": int(state.environment),
        "ccFeature": int(state.ccFeature),
        "devToolsMode": int(state.devToolsMode),
        "multiGpuMode": multi,
        "gpusReadyState": ready,
    }


def collect_gpu(pynvml, index, nonce):
    handle = pynvml.nvmlDeviceGetHandleByIndex(index)
    uuid = text(pynvml.nvmlDeviceGetUUID(handle))
    report = pynvml.nvmlDeviceGetConfComputeGpuAttestationReport(handle, nonce)
    size = int(report.attestationReportSize)
    if not 0 < size <= len(report.attestationReport):
        fail("GpuUnanswered", f"GPU {index} returned an attestation report of {size} bytes", index)
    certs = pynvml.nvmlDeviceGetConfComputeGpuCertificate(handle)
    # attestationCertChain is the chain that signs the report (PEM text, leaf first, as NVIDIA's
    # verifier reads it); certChain is the GPU's identity chain without the attestation key.
    chain_size = int(certs.attestationCertChainSize)
    if not 0 < chain_size <= len(certs.attestationCertChain):
        fail("GpuUnanswered", f"GPU {index} returned a certificate chain of {chain_size} bytes", index)
    raw_chain = bytes(certs.attestationCertChain)[:chain_size].rstrip(b"\0")
    try:
        chain = raw_chain.decode("ascii")
    except UnicodeDecodeError:
        chain = ""
    if PEM_BEGIN not in chain:
        fail(
            "CertChainNotPem",
            f"GPU {index}'s attestation certificate chain is not PEM text; this driver's NVML "
            "answers in a format the agent does not read",
            index,
        )
    return {
        "index": index,
        "uuid": uuid,
        "attestationReport": bytes(report.attestationReport)[:size].hex(),
        "certificateChain": chain,
    }


def main(argv):
    if len(argv) != 2 or not NONCE_HEX.fullmatch(argv[1]):
        sys.stderr.write("usage: nvml_collector.py <nonce: 64 lower-case hex digits>\n")
        return 2
    nonce = bytes.fromhex(argv[1])
    try:
        import pynvml
    except ImportError as err:
        fail(
            "PynvmlMissing",
            f"cannot import pynvml ({err}); install nvidia-ml-py (attestation/agent/"
            "requirements-nvml.txt) for the agent's python3",
        )
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as err:
        code, check = init_failure(pynvml, err)
        fail(code, f"nvmlInit failed: {err}; {check}")
    try:
        driver = text(pynvml.nvmlSystemGetDriverVersion())
        try:
            cc = confidential_compute(pynvml)
        except pynvml.NVMLError as err:
            fail(
                "NvmlNoConfCompute",
                f"NVML cannot report the confidential-computing state ({err}); the driver "
                f"{driver} or this GPU has no confidential computing",
            )
        if cc["ccFeature"] == 0 and cc["multiGpuMode"] != MULTIGPU_PROTECTED_PCIE:
            fail(
                "CcOff",
                "confidential computing is off on this node (nvmlSystemGetConfComputeState "
                "ccFeature 0, no protected-PCIe mode); turn CC mode on for the GPUs",
            )
        count = pynvml.nvmlDeviceGetCount()
        if count == 0:
            fail("NoGpu", "NVML sees no GPU on this node; check nvidia-smi and the pod's devices")
        gpus = []
        for index in range(count):
            try:
                gpus.append(collect_gpu(pynvml, index, nonce))
            except pynvml.NVMLError as err:
                fail("GpuUnanswered", f"GPU {index} did not give its evidence: {err}", index)
        emit(
            {
                "apiVersion": API_VERSION,
                "nonce": nonce.hex(),
                "driverVersion": driver,
                "confidentialCompute": cc,
                "gpus": gpus,
            },
            0,
        )
    except pynvml.NVMLError as err:
        fail("NvmlFailed", f"an NVML call failed: {err}")
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
