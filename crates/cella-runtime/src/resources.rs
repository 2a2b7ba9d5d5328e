//! The resources cella applies: the config's, plus the device rules every container
//! needs whatever the config says (runc's list), so `"devices": [{"allow": false}]`
//! still leaves /dev/null usable.

use crate::error::{Error, Result};
use oci_spec::runtime::{Linux, LinuxResources};
use serde_json::{Value, json};

/// (type, major, minor, access) allowed in every container.
const ALWAYS: [(&str, i64, i64, &str); 10] = [
    ("c", 1, 3, "rwm"),    // /dev/null
    ("c", 1, 5, "rwm"),    // /dev/zero
    ("c", 1, 7, "rwm"),    // /dev/full
    ("c", 1, 8, "rwm"),    // /dev/random
    ("c", 1, 9, "rwm"),    // /dev/urandom
    ("c", 5, 0, "rwm"),    // /dev/tty
    ("c", 5, 1, "rwm"),    // /dev/console
    ("c", 5, 2, "rwm"),    // /dev/ptmx
    ("c", 136, -1, "rwm"), // /dev/pts/*
    ("c", 10, 200, "rwm"), // /dev/net/tun
];

/// `linux.resources` with the default device rules appended, and an allow rule for
/// every device in `linux.devices`.
pub fn with_default_devices(linux: &Linux) -> Result<LinuxResources> {
    let mut res = serde_json::to_value(linux.resources().clone().unwrap_or_default())
        .expect("resources serialize");
    let mut rules: Vec<Value> = res["devices"].as_array().cloned().unwrap_or_default();
    for (t, major, minor, access) in ALWAYS {
        rules.push(
            json!({"allow": true, "type": t, "major": major, "minor": minor, "access": access}),
        );
    }
    for d in linux.devices().iter().flatten() {
        let v = serde_json::to_value(d).expect("device serializes");
        rules.push(json!({"allow": true, "type": v["type"], "major": v["major"], "minor": v["minor"], "access": "rwm"}));
    }
    res["devices"] = Value::Array(rules);
    serde_json::from_value(res).map_err(|e| Error::config("linux.resources.devices", e.to_string()))
}
