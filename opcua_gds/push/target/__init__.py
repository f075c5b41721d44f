"""Push certificate management, server side (OPC 10000-12 7.10), for any asyncua server.

`install_push_management(server, pki_dir=..., access=...)` binds ServerConfiguration and the
DefaultApplicationGroup TrustList methods, checks client certificates against the pushed trust list and
keeps everything in the server's PKI folder. See install.py.
"""

from opcua_gds.push.target.install import PushManagement, install_push_management

__all__ = ["PushManagement", "install_push_management"]
