#!/usr/bin/env node
// A node-opcua event client, as a SCADA's event view is one: it subscribes to the events of the Server object
// (i=2253) and prints every event it receives.
//
// Usage: node event_watch.js --endpoint <url> --pki <client pki folder> --cert <pem> --key <pem>
//        --app-uri <uri> [--user <name> --password <pw>] [--publishing-interval <ms>]
//        --fields <comma-separated select clauses>
// A select clause is a BrowseName, "ns:Name" with the namespace given by URI as "<uri>|Name" (the index is looked up).
// Prints "READY" once the monitored item exists, then one line "EVENT <json object: field -> value>" per event and
// "KEEPALIVE" per publish cycle that carried none; exits on SIGTERM/SIGINT.
"use strict";
const { AttributeIds, TimestampsToReturn, ClientMonitoredItem, constructEventFilter } = require("node-opcua");
const { arg, openSession, json } = require("./client_common");

async function main() {
    const { client, session } = await openSession();
    const namespaces = await session.readNamespaceArray();
    const names = arg("fields").split(",");
    const clauses = names.map((name) => {
        const bar = name.lastIndexOf("|");
        if (bar < 0) return name;
        const index = namespaces.indexOf(name.slice(0, bar));
        if (index < 0) throw new Error(`the server has no namespace ${name.slice(0, bar)}`);
        return `${index}:${name.slice(bar + 1)}`;
    });
    const subscription = await session.createSubscription2({
        requestedPublishingInterval: parseInt(arg("publishing-interval", "50"), 10), requestedLifetimeCount: 600,
        requestedMaxKeepAliveCount: 4,
        maxNotificationsPerPublish: 1000, publishingEnabled: true, priority: 1,
    });
    // A keep-alive is a publish cycle without notifications: the test waits for some to know nothing is pending.
    subscription.on("keepalive", () => process.stdout.write("KEEPALIVE\n"));
    const item = ClientMonitoredItem.create(subscription, { nodeId: "i=2253", attributeId: AttributeIds.EventNotifier },
        { samplingInterval: 0, discardOldest: false, queueSize: 1000, filter: constructEventFilter(clauses) },
        TimestampsToReturn.Both);
    item.on("changed", (fields) => {
        const event = {};
        names.forEach((name, i) => { event[name.slice(name.lastIndexOf("|") + 1)] = json(fields[i]); });
        process.stdout.write(`EVENT ${JSON.stringify(event)}\n`);
    });
    await new Promise((resolve, reject) => {
        item.once("initialized", resolve);
        item.once("err", (message) => reject(new Error(`monitored item: ${message}`)));
    });

    let stopping = false;
    const stop = async () => {
        if (stopping) return;
        stopping = true;
        try {
            await subscription.terminate();
            await session.close();
            await client.disconnect();
        } finally {
            process.exit(0);
        }
    };
    process.on("SIGTERM", stop);
    process.on("SIGINT", stop);
    process.stdout.write("READY\n");
}

main().catch((err) => {
    process.stderr.write(`event_watch: ${err && err.stack ? err.stack : err}\n`);
    process.exit(1);
});
