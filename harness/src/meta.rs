//! Provenance of a run: qdiff's version and commit, the host, and the start time.

/// qdiff's version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The commit qdiff was built from (`unknown` outside a git checkout).
pub const GIT_COMMIT: &str = env!("QDIFF_GIT_COMMIT");

/// The provenance block of a `results.json`: this build, this host, the start time and seed, and
/// the command line (`command`, or this process's arguments).
pub fn run_info(started_at: String, seed: u64, command: Option<String>) -> reports::RunInfo {
    reports::RunInfo {
        qdiff_version: VERSION.into(),
        git_commit: GIT_COMMIT.into(),
        started_at,
        host: host(),
        seed,
        shard: "1/1".into(),
        command: Some(command.unwrap_or_else(|| std::env::args().collect::<Vec<_>>().join(" "))),
    }
}

/// A device as results and case files record it.
pub fn device_entry(i: &devices::DeviceInfo) -> reports::DeviceEntry {
    reports::DeviceEntry {
        id: i.id.clone(),
        kind: i.kind.name().into(),
        name: i.name.clone(),
        driver: i.driver.clone(),
        features: i.features.clone(),
    }
}

/// The devices a command runs on when none is named: `cpu` and every GPU adapter (not `ref`:
/// it is what the others are measured against).
pub fn default_devices() -> Vec<String> {
    devices::list().devices.into_iter().filter(|d| d.id != "ref").map(|d| d.id).collect()
}

/// The host name (`unknown` when it cannot be read).
pub fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .unwrap_or_else(|| "unknown".into())
}

/// Now as RFC 3339 UTC (`2026-11-25T13:51:35Z`).
pub fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    rfc3339(secs)
}

/// Seconds since the Unix epoch as RFC 3339 UTC (Howard Hinnant's civil-from-days).
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_known_instants() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(super::rfc3339(1_795_614_695), "2026-11-25T13:51:35Z");
    }
}
