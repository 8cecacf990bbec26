"""The learner pod's configuration, read from the environment the member operator gives it.

Variables set by the member operator today (operator/member/work-controller.ts):
``SOVEREIGN_RUN``, ``SOVEREIGN_RUN_NAMESPACE``, ``SOVEREIGN_REGION``, ``SOVEREIGN_ROUND``,
``SOVEREIGN_ROUNDS``, ``SOVEREIGN_LEARNER_INDEX``, ``SOVEREIGN_LEARNERS``,
``SOVEREIGN_NATS_SUBJECT_PREFIX``, ``SOVEREIGN_JETSTREAM_DOMAIN``, ``SOVEREIGN_DELTA_DTYPE``.
Read in addition (docs/sdk.md): ``SOVEREIGN_NATS_URL``, ``SOVEREIGN_NATS_USER`` +
``SOVEREIGN_NATS_PASSWORD`` or ``SOVEREIGN_NATS_CREDS``, ``SOVEREIGN_LEARNER_NAME``,
``SOVEREIGN_LEARNER_KEY``, ``SOVEREIGN_WORK_DIR``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from .encodings import DEFAULT_INT4_BLOCK, DEFAULT_INT8_BLOCK, parse_encoding
from .errors import SovereignConfigError, SovereignError

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
JETSTREAM_DOMAIN = re.compile(r"^[A-Za-z0-9_-]{1,63}$")

#: The run's ``deltaEncoding.dtype`` (FederatedRun CRD) → the wire encoding (deltas/encodings.ts).
#: ``int8`` and ``int4`` are block-scaled with their default blocks (``DEFAULT_INT8_BLOCK`` and
#: ``DEFAULT_INT4_BLOCK`` there too).
DTYPE_ENCODINGS = {
    "fp32": "fp32",
    "bf16": "bf16",
    "fp16": "fp16",
    "int8": DEFAULT_INT8_BLOCK,
    "int4": DEFAULT_INT4_BLOCK,
}
#: The CRD's default.
DEFAULT_DTYPE = "bf16"

REQUIRED = (
    "SOVEREIGN_RUN",
    "SOVEREIGN_RUN_NAMESPACE",
    "SOVEREIGN_REGION",
    "SOVEREIGN_ROUND",
    "SOVEREIGN_ROUNDS",
    "SOVEREIGN_NATS_URL",
    "SOVEREIGN_LEARNER_NAME",
    "SOVEREIGN_LEARNER_KEY",
)


@dataclass(frozen=True)
class LearnerConfig:
    run: str
    namespace: str
    region: str
    round: int
    """The round the pod was started for: 0 before the run's first round, else 1 … rounds."""
    rounds: int
    """Total rounds of the run. Round n trains on global model ``round-(n-1)`` (``round-0`` is the
    initial model) and its aggregate is published as ``round-n``."""
    learner: str
    """The learner's name (its pod name): the last part of its delta's object name."""
    key_path: str
    """PEM file of the learner's Ed25519 private key (PKCS#8)."""
    nats_servers: tuple[str, ...]
    encoding: str
    """Wire encoding of the deltas, e.g. ``bf16`` or ``int8-block128``."""
    learner_index: int = 0
    learners: int = 1
    subject_prefix: str = ""
    jetstream_domain: str | None = None
    """The region's JetStream domain; ``None`` uses the connected server's own."""
    nats_user: str | None = None
    nats_password: str | None = None
    nats_creds: str | None = None
    work_dir: str | None = None
    """Where the model and delta files go; a temporary directory when unset."""

    @property
    def refusal_subject(self) -> str:
        """Where the hub publishes refusals of this run's deltas in this region."""
        return f"sovereign.{self.region}.refusals.{self.namespace}.{self.run}"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> LearnerConfig:
        """Reads and checks every variable; reports all missing ones at once (``ConfigMissing``)."""
        env = os.environ if env is None else env

        def get(name: str) -> str | None:
            value = env.get(name)
            return value.strip() if value is not None and value.strip() != "" else None

        missing = [name for name in REQUIRED if get(name) is None]
        if missing:
            raise SovereignConfigError(
                "ConfigMissing",
                f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set; the member operator sets "
                "the run's variables on learner pods, the NATS, learner name and key variables come from the "
                "pod spec (see docs/sdk.md, 'Environment')",
            )

        def req(name: str) -> str:
            value = get(name)
            assert value is not None
            return value

        def name_like(name: str, pattern: re.Pattern[str], what: str, max_len: int) -> str:
            value = req(name)
            if len(value) > max_len or not pattern.match(value):
                raise invalid(name, value, what)
            return value

        def integer(name: str, minimum: int, default: int | None = None) -> int:
            raw = get(name)
            if raw is None:
                if default is None:
                    raise SovereignConfigError("ConfigMissing", f"{name} is not set")
                return default
            if not re.fullmatch(r"[0-9]{1,15}", raw) or int(raw) < minimum:
                raise invalid(name, raw, f"an integer ≥ {minimum}")
            return int(raw)

        run = name_like("SOVEREIGN_RUN", DNS_LABEL, "a DNS-1123 label (the manifest's run)", 63)
        namespace = name_like("SOVEREIGN_RUN_NAMESPACE", DNS_LABEL, "a DNS-1123 label", 63)
        region = name_like("SOVEREIGN_REGION", DNS_LABEL, "a DNS-1123 label", 63)
        learner = name_like("SOVEREIGN_LEARNER_NAME", DNS_SUBDOMAIN, "a DNS-1123 subdomain (the pod name)", 253)
        rounds = integer("SOVEREIGN_ROUNDS", 1)
        round_ = integer("SOVEREIGN_ROUND", 0)
        if round_ > rounds:
            raise invalid("SOVEREIGN_ROUND", str(round_), f"at most SOVEREIGN_ROUNDS ({rounds})")
        learners = integer("SOVEREIGN_LEARNERS", 1, default=1)
        learner_index = integer("SOVEREIGN_LEARNER_INDEX", 0, default=0)

        dtype = get("SOVEREIGN_DELTA_DTYPE") or DEFAULT_DTYPE
        encoding = DTYPE_ENCODINGS.get(dtype, dtype)
        try:
            parse_encoding(encoding)
        except SovereignError:
            raise invalid(
                "SOVEREIGN_DELTA_DTYPE", dtype, "fp32, bf16, fp16, int8 or int4 (or an encoding such as int8-row)"
            ) from None

        prefix = get("SOVEREIGN_NATS_SUBJECT_PREFIX") or f"sovereign.{region}.{namespace}.{run}"
        if not prefix.startswith(f"sovereign.{region}."):
            raise invalid("SOVEREIGN_NATS_SUBJECT_PREFIX", prefix, f"a subject under sovereign.{region}.")

        domain = get("SOVEREIGN_JETSTREAM_DOMAIN")
        if domain is not None and not JETSTREAM_DOMAIN.match(domain):
            raise invalid("SOVEREIGN_JETSTREAM_DOMAIN", domain, "a JetStream domain name")

        servers = tuple(s.strip() for s in req("SOVEREIGN_NATS_URL").split(",") if s.strip())
        for server in servers:
            if not re.match(r"^(nats|tls|wss?)://", server):
                raise invalid("SOVEREIGN_NATS_URL", server, "nats://host:port (comma-separated for several)")

        user, password, creds = get("SOVEREIGN_NATS_USER"), get("SOVEREIGN_NATS_PASSWORD"), get("SOVEREIGN_NATS_CREDS")
        if (user is None) != (password is None):
            raise SovereignConfigError(
                "ConfigMissing",
                "SOVEREIGN_NATS_USER and SOVEREIGN_NATS_PASSWORD go together; set both (or use SOVEREIGN_NATS_CREDS)",
            )
        if user is not None and creds is not None:
            raise SovereignConfigError(
                "ConfigInvalid",
                "both SOVEREIGN_NATS_USER and SOVEREIGN_NATS_CREDS are set; give the learner one NATS credential",
            )
        if creds is not None and not os.path.isfile(creds):
            raise invalid("SOVEREIGN_NATS_CREDS", creds, "a readable credentials file")

        return cls(
            run=run,
            namespace=namespace,
            region=region,
            round=round_,
            rounds=rounds,
            learner=learner,
            key_path=req("SOVEREIGN_LEARNER_KEY"),
            nats_servers=servers,
            encoding=encoding,
            learner_index=learner_index,
            learners=learners,
            subject_prefix=prefix,
            jetstream_domain=domain,
            nats_user=user,
            nats_password=password,
            nats_creds=creds,
            work_dir=get("SOVEREIGN_WORK_DIR"),
        )


def invalid(name: str, value: str, expected: str) -> SovereignConfigError:
    shown = value if len(value) <= 80 else value[:77] + "..."
    return SovereignConfigError("ConfigInvalid", f"{name}={shown!r} is not {expected}; fix the pod's environment")
