//! Namespace tools: list, enter, unshare, and name Linux namespaces.
