"""The OPC UA side: Global Discovery Server and push certificate management (issues 3 and 4)."""
