"""The otpki application shell: configuration, the CLI, the demo and the service runner."""
