"""The cloud link: the device identity (key, CSR, certificate) and the portal client.

See docs/portal-api.md for the contract with the portal and its privacy rules.
"""
