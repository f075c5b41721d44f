"""The Global Discovery Server (OPC 10000-12): its address space, Directory, pull methods, TrustList files.

- `server.py`       the asyncua server; `settings.py` its [gds] settings
- `address_space.py` the GDS namespace as the GDS NodeSet defines it (types, Directory, CertificateGroups)
- `context.py`      what every method module gets (`GdsContext`)
- `directory.py`    Directory methods (register, find, query applications)
- `pull.py`         CertificateDirectory methods (signing and key-pair requests, trust lists, revocation)
- `trustlist_file.py` the CertificateGroups' TrustList file objects
- `application_record.py` ApplicationRecordDataType
- `client.py`       the client side of pull, for SCADA servers and engineering tools
"""
