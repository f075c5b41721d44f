#!/usr/bin/env node
// A node-opcua OPC UA server with push certificate management (OPC 10000-12 ServerConfiguration),
// used by otpki's interop tests as an independent peer for opcua_gds.push.client.
//
// Usage: node push_server.js --port <port> --pki <folder> [--host 127.0.0.1] [--app-uri <uri>]
//   (or PUSH_SERVER_PORT / PUSH_SERVER_PKI / PUSH_SERVER_APP_URI in the environment)
//
// PKI folder: node-opcua's OPCUACertificateManager layout (own/, trusted/certs, trusted/crl,
// issuers/certs, issuers/crl, rejected/). automaticallyAcceptUnknownCertificate is false, so the
// peer trusts exactly what is in that folder when it starts: the test fixture PRE-SEEDS the otpki
// client's certificate into trusted/certs and its CA chain (and CRLs) into issuers/ before launching
// this script. Nothing is accepted on first use. Unknown clients land in rejected/ (GetRejectedList).
//
// Users: "admin"/"admin-pw" has the SecurityAdmin role; "operator"/"operator-pw" has only Operator.
// Endpoints: Basic256Sha256 with Sign and SignAndEncrypt (Sign exists so that tests can check that
// push management refuses it with BadSecurityModeInsufficient); no None endpoint, no anonymous login.
//
// Prints "READY <port> <applicationUri>" on stdout once listening; exits cleanly on SIGTERM/SIGINT.
"use strict";
const path = require("path");
const {
    OPCUAServer, OPCUACertificateManager, SecurityPolicy, MessageSecurityMode, makeRoles, WellKnownRoles,
} = require("node-opcua");
const { installPushCertificateManagementOnServer } = require("node-opcua-server-configuration");

function arg(name, envName, fallback) {
    const i = process.argv.indexOf(`--${name}`);
    if (i >= 0 && i + 1 < process.argv.length) return process.argv[i + 1];
    return process.env[envName] || fallback;
}

const port = parseInt(arg("port", "PUSH_SERVER_PORT", "26543"), 10);
const host = arg("host", "PUSH_SERVER_HOST", "127.0.0.1");
const pki = path.resolve(arg("pki", "PUSH_SERVER_PKI", path.join(__dirname, "pki")));
const applicationUri = arg("app-uri", "PUSH_SERVER_APP_URI", "urn:otpki:interop:node-opcua-push-server");

const USERS = {
    admin: { password: "admin-pw", roles: makeRoles([WellKnownRoles.AuthenticatedUser, WellKnownRoles.SecurityAdmin]) },
    operator: { password: "operator-pw", roles: makeRoles([WellKnownRoles.AuthenticatedUser, WellKnownRoles.Operator]) },
};

const userManager = {
    isValidUser(userName, password) {
        const user = USERS[userName];
        return !!user && user.password === password;
    },
    getUserRoles(userName) {
        const user = USERS[userName];
        return user ? user.roles : makeRoles([WellKnownRoles.Anonymous]);
    },
};

async function main() {
    const serverCertificateManager = new OPCUACertificateManager({
        rootFolder: path.join(pki, "application"),
        automaticallyAcceptUnknownCertificate: false,
    });
    const userCertificateManager = new OPCUACertificateManager({
        rootFolder: path.join(pki, "user"),
        automaticallyAcceptUnknownCertificate: false,
    });
    await serverCertificateManager.initialize();
    await userCertificateManager.initialize();

    const server = new OPCUAServer({
        port,
        host,
        hostname: host,
        serverCertificateManager,
        userCertificateManager,
        securityPolicies: [SecurityPolicy.Basic256Sha256],
        securityModes: [MessageSecurityMode.Sign, MessageSecurityMode.SignAndEncrypt],
        allowAnonymous: false,
        disableDiscovery: false,
        userManager,
        serverInfo: {
            applicationUri,
            productUri: "urn:otpki:interop:node-opcua",
            applicationName: { text: "otpki node-opcua push peer", locale: "en" },
        },
    });
    await server.initialize();
    await installPushCertificateManagementOnServer(server);
    await server.start();

    let stopping = false;
    const stop = async (signal) => {
        if (stopping) return;
        stopping = true;
        process.stderr.write(`push_server: ${signal}, shutting down\n`);
        try {
            await server.shutdown(0);
        } finally {
            process.exit(0);
        }
    };
    process.on("SIGTERM", () => stop("SIGTERM"));
    process.on("SIGINT", () => stop("SIGINT"));

    process.stdout.write(`READY ${port} ${applicationUri}\n`);
}

main().catch((err) => {
    process.stderr.write(`push_server: failed to start: ${err && err.stack ? err.stack : err}\n`);
    process.exit(1);
});
