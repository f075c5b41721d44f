"""CA key backends (encrypted files, PKCS#11) and key generation for leaf keys."""
