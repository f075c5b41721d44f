"""`otpki serve`: the parts the configuration enables, run and supervised in one asyncio service."""
