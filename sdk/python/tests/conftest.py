import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


@pytest.fixture
def key_file(tmp_path):
    key = Ed25519PrivateKey.generate()
    path = tmp_path / "learner.pem"
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return str(path), key


@pytest.fixture
def env(key_file):
    return {
        "SOVEREIGN_RUN": "fedavg-mnist",
        "SOVEREIGN_RUN_NAMESPACE": "research",
        "SOVEREIGN_REGION": "berlin",
        "SOVEREIGN_ROUND": "2",
        "SOVEREIGN_ROUNDS": "10",
        "SOVEREIGN_LEARNER_INDEX": "1",
        "SOVEREIGN_LEARNERS": "4",
        "SOVEREIGN_NATS_SUBJECT_PREFIX": "sovereign.berlin.research.fedavg-mnist",
        "SOVEREIGN_JETSTREAM_DOMAIN": "berlin",
        "SOVEREIGN_DELTA_DTYPE": "int8",
        "SOVEREIGN_NATS_URL": "nats://nats.sovereign-system:4222",
        "SOVEREIGN_NATS_USER": "learner",
        "SOVEREIGN_NATS_PASSWORD": "secret",
        "SOVEREIGN_LEARNER_NAME": "learner-0123abcd-1",
        "SOVEREIGN_LEARNER_KEY": key_file[0],
    }
