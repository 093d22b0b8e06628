"""The typed key model: RFC 7748 vectors, text forms, parsing errors, redaction, equality, no pickling."""

from __future__ import annotations

import copy
import pickle

import pytest

from meshctl.keys import (
    PRIVATE_KINDS,
    BoxOpenError,
    ControlPrivateKey,
    DerpPrivateKey,
    DerpPublicKey,
    DiscoPrivateKey,
    KeyFormatError,
    KeyTypeMismatchError,
    MachinePrivateKey,
    MachinePublicKey,
    NodePrivateKey,
    NodePublicKey,
    from_wireguard_base64,
    to_wireguard_base64,
)

# RFC 7748 §6.1 (https://www.rfc-editor.org/rfc/rfc7748#section-6.1): X25519 Diffie-Hellman test vectors.
ALICE_PRIV = "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"
ALICE_PUB = "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
BOB_PRIV = "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb"
BOB_PUB = "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"
SHARED = "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"


@pytest.mark.parametrize("cls", list(PRIVATE_KINDS.values()))
@pytest.mark.parametrize(("priv", "pub"), [(ALICE_PRIV, ALICE_PUB), (BOB_PRIV, BOB_PUB)])
def test_rfc7748_public_keys(cls: type, priv: str, pub: str) -> None:
    key = cls.from_raw(bytes.fromhex(priv))
    assert key.public_key().raw.hex() == pub


def test_rfc7748_shared_secret_through_box() -> None:
    # Both sides derive the same box key: a message sealed by Alice opens for Bob and vice versa.
    import nacl.bindings

    alice = NodePrivateKey.from_raw(bytes.fromhex(ALICE_PRIV))
    bob = NodePrivateKey.from_raw(bytes.fromhex(BOB_PRIV))
    assert nacl.bindings.crypto_scalarmult(alice.secret_bytes(), bytes.fromhex(BOB_PUB)).hex() == SHARED
    sealed = alice.box(bob.public_key()).seal(b"hello bob")
    assert bob.box(alice.public_key()).open(sealed) == b"hello bob"
    with pytest.raises(BoxOpenError, match="box failed to open"):
        NodePrivateKey.generate().box(alice.public_key()).open(sealed)
    with pytest.raises(BoxOpenError, match="too short"):
        bob.box(alice.public_key()).open(sealed[:30])


@pytest.mark.parametrize(
    ("cls", "priv_prefix", "pub_prefix"),
    [
        (MachinePrivateKey, "mprivkey:", "mkey:"),
        (NodePrivateKey, "privkey:", "nodekey:"),
        (DiscoPrivateKey, "discoprivkey:", "discokey:"),
        (ControlPrivateKey, "ctrlprivkey:", "ctrlkey:"),
        (DerpPrivateKey, "privkey:", "nodekey:"),
    ],
)
def test_text_forms_round_trip(cls: type, priv_prefix: str, pub_prefix: str) -> None:
    key = cls.generate()
    text = key.to_text()
    assert text.startswith(priv_prefix) and len(text) == len(priv_prefix) + 64
    assert cls.from_text(text) == key
    pub = key.public_key()
    assert pub.to_text().startswith(pub_prefix)
    assert type(pub).from_text(pub.to_text()) == pub
    assert type(pub).from_wireguard_base64(pub.to_wireguard_base64()) == pub


def test_wrong_prefix_is_a_type_mismatch_naming_the_expected_prefix() -> None:
    machine = MachinePrivateKey.generate().public_key().to_text()
    with pytest.raises(KeyTypeMismatchError, match=r"expected 'nodekey:' prefix, got 'mkey:'"):
        NodePublicKey.from_text(machine)
    with pytest.raises(KeyTypeMismatchError, match=r"expected 'mprivkey:' prefix"):
        MachinePrivateKey.from_text(NodePrivateKey.generate().to_text())


def test_a_prefixless_secret_is_never_echoed() -> None:
    secret = NodePrivateKey.generate().to_wireguard_base64()  # what `wg genkey` prints
    with pytest.raises(KeyTypeMismatchError) as ei:
        NodePrivateKey.from_text(secret)
    assert "44 characters without a key prefix" in str(ei.value)
    for i in range(len(secret) - 4):
        assert secret[i:i + 5] not in str(ei.value)
    hexkey = "deadbeef:" + "ab" * 32
    with pytest.raises(KeyTypeMismatchError) as ei2:
        NodePrivateKey.from_text(hexkey)
    assert "ab" * 8 not in str(ei2.value)


def test_wrong_length_and_bad_hex() -> None:
    with pytest.raises(KeyFormatError, match="want 64 hex characters after 'nodekey:', got 10"):
        NodePublicKey.from_text("nodekey:0123456789")
    with pytest.raises(KeyFormatError, match="must be followed by hex digits"):
        NodePublicKey.from_text("nodekey:" + "zz" * 32)
    with pytest.raises(KeyFormatError, match="want 32 bytes, got 31"):
        NodePublicKey.from_raw(b"\x00" * 31)
    with pytest.raises(KeyFormatError, match="not valid base64"):
        from_wireguard_base64("!!!!")
    with pytest.raises(KeyFormatError, match="want 32 bytes, got 3"):
        from_wireguard_base64("AAAA")


def test_private_repr_is_redacted() -> None:
    key = NodePrivateKey.generate()
    secret_hex = key.secret_bytes().hex()
    for text in (repr(key), str(key), f"{key}", repr([key]), repr({"k": key})):
        assert secret_hex not in text
        assert "<redacted>" in text
        assert key.to_wireguard_base64() not in text
    assert key.short() in repr(key)
    assert key.short() == key.public_key().short()
    assert key.short().startswith("[") and len(key.short()) == 7


@pytest.mark.parametrize("cls", list(PRIVATE_KINDS.values()))
def test_keys_cannot_be_pickled(cls: type) -> None:
    key = cls.generate()
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(key)
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(key.public_key())
    assert copy.deepcopy(key) == key


def test_equality_is_by_kind_and_value() -> None:
    raw = bytes.fromhex(ALICE_PRIV)
    assert NodePrivateKey.from_raw(raw) == NodePrivateKey.from_raw(raw)
    assert NodePrivateKey.from_raw(raw) != NodePrivateKey.generate()
    # same bytes, different kinds: never equal
    assert NodePrivateKey.from_raw(raw) != DerpPrivateKey.from_raw(raw)
    assert NodePublicKey.from_raw(raw) != MachinePublicKey.from_raw(raw)
    assert NodePublicKey.from_raw(raw) != DerpPublicKey.from_raw(raw)
    # public keys are hashable (dict keys in routing tables), private keys are not
    assert len({NodePublicKey.from_raw(raw), NodePublicKey.from_raw(raw)}) == 1
    with pytest.raises(TypeError):
        hash(NodePrivateKey.from_raw(raw))


def test_keys_are_immutable() -> None:
    key = NodePrivateKey.generate()
    with pytest.raises(AttributeError):
        key._raw = b"\x00" * 32  # type: ignore[misc]


def test_wireguard_base64_conversion() -> None:
    raw = bytes.fromhex(ALICE_PUB)
    text = to_wireguard_base64(raw)
    assert len(text) == 44 and text.endswith("=")
    assert from_wireguard_base64(text + "\n") == raw
