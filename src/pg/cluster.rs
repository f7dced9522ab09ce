//! Cluster membership and target leases (next).
