// The independent keyless signer of the tests: Sigstore's own JavaScript
// clients. @sigstore/mock's Fulcio, CT log and Rekor run in this process,
// behind a loopback HTTP server; @sigstore/sign signs through them exactly
// as it signs through the public-good instance.
//
//   node peer.mjs sign OUT JOBS.json [--expired]
//     JOBS.json = [{kind, name, file, identity, issuer}, ...], signed in
//     order by one mock instance, each with a token for its identity and
//     issuer; kind is
//       sig   cosign's .sig layer for the file (the payload):
//             OUT/NAME.json {signature, certificate, chain, bundle}
//       msg   OUT/NAME.sigstore.json, a bundle of a message signature over
//             the file (v0.2: sigstore-js gives message signatures a chain)
//       dsse  OUT/NAME.sigstore.json, a bundle (v0.3) of a DSSE envelope of
//             the file (an in-toto statement)
//     and OUT/trusted_root.json, the mock instance's trusted root.
//     --expired: the certificate authority's clock is an hour behind the
//     log's, so every certificate had expired when its signature was
//     logged.
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';

import { bundleToJSON } from '@sigstore/bundle';
import {
  fulcioHandler,
  initializeCA,
  initializeCTLog,
  initializeTLog,
  rekorHandler,
} from '@sigstore/mock';
import {
  DSSEBundleBuilder,
  FulcioSigner,
  MessageSignatureBundleBuilder,
  RekorWitness,
} from '@sigstore/sign';

const b64url = (obj) => Buffer.from(JSON.stringify(obj)).toString('base64url');

function pem(der) {
  const body = Buffer.from(der).toString('base64').match(/.{1,64}/g).join('\n');
  return `-----BEGIN CERTIFICATE-----\n${body}\n-----END CERTIFICATE-----\n`;
}

// The leaf certificate of a bundle's verification material (message
// signatures come with a chain, DSSE envelopes with the leaf alone).
const leafOf = (material) =>
  material.certificate
    ? material.certificate.rawBytes
    : material.x509CertificateChain.certificates[0].rawBytes;

// Rekor stores a DSSE entry canonicalised: the hashes of the envelope and
// of its payload, and each signature with its verifier, never the proposed
// envelope (rekor's pkg/types/dsse/v0.0.1 Canonicalize). The mock logs what
// it is sent, so the proposal is rewritten into the stored form first, as
// the log would; hashedrekord proposals already have it.
function storedForm(body) {
  const entry = JSON.parse(body);
  const proposed = entry.kind === 'dsse' && entry.spec && entry.spec.proposedContent;
  if (!proposed) {
    return body;
  }
  const envelope = JSON.parse(proposed.envelope);
  const sha256 = (data) => crypto.createHash('sha256').update(data).digest('hex');
  const stored = {
    apiVersion: entry.apiVersion,
    kind: 'dsse',
    spec: {
      envelopeHash: { algorithm: 'sha256', value: sha256(proposed.envelope) },
      payloadHash: { algorithm: 'sha256', value: sha256(Buffer.from(envelope.payload, 'base64')) },
      signatures: envelope.signatures.map((s, i) => ({
        signature: s.sig,
        verifier: proposed.verifiers[i],
      })),
    },
  };
  return JSON.stringify(stored);
}

async function sign(out, flags, jobs) {
  fs.mkdirSync(out, { recursive: true });
  const keyPair = () => crypto.generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  const now = new Date();
  const caClock = flags.expired ? new Date(now.getTime() - 60 * 60 * 1000) : undefined;
  const ctKeys = keyPair();
  const ctLog = await initializeCTLog(ctKeys, caClock);
  const ca = await initializeCA(keyPair(), ctLog, caClock);
  const tlogKeys = keyPair();
  const server = http.createServer();
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${server.address().port}`;
  const tlog = await initializeTLog(url, tlogKeys);
  const handlers = [
    fulcioHandler(ca, { strict: true, subjectClaim: 'sub' }),
    rekorHandler(tlog, { strict: true }),
  ];
  server.on('request', (req, res) => {
    let body = '';
    req.on('data', (chunk) => (body += chunk));
    req.on('end', async () => {
      const handler = handlers.find((h) => h.path === req.url);
      if (!handler) {
        res.writeHead(404).end();
        return;
      }
      const reply = await handler.fn(storedForm(body));
      res.writeHead(reply.statusCode, { 'Content-Type': reply.contentType || 'application/json' });
      res.end(reply.response);
    });
  });
  const witnesses = [new RekorWitness({ rekorBaseURL: url })];
  try {
    for (const { kind, name, file, identity, issuer } of jobs) {
      // Mock Fulcio reads the token's claims without checking its
      // signature; the SAN is the subject, as a URI.
      const token = [
        b64url({ alg: 'none', typ: 'JWT' }),
        b64url({ iss: issuer, sub: identity, aud: 'sigstore', iat: Math.floor(now / 1000) }),
        'unsigned',
      ].join('.');
      const signer = new FulcioSigner({
        fulcioBaseURL: url,
        identityProvider: { getToken: async () => token },
      });
      const data = fs.readFileSync(file);
      if (kind === 'sig') {
        const bundle = await new MessageSignatureBundleBuilder({ signer, witnesses }).create({ data });
        const json = bundleToJSON(bundle);
        const entry = json.verificationMaterial.tlogEntries[0];
        const legacy = {
          SignedEntryTimestamp: entry.inclusionPromise.signedEntryTimestamp,
          Payload: {
            body: entry.canonicalizedBody,
            integratedTime: Number(entry.integratedTime),
            logIndex: Number(entry.logIndex),
            logID: Buffer.from(entry.logId.keyId, 'base64').toString('hex'),
          },
        };
        fs.writeFileSync(
          path.join(out, `${name}.json`),
          JSON.stringify({
            signature: json.messageSignature.signature,
            certificate: pem(Buffer.from(leafOf(json.verificationMaterial), 'base64')),
            chain: pem(ca.rootCertificate),
            bundle: JSON.stringify(legacy),
          }),
        );
      } else if (kind === 'msg' || kind === 'dsse') {
        const Builder = kind === 'msg' ? MessageSignatureBundleBuilder : DSSEBundleBuilder;
        const artifact = kind === 'msg' ? { data } : { data, type: 'application/vnd.in-toto+json' };
        const bundle = await new Builder({ signer, witnesses }).create(artifact);
        fs.writeFileSync(path.join(out, `${name}.sigstore.json`), JSON.stringify(bundleToJSON(bundle)));
      } else {
        throw new Error(`unknown job kind ${kind}`);
      }
    }
  } finally {
    server.close();
  }
  const spki = (key) => key.export({ format: 'der', type: 'spki' });
  const start = new Date(now.getTime() - 24 * 60 * 60 * 1000).toISOString();
  const root = {
    mediaType: 'application/vnd.dev.sigstore.trustedroot+json;version=0.1',
    tlogs: [
      {
        baseUrl: url,
        hashAlgorithm: 'SHA2_256',
        publicKey: {
          rawBytes: spki(tlogKeys.publicKey).toString('base64'),
          keyDetails: 'PKIX_ECDSA_P256_SHA_256',
          validFor: { start },
        },
        logId: { keyId: crypto.createHash('sha256').update(spki(tlogKeys.publicKey)).digest('base64') },
      },
    ],
    certificateAuthorities: [
      {
        subject: { organization: 'sigstore.mock', commonName: 'sigstore' },
        uri: url,
        certChain: { certificates: [{ rawBytes: Buffer.from(ca.rootCertificate).toString('base64') }] },
        validFor: { start },
      },
    ],
    ctlogs: [
      {
        baseUrl: url,
        hashAlgorithm: 'SHA2_256',
        publicKey: {
          rawBytes: Buffer.from(ctLog.publicKey).toString('base64'),
          keyDetails: 'PKIX_ECDSA_P256_SHA_256',
          validFor: { start },
        },
        logId: { keyId: Buffer.from(ctLog.logID).toString('base64') },
      },
    ],
    timestampAuthorities: [],
  };
  fs.writeFileSync(path.join(out, 'trusted_root.json'), JSON.stringify(root));
}

const [command, ...args] = process.argv.slice(2);
if (command === 'sign') {
  const [out, jobs, ...rest] = args;
  const flags = { expired: rest.includes('--expired') };
  await sign(out, flags, JSON.parse(fs.readFileSync(jobs, 'utf8')));
} else {
  console.error(`unknown command ${command}`);
  process.exit(2);
}
