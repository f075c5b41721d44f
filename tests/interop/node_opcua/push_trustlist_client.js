#!/usr/bin/env node
// A node-opcua client that updates a push target's trust list (OPC 10000-12 7.10 ServerConfiguration) with
// node-opcua's own push-management client tools, the way a node-opcua based GDS would:
// ClientPushCertificateManagement -> DefaultApplicationGroup -> TrustList (found by browse path), Open(Write |
// EraseExisting), Write, then node-opcua's TrustListClient.closeAndUpdate, which sends CloseAndUpdate with an
// argument more than the method declares (FileHandle and an applyChangesRequired flag). The script records the
// status that call gets, then calls CloseAndUpdate with the declared argument list (the method found by its
// BrowseName 0:CloseAndUpdate), ApplyChanges, and reads the trust list back.
//
// Usage: node push_trustlist_client.js --endpoint <url> --pki <client pki folder> --cert <pem> --key <pem>
//        --app-uri <this client's ApplicationUri> --user <name> --password <pw> --trust-list <TrustListDataType file>
// Prints "RESULT <json>" on stdout.
"use strict";
const fs = require("fs");
const { DataType } = require("node-opcua");
const { ClientPushCertificateManagement } = require("node-opcua-server-configuration");
const { arg, openSession, child, json } = require("./client_common");

const WRITE_ERASE_EXISTING = 0x02 | 0x04; // OpenFileMode Write | EraseExisting (OPC 10000-5 C.2.1)

function trustListJson(list) {
    return {
        specifiedLists: list.specifiedLists,
        trustedCertificates: json(list.trustedCertificates || []),
        trustedCrls: json(list.trustedCrls || []),
        issuerCertificates: json(list.issuerCertificates || []),
        issuerCrls: json(list.issuerCrls || []),
    };
}

async function main() {
    const { client, session } = await openSession();
    const out = {};
    try {
        const management = new ClientPushCertificateManagement(session);
        const group = await management.getApplicationGroup();
        const trustList = await group.getTrustList();
        out.trustListId = trustList.nodeId.toString();

        await trustList.open(WRITE_ERASE_EXISTING);
        await trustList.write(fs.readFileSync(arg("trust-list")));
        try {
            await trustList.closeAndUpdate(true); // node-opcua's own call: FileHandle + an extra Boolean
            out.nodeOpcuaCloseAndUpdate = "Good";
        } catch (err) {
            out.nodeOpcuaCloseAndUpdate = err.message; // node-opcua throws the StatusCode's name
        }

        // The declared call: CloseAndUpdate(FileHandle) on the handle that is still open.
        const closeAndUpdate = await child(session, trustList.nodeId, 0, "CloseAndUpdate");
        const result = await session.call({
            objectId: trustList.nodeId, methodId: closeAndUpdate.nodeId,
            inputArguments: [{ dataType: DataType.UInt32, value: trustList.fileHandle }],
        });
        out.closeAndUpdate = result.statusCode.name;
        out.applyChangesRequired = result.outputArguments.length ? result.outputArguments[0].value : null;
        out.applyChanges = (await management.applyChanges()).name;

        const readBack = await (await group.getTrustList()).readTrustedCertificateList();
        out.trustList = trustListJson(readBack);
    } finally {
        await session.close();
        await client.disconnect();
    }
    process.stdout.write(`RESULT ${JSON.stringify(out)}\n`);
}

main().catch((err) => {
    process.stderr.write(`push_trustlist_client: ${err.stack || err}\n`);
    process.exit(1);
});
