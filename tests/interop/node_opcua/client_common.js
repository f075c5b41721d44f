// Shared by the node-opcua client scripts (gds_pull_client.js, event_watch.js): arguments, a secure session,
// browsing by BrowseName and turning OPC UA values into JSON.
"use strict";
const path = require("path");
const {
    OPCUAClient, OPCUACertificateManager, SecurityPolicy, MessageSecurityMode, UserTokenType, BrowseDirection,
    NodeId, StatusCode,
} = require("node-opcua");

function arg(name, fallback) {
    const i = process.argv.indexOf(`--${name}`);
    if (i >= 0 && i + 1 < process.argv.length) return process.argv[i + 1];
    if (fallback === undefined) throw new Error(`missing --${name}`);
    return fallback;
}

// A SignAndEncrypt Basic256Sha256 session. The client PKI folder (node-opcua's layout) is seeded by the test:
// nothing unknown is accepted, so the server certificate must chain to what the test put there.
async function openSession() {
    const pki = path.resolve(arg("pki"));
    const clientCertificateManager = new OPCUACertificateManager({
        rootFolder: pki, automaticallyAcceptUnknownCertificate: false,
    });
    await clientCertificateManager.initialize();
    const client = OPCUAClient.create({
        applicationName: "otpki interop node-opcua client",
        applicationUri: arg("app-uri"),
        clientCertificateManager,
        certificateFile: arg("cert"),
        privateKeyFile: arg("key"),
        securityMode: MessageSecurityMode.SignAndEncrypt,
        securityPolicy: SecurityPolicy.Basic256Sha256,
        endpointMustExist: false,
        connectionStrategy: { maxRetry: 0, initialDelay: 100, maxDelay: 200 },
        requestedSessionTimeout: 60000,
    });
    await client.connect(arg("endpoint"));
    const user = arg("user", "");
    const identity = user ? { type: UserTokenType.UserName, userName: user, password: arg("password") }
        : { type: UserTokenType.Anonymous };
    const session = await client.createSession(identity);
    return { client, session };
}

async function namespaceIndex(session, uri) {
    const namespaces = await session.readNamespaceArray();
    const index = namespaces.indexOf(uri);
    if (index < 0) throw new Error(`the server has no namespace ${uri}`);
    return index;
}

// The forward hierarchical reference of `nodeId` whose target has BrowseName ns:name (as a client that knows only
// the information model finds things): its ReferenceDescription, TypeDefinition included.
async function child(session, nodeId, ns, name) {
    const result = await session.browse({
        nodeId, referenceTypeId: "HierarchicalReferences", includeSubtypes: true,
        browseDirection: BrowseDirection.Forward, nodeClassMask: 0, resultMask: 0x3f,
    });
    if (!result.statusCode.isGood()) throw new Error(`browse ${nodeId}: ${result.statusCode.name}`);
    const found = result.references.find((r) => r.browseName.namespaceIndex === ns && r.browseName.name === name);
    if (!found) {
        const seen = result.references.map((r) => r.browseName.toString()).join(", ");
        throw new Error(`${nodeId} has no child ${ns}:${name} (it has ${seen})`);
    }
    return found;
}

function describe(reference) {
    return {
        nodeId: reference.nodeId.toString(),
        browseName: reference.browseName.toString(),
        typeDefinition: reference.typeDefinition.toString(),
        nodeClass: reference.nodeClass,
    };
}

function json(value) {
    if (value === null || value === undefined) return null;
    if (Buffer.isBuffer(value)) return value.toString("base64");
    if (Array.isArray(value) || ArrayBuffer.isView(value)) return Array.from(value, json);
    if (value instanceof NodeId) return value.toString();
    if (value instanceof StatusCode || (value && value.constructor && value.constructor.name === "ConstantStatusCode")) {
        return value.name;
    }
    if (value && value.dataType !== undefined && value.value !== undefined && value.arrayType !== undefined) {
        return json(value.value); // a Variant
    }
    if (value && typeof value.text !== "undefined" && typeof value.locale !== "undefined") return value.text;
    if (value instanceof Date) return value.toISOString();
    if (typeof value === "object") return value.toString();
    return value;
}

module.exports = { arg, openSession, namespaceIndex, child, describe, json };
