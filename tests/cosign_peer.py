"""An independent cosign peer for tests/cosign.rs: keys, signatures and
bundles made (and checked) with Python's `cryptography` and PyNaCl, following
cosign's documented formats, never with the crates the resource uses.

Commands (paths are files; output on stdout):
  keygen DIR PASSWORD      ec.key ec.pub (PKCS#8), ed.key ed.pub, and
                           ec.enc.key: ec.key in cosign's encrypted format
  public ENCKEY PASSWORD   the PEM public key of a cosign encrypted key
  sign KEY FILE            base64 signature of FILE's bytes
  bundle KEY DIGEST        a sigstore bundle (DSSE, in-toto statement) for DIGEST
  verify PUB FILE SIG      exit 0 when SIG (base64) signs FILE
  verify-bundle PUB FILE DIGEST
                           exit 0 when the bundle in FILE signs DIGEST
"""

import base64
import hashlib
import json
import os
import sys

import nacl.secret
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import serialization as ser
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

IN_TOTO = "application/vnd.in-toto+json"


def pem_body(path):
    lines = open(path).read().strip().splitlines()
    return "".join(l for l in lines if not l.startswith("-----"))


def decrypt(path, password):
    doc = json.loads(base64.b64decode(pem_body(path)))
    p = doc["kdf"]["params"]
    key = hashlib.scrypt(password.encode(), salt=base64.b64decode(doc["kdf"]["salt"]),
                         n=p["N"], r=p["r"], p=p["p"], dklen=32, maxmem=512 << 20)
    box = nacl.secret.SecretBox(key)
    der = box.decrypt(base64.b64decode(doc["cipher"]["nonce"]) + base64.b64decode(doc["ciphertext"]))
    return ser.load_der_private_key(der, None)


def encrypt(der, password):
    salt = os.urandom(32)
    key = hashlib.scrypt(password.encode(), salt=salt, n=32768, r=8, p=1, dklen=32, maxmem=512 << 20)
    nonce = os.urandom(24)
    ciphertext = nacl.secret.SecretBox(key).encrypt(der, nonce).ciphertext
    doc = {"kdf": {"name": "scrypt", "params": {"N": 32768, "r": 8, "p": 1},
                   "salt": base64.b64encode(salt).decode()},
           "cipher": {"name": "nacl/secretbox", "nonce": base64.b64encode(nonce).decode()},
           "ciphertext": base64.b64encode(ciphertext).decode()}
    body = base64.b64encode(json.dumps(doc).encode()).decode()
    lines = [body[i:i + 64] for i in range(0, len(body), 64)]
    return "-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n" + "\n".join(lines) + \
        "\n-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n"


def load_key(path):
    return ser.load_pem_private_key(open(path, "rb").read(), None)


def public_pem(key):
    return key.public_key().public_bytes(ser.Encoding.PEM, ser.PublicFormat.SubjectPublicKeyInfo).decode()


def sign(key, data):
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key.sign(data, ec.ECDSA(hashes.SHA256()))
    return key.sign(data)


def verify(pub, data, sig):
    try:
        if isinstance(pub, ec.EllipticCurvePublicKey):
            pub.verify(sig, data, ec.ECDSA(hashes.SHA256()))
        else:
            pub.verify(sig, data)
        return True
    except InvalidSignature:
        return False


def pae(payload_type, payload):
    return b"DSSEv1 %d %s %d %s" % (len(payload_type), payload_type.encode(), len(payload), payload)


def main(cmd, *args):
    if cmd == "keygen":
        out, password = args
        for name, key in [("ec", ec.generate_private_key(ec.SECP256R1())),
                          ("ed", ed25519.Ed25519PrivateKey.generate())]:
            der = key.private_bytes(ser.Encoding.DER, ser.PrivateFormat.PKCS8, ser.NoEncryption())
            pem = key.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.PKCS8, ser.NoEncryption())
            open(os.path.join(out, name + ".key"), "wb").write(pem)
            open(os.path.join(out, name + ".pub"), "w").write(public_pem(key))
            open(os.path.join(out, name + ".enc.key"), "w").write(encrypt(der, password))
    elif cmd == "public":
        print(public_pem(decrypt(*args)), end="")
    elif cmd == "sign":
        key, path = args
        print(base64.b64encode(sign(load_key(key), open(path, "rb").read())).decode())
    elif cmd == "bundle":
        key, digest = args
        algorithm, hexdigest = digest.split(":")
        statement = json.dumps({"_type": "https://in-toto.io/Statement/v1",
                                "subject": [{"name": "image", "digest": {algorithm: hexdigest}}],
                                "predicateType": "https://sigstore.dev/cosign/sign/v1",
                                "predicate": {}}).encode()
        sig = sign(load_key(key), pae(IN_TOTO, statement))
        print(json.dumps({"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
                          "verificationMaterial": {"publicKey": {"hint": ""}, "tlogEntries": []},
                          "dsseEnvelope": {"payload": base64.b64encode(statement).decode(),
                                           "payloadType": IN_TOTO,
                                           "signatures": [{"sig": base64.b64encode(sig).decode()}]}}))
    elif cmd == "verify":
        pub, path, sig = args
        pub = ser.load_pem_public_key(open(pub, "rb").read())
        sys.exit(0 if verify(pub, open(path, "rb").read(), base64.b64decode(sig)) else 1)
    elif cmd == "verify-bundle":
        pub, path, digest = args
        pub = ser.load_pem_public_key(open(pub, "rb").read())
        bundle = json.load(open(path))
        envelope = bundle["dsseEnvelope"]
        payload = base64.b64decode(envelope["payload"])
        signed = pae(envelope["payloadType"], payload)
        ok = any(verify(pub, signed, base64.b64decode(s["sig"])) for s in envelope["signatures"])
        statement = json.loads(payload)
        algorithm, hexdigest = digest.split(":")
        names = any(s["digest"].get(algorithm) == hexdigest for s in statement["subject"])
        sys.exit(0 if ok and names and envelope["payloadType"] == IN_TOTO and
                 statement["predicateType"] == "https://sigstore.dev/cosign/sign/v1" else 1)
    else:
        sys.exit("unknown command " + cmd)


if __name__ == "__main__":
    main(*sys.argv[1:])
