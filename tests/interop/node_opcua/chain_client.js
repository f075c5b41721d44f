#!/usr/bin/env node
// A node-opcua client that trusts only the plant root (and holds the CRLs): first contact with a server.
//
// Usage: node chain_client.js --endpoint <opc.tcp://...> --pki <folder> --cert <PEM> --key <PEM>
//                             [--user <name> --password <pw>] [--read <nodeId>]
//
// --pki holds trusted/certs (the root, DER or PEM) and trusted/crl (every CRL of the hierarchy).
// --cert may hold a chain (PEM bundle, leaf first): node-opcua sends it in its OpenSecureChannel request.
//
// 1. GetEndpoints (node-opcua, over a None channel, as any client does first) and take the ServerCertificate of
//    the Basic256Sha256 SignAndEncrypt endpoint: the certificate chain the server presents.
// 2. Validate that chain with only the root and the CRLs, with OpenSSL (`openssl verify -x509_strict
//    -crl_check_all`): an RFC 5280 path validation that is neither otpki's nor node-opcua's. node-opcua's own
//    PKI (node-opcua-pki 5.5.0) cannot decide this case: it trusts a certificate only when the certificate or its
//    direct issuer is in trusted/ (a root two levels up is not enough) and looks a certificate's CRL up by an
//    issuer it finds in its folders only, never in the chain it was sent, so it answers
//    BadCertificateChainIncomplete or BadCertificateUntrusted whatever the server presents.
//    For comparison, the leaf alone (what a server without its chain presents) is validated the same way.
// 3. If the chain is valid, connect with SignAndEncrypt to that server certificate, create and activate a
//    session (anonymous, or --user/--password), read --read (default: ServerStatus.State, i=2259).
//
// Prints one JSON object on stdout: {endpoint_chain: [base64 DER...], chain_status, leaf_alone_status,
// openssl: {...}, session: {status, value} | {error}}. Exits 0 when it ran to the end (whatever it found).
"use strict";
const fs = require("fs");
const os = require("os");
const path = require("path");
const { execFileSync } = require("child_process");
const {
    OPCUAClient, OPCUACertificateManager, MessageSecurityMode, SecurityPolicy, AttributeIds, UserTokenType,
} = require("node-opcua");

function arg(name, fallback) {
    const i = process.argv.indexOf(`--${name}`);
    return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}

const endpointUrl = arg("endpoint");
const pki = path.resolve(arg("pki"));
const certificateFile = path.resolve(arg("cert"));
const privateKeyFile = path.resolve(arg("key"));
const user = arg("user");
const password = arg("password");
const readNode = arg("read", "i=2259");

function splitDer(buffer) {
    const certs = [];
    let offset = 0;
    while (offset + 4 <= buffer.length && buffer[offset] === 0x30) {
        let length = buffer[offset + 1];
        let header = 2;
        if (length & 0x80) {
            const n = length & 0x7f;
            length = buffer.readUIntBE(offset + 2, n);
            header = 2 + n;
        }
        certs.push(buffer.subarray(offset, offset + header + length));
        offset += header + length;
    }
    return certs;
}

function toPem(der, label) {
    const b64 = der.toString("base64").replace(/(.{64})/g, "$1\n");
    return `-----BEGIN ${label}-----\n${b64}\n-----END ${label}-----\n`;
}

function readAll(folder, label) {
    const dir = path.join(pki, folder);
    return fs.readdirSync(dir).filter((f) => !f.startsWith(".")).map((f) => {
        const data = fs.readFileSync(path.join(dir, f));
        return data.includes("-----BEGIN") ? data.toString() : toPem(data, label);
    }).join("");
}

// OpenSSL's verify error numbers (X509_V_ERR_*) in OPC UA's words (OPC 10000-4 6.1.3).
const OPENSSL_STATUS = {
    2: "BadCertificateChainIncomplete", // unable to get issuer certificate
    20: "BadCertificateChainIncomplete", // unable to get local issuer certificate
    3: "BadCertificateRevocationUnknown", // unable to get certificate CRL
    23: "BadCertificateRevoked",
    10: "BadCertificateTimeInvalid",
    12: "BadCertificateRevocationUnknown", // CRL has expired
};

function verifyWithOpenSSL(chain, work, name) {
    const leaf = path.join(work, `${name}-leaf.pem`);
    const untrusted = path.join(work, `${name}-untrusted.pem`);
    fs.writeFileSync(leaf, toPem(chain[0], "CERTIFICATE"));
    const args = ["verify", "-x509_strict", "-crl_check_all", "-CAfile", path.join(work, "roots.pem"),
        "-CRLfile", path.join(work, "crls.pem")];
    if (chain.length > 1) {
        fs.writeFileSync(untrusted, chain.slice(1).map((c) => toPem(c, "CERTIFICATE")).join(""));
        args.push("-untrusted", untrusted);
    }
    args.push(leaf);
    try {
        const out = execFileSync("openssl", args, { stdio: ["ignore", "pipe", "pipe"] }).toString();
        return { status: "Good", output: out.trim() };
    } catch (err) {
        const text = `${err.stdout || ""}${err.stderr || ""}`.trim();
        const match = /error (\d+) at/.exec(text);
        const code = match ? parseInt(match[1], 10) : -1;
        return { status: OPENSSL_STATUS[code] || "BadCertificateInvalid", output: text };
    }
}

async function endpointChain() {
    const client = OPCUAClient.create({
        endpointMustExist: false,
        connectionStrategy: { maxRetry: 0, initialDelay: 100, maxDelay: 200 },
    });
    await client.connect(endpointUrl);
    try {
        const endpoints = await client.getEndpoints();
        const chosen = endpoints.find((e) => e.securityMode === MessageSecurityMode.SignAndEncrypt
            && e.securityPolicyUri === SecurityPolicy.Basic256Sha256);
        if (!chosen) throw new Error("the server offers no Basic256Sha256 SignAndEncrypt endpoint");
        return chosen.serverCertificate;
    } finally {
        await client.disconnect();
    }
}

async function openSession(serverCertificate, work) {
    const clientCertificateManager = new OPCUACertificateManager({
        rootFolder: path.join(work, "client-pki"),
        automaticallyAcceptUnknownCertificate: false,
    });
    await clientCertificateManager.initialize();
    const client = OPCUAClient.create({
        applicationName: "otpki chain interop client",
        endpointMustExist: false,
        securityMode: MessageSecurityMode.SignAndEncrypt,
        securityPolicy: SecurityPolicy.Basic256Sha256,
        certificateFile,
        privateKeyFile,
        clientCertificateManager,
        // The chain was validated in step 2 with the root and the CRLs; node-opcua then binds the channel to it.
        serverCertificate,
        connectionStrategy: { maxRetry: 0, initialDelay: 100, maxDelay: 200 },
    });
    try {
        await client.connect(endpointUrl);
        const identity = user ? { type: UserTokenType.UserName, userName: user, password } : undefined;
        const session = await client.createSession(identity);
        try {
            const dataValue = await session.read({ nodeId: readNode, attributeId: AttributeIds.Value });
            return { status: dataValue.statusCode.name, value: dataValue.value.value };
        } finally {
            await session.close();
        }
    } catch (err) {
        return { error: err && err.message ? err.message : String(err) };
    } finally {
        await client.disconnect();
        await clientCertificateManager.dispose();
    }
}

async function main() {
    const work = fs.mkdtempSync(path.join(os.tmpdir(), "otpki-chain-client-"));
    try {
        fs.writeFileSync(path.join(work, "roots.pem"), readAll("trusted/certs", "CERTIFICATE"));
        fs.writeFileSync(path.join(work, "crls.pem"), readAll("trusted/crl", "X509 CRL"));
        const presented = await endpointChain();
        const chain = splitDer(presented);
        const result = {
            endpoint_chain: chain.map((c) => c.toString("base64")),
            openssl: { chain: verifyWithOpenSSL(chain, work, "chain"), leaf: verifyWithOpenSSL(chain.slice(0, 1), work, "leaf") },
        };
        result.chain_status = result.openssl.chain.status;
        result.leaf_alone_status = result.openssl.leaf.status;
        if (result.chain_status === "Good") {
            result.session = await openSession(presented, work);
        }
        process.stdout.write(JSON.stringify(result) + "\n");
    } finally {
        fs.rmSync(work, { recursive: true, force: true });
    }
}

main().then(() => process.exit(0)).catch((err) => {
    process.stdout.write(JSON.stringify({ error: err && err.stack ? err.stack : String(err) }) + "\n");
    process.exit(1);
});
