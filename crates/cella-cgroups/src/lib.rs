//! cgroups: v1, hybrid and v2 hierarchies; limits, stats, freezing and removal.
