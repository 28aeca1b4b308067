"""edgepbx reference portal: a test tool, not product code (see README.md here).

``make_pki`` creates the portal CA and server certificate; ``start`` runs the portal's three
listeners in threads; ``python -m tests.portal --data DIR`` runs it as a process.
"""

from .pki import PkiPaths, make_csr, make_pki, new_rsa_key
from .server import Portal, Running, main, start

__all__ = ["PkiPaths", "Portal", "Running", "main", "make_csr", "make_pki", "new_rsa_key",
           "start"]
