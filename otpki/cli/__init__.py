"""The `otpki` command line."""
