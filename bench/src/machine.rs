//! The machine a benchmark ran on, for the record.

pub(crate) fn describe() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or_default().trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or_else(
            || "unknown memory".to_owned(),
            |kb| format!("{:.1} GiB", kb as f64 / 1024.0 / 1024.0),
        );
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZeroUsize::get);
    format!(
        "machine: {cores} cores ({cpu}), {memory}; {} {}; date {}",
        std::env::consts::OS,
        std::env::consts::ARCH,
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC")
    )
}

/// Percentile `p` (0–100) of sorted `values`.
pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// CPU time used so far, in seconds: by every `postgres` process of the machine, by the
/// Nexus processes (`nexus-api`, `nexus`, …), by `redis-server`, by this benchmark (the load
/// generator), and by the whole machine (all cores, not idle). Differences between two
/// readings are the work done in between, which varies far less from run to run than
/// latencies on a shared machine do.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct CpuReading {
    pub(crate) postgres: f64,
    pub(crate) nexus: f64,
    pub(crate) redis: f64,
    pub(crate) client: f64,
    pub(crate) machine: f64,
}

impl CpuReading {
    pub(crate) fn now() -> Self {
        // Clock ticks per second of /proc: 100 on every Linux this runs on (USER_HZ).
        const TICKS: f64 = 100.0;
        let own = std::process::id().to_string();
        let mut reading = Self::default();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // pid (comm) state ... utime stime are fields 14 and 15; comm may hold spaces.
            let Some((head, rest)) = stat.rsplit_once(')') else {
                continue;
            };
            let Some((pid, comm)) = head.split_once(" (") else {
                continue;
            };
            let role = match comm {
                "postgres" => &mut reading.postgres,
                "redis-server" => &mut reading.redis,
                _ if pid == own => &mut reading.client,
                _ if comm.starts_with("nexus") => &mut reading.nexus,
                _ => continue,
            };
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let ticks = |i: usize| {
                fields
                    .get(i)
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            #[allow(clippy::cast_precision_loss)]
            {
                *role += (ticks(11) + ticks(12)) as f64 / TICKS;
            }
        }
        let machine = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|stat| {
                let cpu = stat.lines().next()?.split_whitespace().skip(1);
                let values: Vec<u64> = cpu.filter_map(|v| v.parse().ok()).collect();
                // user nice system idle iowait irq softirq steal: busy is all but idle and iowait.
                let total: u64 = values.iter().take(8).sum();
                Some(total - values.get(3)? - values.get(4)?)
            })
            .unwrap_or(0);
        #[allow(clippy::cast_precision_loss)]
        {
            reading.machine = machine as f64 / TICKS;
        }
        reading
    }

    /// The CPU used from `earlier` to this reading.
    pub(crate) fn since(self, earlier: Self) -> Self {
        Self {
            postgres: self.postgres - earlier.postgres,
            nexus: self.nexus - earlier.nexus,
            redis: self.redis - earlier.redis,
            client: self.client - earlier.client,
            machine: self.machine - earlier.machine,
        }
    }
}
