//! OCI runtime: bundle to container lifecycle.
