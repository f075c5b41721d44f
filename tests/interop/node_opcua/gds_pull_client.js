#!/usr/bin/env node
// A node-opcua GDS pull client that knows only the GDS information model (OPC 10000-12), not otpki: it finds the
// Directory, the DefaultApplicationGroup, its TrustList and every method it calls by browsing BrowseNames from the
// Objects folder (no NodeIds written here), then runs the pull flow through what it found:
// RegisterApplication, StartSigningRequest, FinishRequest, GetTrustList, and Open/Read/Close on the TrustList.
//
// Usage: node gds_pull_client.js --endpoint <url> --pki <client pki folder> --cert <pem> --key <pem>
//        --app-uri <this client's ApplicationUri> --user <name> --password <pw>
//        --register-uri <ApplicationUri to register> --register-name <name> --discovery-url <url> --csr <DER file>
// Prints "RESULT <json>" on stdout: what it found (NodeIds, BrowseNames, TypeDefinitions as browsed) and got.
"use strict";
const fs = require("fs");
const { DataType, Variant, VariantArrayType, NodeId, BinaryStream } = require("node-opcua");
const { TrustListDataType } = require("node-opcua-types");
const { arg, openSession, namespaceIndex, child, describe, json } = require("./client_common");

const GDS = "http://opcfoundation.org/UA/GDS/";

async function call(session, objectId, methodId, inputs) {
    const result = await session.call({ objectId, methodId, inputArguments: inputs });
    if (!result.statusCode.isGood()) {
        throw new Error(`${methodId} on ${objectId}: ${result.statusCode.name}`);
    }
    return result.outputArguments.map((v) => v.value);
}

async function main() {
    const { client, session } = await openSession();
    const out = { found: {}, methods: {} };
    try {
        const gds = await namespaceIndex(session, GDS);
        const directory = await child(session, "i=85", gds, "Directory");
        const groups = await child(session, directory.nodeId, gds, "CertificateGroups");
        const group = await child(session, groups.nodeId, gds, "DefaultApplicationGroup");
        const trustList = await child(session, group.nodeId, 0, "TrustList");
        Object.assign(out.found, {
            directory: describe(directory), certificateGroups: describe(groups),
            defaultApplicationGroup: describe(group), trustList: describe(trustList),
        });
        const method = async (parent, ns, name) => {
            const found = await child(session, parent.nodeId, ns, name);
            out.methods[name] = describe(found);
            return found.nodeId;
        };
        const register = await method(directory, gds, "RegisterApplication");
        const startSigning = await method(directory, gds, "StartSigningRequest");
        const finish = await method(directory, gds, "FinishRequest");
        const getTrustList = await method(directory, gds, "GetTrustList");
        const open = await method(trustList, 0, "Open");
        const read = await method(trustList, 0, "Read");
        const close = await method(trustList, 0, "Close");

        // ApplicationRecordDataType, built from the DataTypeDefinition the server publishes.
        const record = await session.constructExtensionObject(new NodeId(NodeId.NodeIdType.NUMERIC, 1, gds), {
            applicationUri: arg("register-uri"),
            applicationType: 0, // Server
            applicationNames: [{ text: arg("register-name"), locale: "en" }],
            productUri: "urn:otpki:interop:node-opcua-pulled",
            discoveryUrls: [arg("discovery-url")],
            serverCapabilities: ["NA"],
        });
        const [applicationId] = await call(session, directory.nodeId, register,
            [new Variant({ dataType: DataType.ExtensionObject, value: record })]);
        out.applicationId = applicationId.toString();

        const nullId = new Variant({ dataType: DataType.NodeId, value: NodeId.nullNodeId });
        const [requestId] = await call(session, directory.nodeId, startSigning, [
            new Variant({ dataType: DataType.NodeId, value: applicationId }),
            new Variant({ dataType: DataType.NodeId, value: group.nodeId }),
            nullId,
            new Variant({ dataType: DataType.ByteString, value: fs.readFileSync(arg("csr")) }),
        ]);
        out.requestId = requestId.toString();
        const [certificate, privateKey, issuers] = await call(session, directory.nodeId, finish, [
            new Variant({ dataType: DataType.NodeId, value: applicationId }),
            new Variant({ dataType: DataType.NodeId, value: requestId }),
        ]);
        Object.assign(out, { certificate: json(certificate), privateKey: json(privateKey), issuers: json(issuers) });

        const [trustListId] = await call(session, directory.nodeId, getTrustList, [
            new Variant({ dataType: DataType.NodeId, value: applicationId }),
            new Variant({ dataType: DataType.NodeId, value: group.nodeId }),
        ]);
        out.trustListId = trustListId.toString();
        const [handle] = await call(session, trustListId, open, [new Variant({ dataType: DataType.Byte, value: 1 })]);
        const chunks = [];
        for (;;) {
            const [data] = await call(session, trustListId, read, [
                new Variant({ dataType: DataType.UInt32, value: handle }),
                new Variant({ dataType: DataType.Int32, value: 4096 }),
            ]);
            if (!data || data.length === 0) break;
            chunks.push(data);
        }
        await call(session, trustListId, close, [new Variant({ dataType: DataType.UInt32, value: handle })]);
        const decoded = new TrustListDataType();
        decoded.decode(new BinaryStream(Buffer.concat(chunks)));
        out.trustList = {
            specifiedLists: decoded.specifiedLists,
            trustedCertificates: json(decoded.trustedCertificates || []),
            trustedCrls: json(decoded.trustedCrls || []),
            issuerCertificates: json(decoded.issuerCertificates || []),
            issuerCrls: json(decoded.issuerCrls || []),
        };
    } finally {
        await session.close();
        await client.disconnect();
    }
    process.stdout.write(`RESULT ${JSON.stringify(out)}\n`);
}

main().catch((err) => {
    process.stderr.write(`gds_pull_client: ${err && err.stack ? err.stack : err}\n`);
    process.exit(1);
});
