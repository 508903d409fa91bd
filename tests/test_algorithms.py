"""Every PCR bank's hash, one-shot and incremental, against known answers (FIPS 180-4, GB/T 32905)."""

from __future__ import annotations

import pytest

from assay.algorithms import HashAlg

ABC = {
    HashAlg.SHA1: "a9993e364706816aba3e25717850c26c9cd0d89d",
    HashAlg.SHA256: "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
    HashAlg.SHA384: "cb00753f45a35e8bb5a03d699ac65007272c32ab0eded1631a8b605a43ff5bed"
    "8086072ba1e7cc2358baeca134c825a7",
    HashAlg.SHA512: "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
    "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
    HashAlg.SM3_256: "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0",
}


@pytest.mark.parametrize("alg", list(HashAlg), ids=lambda a: a.bank)
def test_hash_of_abc(alg: HashAlg) -> None:
    want = bytes.fromhex(ABC[alg])
    assert alg.hash(b"abc") == want
    assert alg.hasher(b"abc").digest() == want
    h = alg.new()
    h.update(b"a")
    h.update(b"bc")
    assert h.digest() == want
    assert len(want) == alg.digest_size


def test_bank_names_parse_both_ways() -> None:
    for alg in HashAlg:
        assert HashAlg.from_bank(alg.bank) is alg
    assert HashAlg.from_bank("SHA-256") is HashAlg.SHA256
    assert HashAlg.from_bank("sm3") is HashAlg.SM3_256
    with pytest.raises(ValueError, match="md5"):
        HashAlg.from_bank("md5")
