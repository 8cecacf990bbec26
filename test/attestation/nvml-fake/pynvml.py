"""A stand-in for pynvml (nvidia-ml-py) for test/attestation/nvml-collector.test.ts. NOT NVML.

There is no GPU on the machines these tests run on, so this module lets the real
attestation/agent/nvml_collector.py run its success path and its GPU-level failures. It has the
names, signatures, error type and ctypes structures (field names, order and buffer sizes) of
nvidia-ml-py 12.550.52 that the collector uses, written from that release's definitions; what the
"GPUs" answer comes from FAKE_NVML (JSON):

    {"gpus": 2, "report": "<path of a hex report>", "chain": "<path of a PEM chain>",
     "ccFeature": 1, "devToolsMode": 0, "multiGpuMode": 0, "initError": null, "failGpu": null,
     "chainTrailer": ""}

The report it returns is the file's, whatever nonce it is asked for (it is a recorded report).
"""

import json
import os
from ctypes import Structure, c_uint, c_uint8

NVML_ERROR_NO_PERMISSION = 4
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_FUNCTION_NOT_FOUND = 13
NVML_ERROR_GPU_IS_LOST = 15
NVML_ERROR_UNINITIALIZED = 1

NVML_GPU_CERT_CHAIN_SIZE = 0x1000
NVML_GPU_ATTESTATION_CERT_CHAIN_SIZE = 0x1400
NVML_CC_GPU_CEC_NONCE_SIZE = 0x20
NVML_CC_GPU_ATTESTATION_REPORT_SIZE = 0x2000
NVML_CC_GPU_CEC_ATTESTATION_REPORT_SIZE = 0x1000
nvmlSystemConfComputeSettings_v1 = 0x1000014

_NAMES = {
    NVML_ERROR_UNINITIALIZED: "Uninitialized",
    NVML_ERROR_NO_PERMISSION: "Insufficient Permissions",
    NVML_ERROR_DRIVER_NOT_LOADED: "Driver Not Loaded",
    NVML_ERROR_LIBRARY_NOT_FOUND: "NVML Shared Library Not Found",
    NVML_ERROR_FUNCTION_NOT_FOUND: "Function Not Found",
    NVML_ERROR_GPU_IS_LOST: "GPU is lost",
}


class NVMLError(Exception):
    def __init__(self, value):
        super().__init__(value)
        self.value = value

    def __str__(self):
        return _NAMES.get(self.value, f"NVML error {self.value}")


class c_nvmlConfComputeSystemState_t(Structure):
    _fields_ = [("environment", c_uint), ("ccFeature", c_uint), ("devToolsMode", c_uint)]


class c_nvmlSystemConfComputeSettings_v1_t(Structure):
    _fields_ = [
        ("version", c_uint),
        ("environment", c_uint),
        ("ccFeature", c_uint),
        ("devToolsMode", c_uint),
        ("multiGpuMode", c_uint),
    ]

    def __init__(self):
        super().__init__(version=nvmlSystemConfComputeSettings_v1)


class c_nvmlConfComputeGpuCertificate_t(Structure):
    _fields_ = [
        ("certChainSize", c_uint),
        ("attestationCertChainSize", c_uint),
        ("certChain", c_uint8 * NVML_GPU_CERT_CHAIN_SIZE),
        ("attestationCertChain", c_uint8 * NVML_GPU_ATTESTATION_CERT_CHAIN_SIZE),
    ]


class c_nvmlConfComputeGpuAttestationReport_t(Structure):
    _fields_ = [
        ("isCecAttestationReportPresent", c_uint),
        ("attestationReportSize", c_uint),
        ("cecAttestationReportSize", c_uint),
        ("nonce", c_uint8 * NVML_CC_GPU_CEC_NONCE_SIZE),
        ("attestationReport", c_uint8 * NVML_CC_GPU_ATTESTATION_REPORT_SIZE),
        ("cecAttestationReport", c_uint8 * NVML_CC_GPU_CEC_ATTESTATION_REPORT_SIZE),
    ]


_config = json.loads(os.environ.get("FAKE_NVML", "{}"))
_state = {"init": False}


def _check():
    if not _state["init"]:
        raise NVMLError(NVML_ERROR_UNINITIALIZED)


def nvmlInit():
    if _config.get("initError") is not None:
        raise NVMLError(_config["initError"])
    _state["init"] = True


def nvmlShutdown():
    _check()
    _state["init"] = False


def nvmlSystemGetDriverVersion():
    _check()
    return "550.90.07"


def nvmlSystemGetConfComputeState():
    _check()
    return c_nvmlConfComputeSystemState_t(2, _config.get("ccFeature", 1), _config.get("devToolsMode", 0))


def nvmlSystemGetConfComputeSettings(settings):
    # Like nvidia-ml-py: returns NVML's status instead of raising.
    _check()
    settings._obj.ccFeature = _config.get("ccFeature", 1)
    settings._obj.multiGpuMode = _config.get("multiGpuMode", 0)
    return 0


def nvmlSystemGetConfComputeGpusReadyState():
    _check()
    return 0


def nvmlDeviceGetCount():
    _check()
    return _config.get("gpus", 1)


def nvmlDeviceGetHandleByIndex(index):
    _check()
    if not 0 <= index < nvmlDeviceGetCount():
        raise NVMLError(2)
    return index


def nvmlDeviceGetUUID(handle):
    return f"GPU-{handle:08x}-0000-4000-8000-{handle:012x}"


def nvmlDeviceGetConfComputeGpuAttestationReport(handle, nonce):
    _check()
    if _config.get("failGpu") == handle:
        raise NVMLError(NVML_ERROR_GPU_IS_LOST)
    with open(_config["report"]) as f:
        report = bytes.fromhex(f.read().strip())
    out = c_nvmlConfComputeGpuAttestationReport_t()
    out.nonce = (c_uint8 * len(nonce))(*nonce)
    out.attestationReportSize = len(report)
    out.attestationReport[: len(report)] = list(report)
    return out


def nvmlDeviceGetConfComputeGpuCertificate(handle):
    _check()
    with open(_config["chain"], "rb") as f:
        chain = f.read() + _config.get("chainTrailer", "").encode("latin-1")
    out = c_nvmlConfComputeGpuCertificate_t()
    out.attestationCertChainSize = len(chain)
    out.attestationCertChain[: len(chain)] = list(chain)
    return out
